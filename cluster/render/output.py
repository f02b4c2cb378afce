"""Rendering a phase to files, writing them and checking a rendering for drift."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.render.common import (
    GENERATED_MARK,
    PHASES,
    RENDERED_DIR,
    RenderError,
    dump_yaml,
)
from cluster.render.drain import check_drain
from cluster.render.raycluster import raycluster_phase1, raycluster_phase2
from cluster.render.rayjob import rayjob_batch
from cluster.render.rayservice import _sources, rayservice_phase3
from cluster.render.serve_config import build_serve_config
from cluster.render.validate import validate_manifest
from cluster.render.values import resolve_values


def _header(phase: int, values_name: str | None, what: str) -> str:
    return (
        f"{GENERATED_MARK} --phase {phase}` {_sources(phase, values_name)}.\n"
        f"# {what}\n"
        "# Do not edit: change the sources and render again (docs/operations.md).\n"
    )


def render_manifests(
    phase: int,
    values: Mapping | None = None,
    *,
    values_name: str | None = None,
    root: Path | str | None = None,
) -> dict[str, str]:
    """``{file name: text}`` for a phase, every manifest validated. Pure: writes nothing.

    ``values`` are overrides merged over cluster/values.yaml (None: the defaults);
    ``values_name`` only names the values file in the generated headers.
    """
    if phase not in PHASES:
        raise RenderError(f"phase must be one of 1, 2, 3 (got {phase!r})")
    vals = resolve_values(values)
    serve_cfg = build_serve_config(phase, vals, root=root)
    drain_problems = check_drain(phase, serve_cfg, vals)
    if drain_problems:
        raise RenderError("invalid values:\n  " + "\n  ".join(drain_problems))
    docs: dict[str, tuple[str, Any]] = {}
    if phase == 1:
        docs["raycluster.yaml"] = (
            "RayCluster, head only (CPU). Deploy the app with `serve deploy serve_config.yaml`.",
            raycluster_phase1(vals),
        )
    elif phase == 2:
        docs["raycluster.yaml"] = (
            "RayCluster: head (Ingress) + on-demand GPU group (Transcriber + Summarizer).",
            raycluster_phase2(vals),
        )
    else:
        docs["rayservice.yaml"] = (
            "RayService: head (num-cpus 0), CPU group, on-demand + spot GPU groups.",
            rayservice_phase3(vals, serve_cfg),
        )
        docs["rayjob-batch.yaml"] = (
            "RayJob: the batch pipeline (pipelines.batch_summarize) on its own cluster.",
            rayjob_batch(vals, root=root),
        )
    problems = []
    for fname, (_, doc) in docs.items():
        problems.extend(f"{fname}: {p}" for p in validate_manifest(doc))
    if problems:
        raise RenderError(f"phase {phase} manifests are invalid:\n  " + "\n  ".join(problems))
    out = {
        fname: _header(phase, values_name, what) + dump_yaml(doc)
        for fname, (what, doc) in docs.items()
    }
    if phase in (1, 2):
        out["serve_config.yaml"] = (
            _header(phase, values_name, "Serve config for this phase's RayCluster:")
            + "#   serve deploy serve_config.yaml --address http://<head>:8265\n"
            + dump_yaml(serve_cfg)
        )
    return out


def _write(out_dir: Path, files: Mapping[str, str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        path = out_dir / fname
        path.write_text(text, encoding="utf-8")
        written.append(path)
    # Remove files an earlier rendering wrote that this one no longer does.
    for stale in sorted(out_dir.glob("*.yaml")):
        if stale.name not in files and _is_generated(stale):
            stale.unlink()
    return written


def _is_generated(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            return fh.readline().startswith(GENERATED_MARK)
    except OSError:
        return False


def render(
    phase: int,
    values: Mapping | None = None,
    out_dir: Path | str = ".",
    *,
    values_name: str | None = None,
    root: Path | str | None = None,
) -> list[Path]:
    """Render one phase into ``out_dir``; returns the files written."""
    files = render_manifests(phase, values, values_name=values_name, root=root)
    return _write(Path(out_dir), files)


def render_all(
    values: Mapping | None = None,
    out_dir: Path | str = RENDERED_DIR,
    *,
    values_name: str | None = None,
    root: Path | str | None = None,
) -> list[Path]:
    """Render every phase into ``out_dir/phase1`` .. ``out_dir/phase3``."""
    written = []
    for phase in PHASES:
        written += render(
            phase, values, Path(out_dir) / f"phase{phase}", values_name=values_name, root=root
        )
    return written


def check_rendered(
    out_dir: Path | str = RENDERED_DIR,
    values: Mapping | None = None,
    *,
    phases: tuple[int, ...] = PHASES,
    nested: bool = True,
    values_name: str | None = None,
) -> list[str]:
    """Differences between ``out_dir`` and a fresh rendering (empty: no drift)."""
    drift = []
    for phase in phases:
        target = Path(out_dir) / f"phase{phase}" if nested else Path(out_dir)
        fresh = render_manifests(phase, values, values_name=values_name)
        present = {p.name for p in target.glob("*.yaml")} if target.is_dir() else set()
        for fname, text in fresh.items():
            path = target / fname
            if not path.is_file():
                drift.append(f"{path}: missing")
            elif path.read_text(encoding="utf-8") != text:
                drift.append(f"{path}: differs from a fresh render")
        for extra in sorted(present - set(fresh)):
            drift.append(f"{target / extra}: not produced by the renderer")
    return drift


def iter_manifests(path: Path | str) -> Iterator[Any]:
    """Every YAML document in a file (rendered manifests hold one each)."""
    text = Path(path).read_text(encoding="utf-8")
    yield from (d for d in yaml.safe_load_all(text) if d is not None)
