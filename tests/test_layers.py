"""The shape of the code, held by tests: layers, packages, cycles and module size.

Layers: core ← storage/speech/llm/net ← tasks ← api/planner ← cli, with ``deployments/``
and ``pipelines/`` as layers of their own. An AST walk over every module of ``app/``,
``deployments/`` and ``pipelines/`` (imports inside functions included: a lazy import is
still a dependency) checks that imports point downward, that no import is relative, that
``app/`` holds only layer packages, that every folder of code is a package, that no two
modules import each other (directly or round a loop; a ``__main__`` block aside), and
that no module passes :data:`LIMIT` lines.

The ``KNOWN*`` lists hold what breaks a rule today, each to be fixed by its owner: a test
fails on a new entry, and on a listed one that is gone or has grown (so the lists only
shrink). Every checker takes the repository root, so the tests at the bottom plant each
kind of violation in a small tree under ``tmp_path`` and see it reported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import parse_file

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "deployments", "pipelines")
LIMIT = 600

# What each layer may import from the project (besides itself and the bare ``app``).
ALLOWED: dict[str, set[str]] = {"core": set()}
for _layer in ("storage", "speech", "llm", "net"):
    ALLOWED[_layer] = {"core"}
ALLOWED["privacy"] = {"core"}
ALLOWED["tasks"] = {"core", "storage", "speech", "llm", "net", "privacy"}
# The planner calibrates the real models; its HTTP face lives in app/api/routes_planner.py.
ALLOWED["planner"] = {"core", "speech", "llm"}
# The API reaches storage only through the task layer.
ALLOWED["api"] = {"core", "speech", "llm", "net", "privacy", "tasks", "planner"}
# The CLI is the top: it may start the Serve app and the batch pipeline too.
ALLOWED["cli"] = {*ALLOWED["tasks"], "tasks", "planner", "api", "deployments", "pipelines"}
ALLOWED["deployments"] = {"core", "speech", "llm", "tasks", "api"}
ALLOWED["pipelines"] = {"core", "storage", "speech", "llm", "net", "privacy", "tasks"}

#: (importing module, imported module) pairs that break the layering today, to be fixed.
KNOWN: set[tuple[str, str]] = set()

#: Sets of modules that import each other round a loop today, to be broken.
KNOWN_CYCLES: set[frozenset[str]] = set()

#: Modules over :data:`LIMIT` lines today -> their line count; they may shrink, not grow.
KNOWN_OVERSIZED: dict[str, int] = {}


# -- the walk ------------------------------------------------------------------------------


def modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages under ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_script_block(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` at the top of a module."""
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _import_nodes(path: Path, scripts: bool = True) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import of a file, those inside functions included (a lazy import counts).

    ``scripts=False`` leaves out the ``__main__`` block: it runs only when the file is the
    program, as a module of its own, so it can close no import loop.
    """
    tree = parse_file(path)
    skip: set[int] = set()
    if not scripts:
        for top in tree.body:
            if _is_script_block(top):
                skip.update(id(n) for n in ast.walk(top))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
            yield node


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The module a ``from ... import`` reads from, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(path: Path, module: str, known: dict[str, Path], scripts: bool = True) -> set[str]:
    """The project modules ``path`` imports.

    ``from pkg import name`` is an import of the module ``pkg.name`` when there is one, else
    of ``pkg`` itself (its ``__init__``, which holds ``name``). A name that is no module is
    cut back to its longest prefix that is one.
    """
    found: set[str] = set()

    def add(name: str) -> None:
        if name.split(".")[0] not in PACKAGES:
            return
        while name and name not in known and "." in name:
            name = name.rpartition(".")[0]
        found.add(name)

    for node in _import_nodes(path, scripts):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
            continue
        source = _absolute(node, module, path)
        for alias in node.names:
            full = f"{source}.{alias.name}"
            add(full if full in known else source)
    return found


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """The project modules one file imports."""
    known = modules(root)
    module = next((m for m, p in known.items() if p == path), path.stem)
    return _targets(path, module, known)


def graph(root: Path, scripts: bool = True) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``scripts``: see :func:`_import_nodes`)."""
    known = modules(root)
    return {m: _targets(p, m, known, scripts) - {m} for m, p in known.items()}


# -- the checkers --------------------------------------------------------------------------


def layer_of(module: str) -> str | None:
    """``app.<layer>...``, ``deployments`` or ``pipelines``; ``None`` for the bare ``app``."""
    parts = module.split(".")
    if parts[0] == "app":
        return parts[1] if len(parts) > 1 else None
    return parts[0]


def layering_violations(root: Path) -> set[tuple[str, str]]:
    found = set()
    for module, targets in graph(root).items():
        layer = layer_of(module)
        allowed = ALLOWED.get(layer, set()) if layer else set()
        for target in targets:
            other = layer_of(target)
            if other is None or other == layer or other in allowed:
                continue
            found.add((module, target))
    return found


