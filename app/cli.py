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
    from app import cli_keys, cli_serve

    cli_serve.register(cli)
    cli_keys.register(cli)
    try:
        from app.planner import cli as planner_cli
    except ImportError:  # pragma: no cover - during bootstrap only
        planner_cli = None
    if planner_cli is not None:
        planner_cli.register(cli)
    try:
        from cluster import cli as cluster_cli
    except ImportError:  # pragma: no cover
        cluster_cli = None
    if cluster_cli is not None:
        cluster_cli.register(cli)


def main() -> None:
    _register_subcommands()
    cli()


if __name__ == "__main__":
    main()
