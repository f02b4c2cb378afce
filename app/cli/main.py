"""The ``aipp`` command line. Sub-commands live next to the layer they drive and register here."""

from __future__ import annotations

import typer

cli = typer.Typer(
    name="aipp",
    help="AI Processing Platform: audio in, transcript and structured summary out.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_subcommands() -> None:
    # Each layer owns its commands; importing lazily keeps `aipp --help` fast.
    from app.cli import keys as cli_keys
    from app.cli import serve as cli_serve
    from app.planner import cli as planner_cli
    from cluster import cli as cluster_cli
    from pipelines import cli as batch_cli

    for module in (cli_serve, cli_keys, planner_cli, cluster_cli, batch_cli):
        module.register(cli)


def main() -> None:
    _register_subcommands()
    cli()


if __name__ == "__main__":
    main()
