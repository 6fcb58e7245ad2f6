"""The layer rules of docs/architecture.md, checked on every module's imports (parsed with ``ast``).

Every ``import``/``from … import`` of a kikimimi module counts, including those inside functions. The test
fails on an import that breaks the layer table, on any import cycle, on a command importing another
command or ``cli``, on a library module importing the user-facing face (``kikimimi``, ``api``,
``clap_api``, ``hear``) or a command, and on a kikimimi import inside a function of a library module
(imports inside functions are for optional extras and for ``commands/``, which keeps ``--help`` fast), on a
module outside ``commands/`` and ``apps/`` importing ``apps/``, and on ``importlib.import_module`` /
``importlib.util.find_spec`` / ``__import__`` naming a kikimimi module (such an import is invisible to this scan;
only ``cli.py``'s command table loads its command modules that way).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "kikimimi"

#: Top-level modules that form the foundation of every layer.
FOUNDATION = ("fileio", "optim", "device")
#: The user-facing face: the package itself, ``python -m kikimimi`` and the documented re-exports.
FACE = ("", "__main__", "api", "clap_api", "hear")

#: layer → the layers it may import (besides itself). Mirrors the table in docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "models": set(),
    "audio": {"foundation"},
    "features": {"foundation", "audio"},
    "checkpoints": {"foundation", "models", "features"},
    "data": {"foundation", "audio", "features", "models"},
    "methods": {"foundation", "models", "features", "checkpoints"},
    "training": {"foundation", "models", "audio", "features", "checkpoints", "data", "methods",
                 "inference"},  # the captioner's run embeds its clips with a frozen AudioEncoder, writes its folder
    "inference": {"foundation", "models", "audio", "features", "checkpoints"},
    "evaluation": {"foundation", "models", "audio", "features", "checkpoints", "data", "inference"},
    "apps": {"foundation", "models", "audio", "features", "checkpoints", "data", "inference", "evaluation",
             "training"},  # the first run pre-trains and trains its captioner
    "face": {"foundation", "models", "audio", "features", "checkpoints", "data", "inference", "cli"},
    "cli": {"face", "commands"},
    "commands": {"foundation", "models", "audio", "features", "checkpoints", "data", "methods", "training",
                 "inference", "evaluation", "apps", "face"},
}  # fmt: skip
LIBRARY_LAYERS = set(ALLOWED) - {"face", "cli", "commands"}


@dataclass(frozen=True)
class Import:
    """One import statement: the importing module, the imported kikimimi module, where it stands."""

    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def layer_of(module: str) -> str:
    """``kikimimi.features.frontend`` → ``features``; ``kikimimi.fileio`` → ``foundation``."""
    rest = module.split(".")[1:]
    head = rest[0] if rest else ""
    if head in FOUNDATION:
        return "foundation"
    if head in FACE and len(rest) <= 1:
        return "face"
    if head == "cli":
        return "cli"
    if head not in ALLOWED:
        raise AssertionError(f"{module}: not in any layer of the table; add its folder to ALLOWED")
    return head


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """kikimimi imports of one module; ``from pkg import sub`` resolves to the submodule ``pkg.sub``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append(Import(module, target, node.lineno, id(node) in in_function))
    return list(dict.fromkeys(found))  # `from m import a, b` is one import of m


def _is_version_import(imp: Import, path: Path) -> bool:
    """``from kikimimi import __version__`` reads a constant, not the face's API."""
    if imp.target != PACKAGE:
        return False
    line = path.read_text(encoding="utf-8").splitlines()[imp.line - 1]
    return line.strip() == "from kikimimi import __version__"


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    modules = all_modules()
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return modules, edges


def test_the_scan_sees_the_whole_package(graph):
    modules, edges = graph
    layers = {layer_of(m) for m in modules}
    assert {"foundation", "audio", "features", "models", "checkpoints", "data", "methods", "training",
            "inference", "evaluation", "apps", "commands", "cli", "face"} <= layers  # fmt: skip
    assert len(edges) > 100
    assert any(e.in_function for e in edges if layer_of(e.source) == "commands")


def test_every_import_follows_the_layer_table(graph):
    modules, edges = graph
    broken = []
    for imp in edges:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src == dst or dst in ALLOWED[src] or _is_version_import(imp, modules[imp.source]):
            continue
        broken.append(f"{imp.source}:{imp.line} ({src}) imports {imp.target} ({dst})")
    assert not broken, "imports that break the layer table:\n" + "\n".join(broken)


def test_no_command_imports_another_command_or_cli(graph):
    _, edges = graph
    def shared(target: str) -> bool:  # commands/_options.py, _exit.py…: helpers of every command, not commands
        return target == f"{PACKAGE}.commands" or target.rsplit(".", 1)[-1].startswith("_")

    bad = [f"{e.source}:{e.line} imports {e.target}" for e in edges
           if layer_of(e.source) == "commands" and e.source != f"{PACKAGE}.commands"
           and ((layer_of(e.target) == "commands" and not shared(e.target))
                or layer_of(e.target) == "cli")]  # fmt: skip
    assert not bad, "\n".join(bad)


