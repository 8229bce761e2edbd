"""The modules of ippo_cli/ form layers (docs/design.md, "Modules as layers"): a module
imports only modules of its own layer or of the layers below it, and no two modules import
each other, directly or round a loop.

Every import counts, at module level or inside a function (a lazy import still ties the
two modules together). Imports under ``if TYPE_CHECKING:`` never run: they must respect
the layers, but may point back at a module of their own layer (``IPPO`` in an annotation
of the module ``ippo.py`` itself imports)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ippo_cli", "hydra_plugins/ippo_stacked_launcher")

# Top to bottom. A name covers the module and, for a package, every module inside it;
# "ippo_cli" is only the package's __init__ (the public API).
LAYERS = {
    "CLI and config": [
        "ippo_cli",
        "ippo_cli.__main__",
        "ippo_cli.cli",
        "ippo_cli.config",
        "ippo_cli.launchers",
        "hydra_plugins.ippo_stacked_launcher",
    ],
    "loops": [
        "ippo_cli.trainer",
        "ippo_cli.run_stack",
        "ippo_cli.stacking",
        "ippo_cli.sweep",
        "ippo_cli.evaluate",
        "ippo_cli.crossplay",
        "ippo_cli.evolution",
    ],
    "algorithm": [
        "ippo_cli.ippo",
        "ippo_cli.episodes",
        "ippo_cli.rollout",
        "ippo_cli.losses",
        "ippo_cli.masks",
        "ippo_cli.groups",
        "ippo_cli.biases",
        "ippo_cli.stacked_update",
        "ippo_cli.stacked_acting",
        "ippo_cli.compiled",
    ],
    "networks": ["ippo_cli.networks"],
    "envs": ["ippo_cli.envs", "ippo_cli.spaces"],
    "records and utilities": [
        "ippo_cli.checkpoint",
        "ippo_cli.files",
        "ippo_cli.plots",
        "ippo_cli.loggers",
        "ippo_cli.paths",
        "ippo_cli.run_control",
        "ippo_cli.cores",
        "ippo_cli.distributed",
    ],
}
RANK = {layer: len(LAYERS) - i for i, layer in enumerate(LAYERS)}  # higher = nearer the user


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of PACKAGES."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def layer_of(module: str) -> str | None:
    for layer, names in LAYERS.items():
        for name in names:
            if module == name or (name != "ippo_cli" and module.startswith(name + ".")):
                return layer
    return None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module of ours, line, only for type checking) for every import statement
    of ``module``, wherever it stands in the file."""
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = typing_only or _is_type_checking(child)
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - (child.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                # "from pkg import name" imports the module pkg.name when there is one
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in child.names
                ]
            else:
                visit(child, guarded)
                continue
            for target in targets:
                # "import a.b.c" imports the deepest module of ours it names
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    found.append((target, child.lineno, guarded))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def import_graph() -> dict[str, list[tuple[str, int, bool]]]:
    files = module_files()
    return {m: imports(m, p, set(files)) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import loops of ``edges``: strongly connected components of two or more
    modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None]
    assert not unplaced, f"add these modules to LAYERS in {__file__}: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} ({layer_of(module)}) line {line} imports {target} ({layer_of(target)})"
        for module, found in import_graph().items()
        for target, line, _ in found
        if layer_of(module)
        and layer_of(target)  # unplaced: the test above says so
        and RANK[layer_of(target)] > RANK[layer_of(module)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    runtime = {
        module: {target for target, _, typing_only in found if not typing_only}
        for module, found in import_graph().items()
    }
    loops = cycles(runtime)
    assert not loops, f"modules that import each other: {loops}"


def test_cycle_finder_sees_loops_and_only_loops():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