def relative_imports(root: Path) -> set[tuple[str, str]]:
    """(module, the import as written) for every relative import: absolute names only."""
    found = set()
    for module, path in modules(root).items():
        for node in _import_nodes(path):
            if isinstance(node, ast.ImportFrom) and node.level:
                names = ", ".join(a.name for a in node.names)
                found.add((module, f"from {'.' * node.level}{node.module or ''} import {names}"))
    return found


def root_modules(root: Path) -> set[str]:
    """Modules lying loose in ``app/``: code there belongs to no layer."""
    return {p.name for p in (root / "app").glob("*.py") if p.name != "__init__.py"}


def folders_without_init(root: Path) -> set[str]:
    """Folders holding Python (at any depth) that are no package: a namespace by accident."""
    found = set()
    for package in PACKAGES:
        top = root / package
        for path in top.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            folder = path.parent
            while True:
                if not (folder / "__init__.py").exists():
                    found.add(folder.relative_to(root).as_posix())
                if folder == top:
                    break
                folder = folder.parent
    return found


def cycles(root: Path) -> set[frozenset[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    edges = graph(root, scripts=False)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


#: Where the size limit holds: every package, the cluster renderer, and our own scripts
#: (the console's modules), in Python and JavaScript alike.
SIZED = ("app", "deployments", "pipelines", "cluster")
SIZED_SUFFIXES = (".py", ".js")


def line_counts(root: Path) -> dict[str, int]:
    """Source files over :data:`LIMIT` lines -> their line count."""
    counts = {}
    for top in SIZED:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SIZED_SUFFIXES or "__pycache__" in path.parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > LIMIT:
                counts[path.relative_to(root).as_posix()] = lines
    return counts


def _pairs(pairs) -> str:
    return "\n".join(f"{a} -> {b}" for a, b in sorted(pairs))


# -- the tree as it is ---------------------------------------------------------------------


def test_every_layer_has_a_rule():
    layers = {p.name for p in (ROOT / "app").iterdir() if (p / "__init__.py").exists()}
    missing = (layers | {"deployments", "pipelines"}) - set(ALLOWED)
    assert not missing, f"add a rule for {sorted(missing)}"


def test_imports_point_downward():
    new = layering_violations(ROOT) - KNOWN
    assert not new, "imports against the layering:\n" + _pairs(new)


def test_known_violations_are_still_there():
    fixed = KNOWN - layering_violations(ROOT)
    assert not fixed, "fixed, remove from KNOWN:\n" + _pairs(fixed)


def test_no_relative_imports():
    found = relative_imports(ROOT)
    assert not found, "use absolute imports:\n" + _pairs(found)


def test_app_holds_only_layers():
    assert not root_modules(ROOT), "move into a layer: " + ", ".join(sorted(root_modules(ROOT)))


def test_every_folder_of_code_is_a_package():
    missing = folders_without_init(ROOT)
    assert not missing, "add __init__.py to: " + ", ".join(sorted(missing))


def test_no_new_import_cycles():
    found = cycles(ROOT)
    new = {c for c in found if c not in KNOWN_CYCLES}
    gone = KNOWN_CYCLES - found
    assert not new, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in new)
    assert not gone, "changed or gone, update KNOWN_CYCLES:\n" + "\n".join(
        " <-> ".join(sorted(c)) for c in gone
    )


def test_modules_stay_under_the_size_limit():
    counts = line_counts(ROOT)
    new = {p: n for p, n in counts.items() if p not in KNOWN_OVERSIZED}
    grown = {p: n for p, n in counts.items() if n > KNOWN_OVERSIZED.get(p, n)}
    fixed = sorted(set(KNOWN_OVERSIZED) - set(counts))
    assert not new, f"over {LIMIT} lines, split them: {new}"
    assert not grown, f"grew past their KNOWN_OVERSIZED count: {grown}"
    assert not fixed, f"under {LIMIT} lines now, remove from KNOWN_OVERSIZED: {fixed}"


# -- each rule sees its violation ----------------------------------------------------------

_CLEAN = {
    "app/__init__.py": '__version__ = "0"\n',
    "app/core/__init__.py": "",
    "app/core/settings.py": "X = 1\n",
    "app/storage/__init__.py": "",
    "app/storage/redis/__init__.py": "from app.core.settings import X\n",
    "app/llm/__init__.py": "",
    "app/tasks/__init__.py": "",
    "app/tasks/door.py": "import app.storage.redis\nfrom app import __version__\n",
    "app/planner/__init__.py": "from app.planner.plan import plan\n",
    "app/planner/plan.py": "from app.planner import catalog\ndef plan(): ...\n",
    "app/planner/catalog.py": "from app.core import settings\n",
    "app/planner/static/page.js": "",
    "app/api/__init__.py": "",
    "app/api/errors.py": "",
    "app/api/routes.py": "from app.planner import plan\nfrom app.tasks.door import *\n",
    "app/cli/__init__.py": "",
    "app/cli/main.py": "def main():\n    import app.api.routes\n    from pipelines import run\n",
    "deployments/__init__.py": "",
    "deployments/ingress.py": "from app.api.routes import *\nfrom app.tasks import door\n",
    "pipelines/__init__.py": "",
    "pipelines/run.py": "from app.storage.redis import X\n",
}


def _tree(root: Path) -> Path:
    for name, text in _CLEAN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _plant(root: Path, path: str, text: str) -> Path:
    _tree(root)
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    return root


def test_the_clean_tree_passes(tmp_path):
    root = _tree(tmp_path)
    assert layering_violations(root) == set()
    assert relative_imports(root) == set()
    assert root_modules(root) == set()
    assert folders_without_init(root) == set()
    assert cycles(root) == set()
    assert line_counts(root) == {}
    # ``from app.planner import plan`` reads app/planner/plan.py, not the package.
    assert graph(root)["app.api.routes"] == {"app.planner.plan", "app.tasks.door"}


def test_a_root_module_is_seen(tmp_path):
    assert root_modules(_plant(tmp_path, "app/x.py", "")) == {"x.py"}


def test_a_climbing_relative_import_is_seen(tmp_path):
    root = _plant(tmp_path, "app/api/routes.py", "from ..storage import redis\n")
    assert relative_imports(root) == {("app.api.routes", "from ..storage import redis")}
    # resolved, it is still an edge (and here a backward one)
    assert ("app.api.routes", "app.storage.redis") in layering_violations(root)


def test_a_sibling_relative_import_is_seen(tmp_path):
    root = _plant(tmp_path, "app/api/routes.py", "def f():\n    from . import errors\n")
    assert relative_imports(root) == {("app.api.routes", "from . import errors")}


def test_a_folder_without_init_is_seen(tmp_path):
    root = _plant(tmp_path, "app/tasks/helpers/one.py", "")
    assert folders_without_init(root) == {"app/tasks/helpers"}
    root = _plant(tmp_path / "deep", "pipelines/a/b/c.py", "")
    (root / "pipelines/a/b/__init__.py").write_text("")
    assert folders_without_init(root) == {"pipelines/a"}


def test_an_import_cycle_is_seen(tmp_path):
    root = _plant(tmp_path, "app/core/logs.py", "def f():\n    import app.core.metrics\n")
    (root / "app/core/metrics.py").write_text("from app.core.logs import f\n")
    assert cycles(root) == {frozenset({"app.core.logs", "app.core.metrics"})}


def test_a_cycle_through_a_package_init_is_seen(tmp_path):
    # app.planner/__init__ imports plan; plan importing a name the __init__ holds closes it.
    root = _plant(tmp_path, "app/planner/catalog.py", "from app.planner import plan\n")
    (root / "app/planner/plan.py").write_text("from app.planner import catalog, PRESETS\n")
    assert cycles(root) == {frozenset({"app.planner", "app.planner.plan", "app.planner.catalog"})}


def test_a_main_block_closes_no_cycle(tmp_path):
    # ``python -m pipelines.run`` calls the CLI, which imports pipelines.run lazily.
    root = _plant(tmp_path, "pipelines/cli.py", "def main():\n    import pipelines.run\n")
    (root / "pipelines/run.py").write_text(
        'if __name__ == "__main__":\n    from pipelines.cli import main\n\n    main()\n'
    )
    assert cycles(root) == set()
    assert graph(root)["pipelines.run"] == {"pipelines.cli"}  # still an import


def test_an_oversized_module_is_seen(tmp_path):
    root = _plant(tmp_path, "app/llm/big.py", "x = 1\n" * (LIMIT + 1))
    (root / "app/llm/fits.py").write_text("x = 1\n" * LIMIT)
    (root / "app/api/static").mkdir(parents=True)
    (root / "app/api/static/page.js").write_text("let x = 1;\n" * (LIMIT + 2))
    (root / "cluster").mkdir()
    (root / "cluster/render.py").write_text("x = 1\n" * (LIMIT + 3))
    assert line_counts(root) == {
        "app/llm/big.py": LIMIT + 1,
        "app/api/static/page.js": LIMIT + 2,
        "cluster/render.py": LIMIT + 3,
    }


def test_backward_imports_are_seen(tmp_path):
    cases = {
        "app/planner/plan.py": ("from app.api.errors import APIError\n", "app.api.errors"),
        "app/api/routes.py": ("from app.storage import redis\n", "app.storage.redis"),
        "deployments/ingress.py": ("import app.storage.redis\n", "app.storage.redis"),
        "deployments/app.py": ("from app.cli.main import main\n", "app.cli.main"),
        "pipelines/run.py": ("from deployments import ingress\n", "deployments.ingress"),
        "app/core/settings.py": ("from app import llm\n", "app.llm"),
        "app/storage/redis/__init__.py": ("from app.tasks.door import x\n", "app.tasks.door"),
    }
    for n, (path, (text, target)) in enumerate(cases.items()):
        root = _plant(tmp_path / str(n), path, text)
        module = ".".join(Path(path).with_suffix("").parts).removesuffix(".__init__")
        assert layering_violations(root) == {(module, target)}, path


def test_the_walk_sees_lazy_imports(tmp_path):
    root = _tree(tmp_path)
    module = root / "app/cli/lazy.py"
    module.write_text(
        "def f():\n    from app.api.errors import APIError\n"
        "    if True:\n        import app.cli.main\n"
    )
    assert imports(module, root) == {"app.api.errors", "app.cli.main"}