def test_library_imports_kikimimi_at_the_top(graph):
    modules, edges = graph
    inner = [f"{e.source}:{e.line} imports {e.target} inside a function" for e in edges
             if e.in_function and layer_of(e.source) in LIBRARY_LAYERS
             and not _is_version_import(e, modules[e.source])]  # fmt: skip
    assert not inner, "\n".join(inner)


def test_there_is_no_import_cycle(graph):
    modules, edges = graph
    succ: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.target in succ and e.target != e.source:
            succ[e.source].add(e.target)
    # A package's __init__ re-exporting its submodules is not a cycle with them: a submodule importing a
    # sibling through ``from pkg.sibling import x`` names the sibling, so only real circles remain.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_only_commands_and_apps_import_apps(graph):
    """``apps/`` orchestrates the library; no library layer (nor the face) builds on it."""
    _, edges = graph
    bad = [f"{e.source}:{e.line} imports {e.target}" for e in edges
           if layer_of(e.target) == "apps" and layer_of(e.source) not in ("apps", "commands")]
    assert not bad, "\n".join(bad)


#: calls that import a module by name at run time (invisible to the import scan above)
DYNAMIC_IMPORTS = ("import_module", "find_spec", "__import__")
#: the one place allowed to name kikimimi modules that way: cli.py's command table (``kikimimi.commands.<name>``)
DYNAMIC_KIKIMIMI_ALLOWED = {(f"{PACKAGE}.cli", "_load_command")}
#: functions that import an optional extra whose name they receive (the callers pass third-party names)
DYNAMIC_WRAPPERS = {(f"{PACKAGE}.evaluation.extras", "require"), (f"{PACKAGE}.models.text_loading", "_require"),
                    (f"{PACKAGE}.inference.onnx_runtime", "_require")}


def dynamic_imports(module: str, path: Path) -> list[tuple[int, str, str | None, str]]:
    """``(line, enclosing function, the module name's leading literal text or None, call name)`` of each
    run-time import call of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                f = child.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in DYNAMIC_IMPORTS and child.args:
                    arg = child.args[0]
                    text = None
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        text = arg.value
                    elif isinstance(arg, ast.JoinedStr):
                        text = "".join(v.value for v in arg.values if isinstance(v, ast.Constant)) or None
                    found.append((child.lineno, func, text, name))
            visit(child, inner)

    visit(tree, "")
    return found


def names_kikimimi(text: str | None) -> bool:
    return text is not None and (text.startswith(".") or text == PACKAGE or text.startswith(PACKAGE + "."))


def test_no_run_time_import_of_kikimimi_modules():
    bad = []
    for module, path in all_modules().items():
        for line, func, text, call in dynamic_imports(module, path):
            if (module, func) in DYNAMIC_KIKIMIMI_ALLOWED:
                continue
            if names_kikimimi(text):
                bad.append(f"{module}:{line} {call}({text!r}): import it with an import statement")
            elif text is None and (module, func) not in DYNAMIC_WRAPPERS:
                bad.append(f"{module}:{line} {call}() of a computed name in {func or 'the module body'}: name the "
                           "module literally, or add the function to DYNAMIC_WRAPPERS if it loads optional extras")
    assert not bad, "\n".join(bad)


def test_the_run_time_import_check_sees_them(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import importlib\nimport importlib.util\n\ndef stage():\n"
                    "    importlib.util.find_spec('kikimimi.apps.x')\n"
                    "    return importlib.import_module(f'kikimimi.{1}')\n"
                    "\nimportlib.import_module('numpy')\n__import__(name)\n")
    found = dynamic_imports("kikimimi.apps.m", path)
    assert [(line, func, names_kikimimi(text)) for line, func, text, _ in found] == [
        (5, "stage", True), (6, "stage", True), (8, "", False), (9, "", False)]


def test_the_checker_catches_what_it_should(tmp_path):
    """The parser sees imports inside functions and relative imports (so a break cannot hide there)."""
    pkg = tmp_path / "src" / PACKAGE / "methods"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    path = pkg / "bad.py"
    path.write_text("from . import sibling\n\ndef f():\n    from kikimimi.training.trainer import Trainer\n")
    mods = {f"{PACKAGE}.methods": pkg / "__init__.py", f"{PACKAGE}.methods.sibling": pkg / "sibling.py"}
    global SRC
    saved, SRC = SRC, tmp_path / "src"
    try:
        found = imports_of(f"{PACKAGE}.methods.bad", path, mods)
    finally:
        SRC = saved
    assert [(i.target, i.in_function) for i in found] == [
        (f"{PACKAGE}.methods.sibling", False), (f"{PACKAGE}.training.trainer", True)]
    assert "training" not in ALLOWED[layer_of(found[0].source)]
