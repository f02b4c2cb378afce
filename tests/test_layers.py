"""Imports point downward: core ← storage/speech/llm/net ← tasks ← api/planner ← cli.

An AST walk over every module of ``app/`` (imports inside functions included: a lazy
import is still a dependency). ``KNOWN`` lists the violations still in the tree, each to
be fixed by its owner; the test fails on a new one, and on a listed one that is gone (so
the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# What each layer may import from app (besides itself and the bare ``app`` package).
LOWER = {"core": set()}
for _layer in ("storage", "speech", "llm", "net"):
    LOWER[_layer] = {"core"}
LOWER["tasks"] = {"core", "storage", "speech", "llm", "net"}
LOWER["api"] = LOWER["tasks"] | {"tasks", "planner"}
# The planner calibrates the real models and serves a router with the API's error shape.
LOWER["planner"] = {"core", "speech", "llm", "api"}
LOWER["cli"] = LOWER["api"] | {"api"}

#: (importing module, imported module) pairs that break the rule today, to be fixed.
KNOWN: set[tuple[str, str]] = set()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from app import x`` names a module when x is one.
            if node.module == "app":
                found.update(f"app.{alias.name}" for alias in node.names)
    return {name for name in found if name == "app" or name.startswith("app.")}


def _module(path: Path) -> str:
    rel = path.relative_to(APP.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(APP.rglob("*.py")):
        module = _module(path)
        parts = module.split(".")
        if len(parts) < 2:
            continue
        layer = parts[1]
        allowed = LOWER.get(layer)
        if allowed is None:
            continue
        for imported in _imports(path):
            target = imported.split(".")
            if len(target) < 2 or target[1] == layer or target[1] == "__version__":
                continue
            if target[1] not in LOWER:
                continue  # app.__init__ attributes and the like
            if target[1] not in allowed:
                found.add((module, imported))
    return found


def test_every_layer_has_a_rule():
    layers = {p.name for p in APP.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers <= set(LOWER), f"add a rule for {sorted(layers - set(LOWER))}"


def test_imports_point_downward():
    found = violations()
    new = sorted(found - KNOWN)
    assert not new, "imports against the layering:\n" + "\n".join(f"{a} -> {b}" for a, b in new)


def test_known_violations_are_still_there():
    fixed = sorted(KNOWN - violations())
    assert not fixed, "fixed, remove from KNOWN:\n" + "\n".join(f"{a} -> {b}" for a, b in fixed)


def test_the_walk_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from app.api.errors import APIError\n    import app.cli.main\n"
    )
    assert _imports(module) == {"app.api.errors", "app.cli.main"}
