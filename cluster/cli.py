"""``aipp cluster``: render (and check) the KubeRay manifests of the three phases."""

from __future__ import annotations

from pathlib import Path

import typer

PHASE_CHOICES = ("1", "2", "3", "all")

cluster_app = typer.Typer(
    name="cluster",
    help="KubeRay manifests for the three deployment phases, rendered from serve_config.yaml.",
    no_args_is_help=True,
    add_completion=False,
)


def _parse_phase(value: str) -> str:
    value = str(value).strip().lower()
    if value not in PHASE_CHOICES:
        raise typer.BadParameter(
            f"{value!r} is not a phase; use 1 (CPU head), 2 (head + GPU group), "
            "3 (RayService + RayJob) or all",
            param_hint="'--phase'",
        )
    return value


@cluster_app.command("render")
def render_command(
    phase: str = typer.Option(
        ...,
        "--phase",
        "-p",
        help="1 (CPU head), 2 (head + one GPU group), 3 (RayService + batch RayJob), "
        "or all (writes OUT/phase1 .. OUT/phase3).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Directory to write the manifests to.", file_okay=False
    ),
    values: Path | None = typer.Option(
        None,
        "--values",
        "-f",
        help="YAML merged over cluster/values.yaml; also takes the planner's "
        "`aipp plan --emit serve-overrides` output.",
        dir_okay=False,
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Write nothing; exit 1 if OUT differs from a fresh rendering (drift).",
    ),
) -> None:
    """Render Kubernetes manifests for a phase from serve_config.yaml and values.

    Every manifest is validated against the KubeRay v1.7.0 CRDs in cluster/crds and
    the Serve config against Ray Serve's schema before anything is written.
    """
    from cluster import render as r

    chosen = _parse_phase(phase)
    try:
        overrides = r.read_values_file(values) if values is not None else None
    except r.RenderError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--values'") from None
    values_name = values.name if values is not None else None
    phases = r.PHASES if chosen == "all" else (int(chosen),)
    try:
        if check:
            drift = r.check_rendered(
                out, overrides, phases=phases, nested=chosen == "all", values_name=values_name
            )
            if drift:
                for line in drift:
                    typer.echo(f"drift: {line}", err=True)
                typer.echo(
                    "Rendered manifests are stale: run `aipp cluster render` again.", err=True
                )
                raise typer.Exit(1)
            typer.echo(f"{out}: up to date")
            return
        written = []
        for p in phases:
            target = out / f"phase{p}" if chosen == "all" else out
            written += r.render(p, overrides, target, values_name=values_name)
    except r.RenderError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))


def register(cli: typer.Typer) -> None:
    """Add the ``cluster`` sub-app to the root ``aipp`` command."""
    cli.add_typer(cluster_app, name="cluster")
