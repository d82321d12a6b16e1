"""The layers of ARCHITECTURE.md, checked: no import cycles among the project's own modules
(imports inside functions count: they still tie two modules), no module importing a layer above
its own, no project import hidden inside a function, and no function too long or too branchy to
read in one go (radon's cyclomatic complexity)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("facecore", "gallery", "recognizer", "web")

# The layers, lowest first: a module may import its own layer and those below it. The longest
# matching prefix decides a module's layer (see ARCHITECTURE.md for what each layer is for).
LAYERS = {
    "facecore": 0,
    "gallery": 1,
    "recognizer.image": 2, "recognizer.cache": 2, "recognizer.detection": 2, "recognizer.embedding": 2,
    "recognizer.onnx_session": 2, "recognizer.chips": 2, "recognizer.chip_format": 2, "recognizer.fpir": 2,
    "recognizer.threshold": 2, "recognizer.combine": 2, "recognizer.decision": 2, "recognizer.sample_data": 2,
    "recognizer.drawing": 2, "recognizer.results": 2, "recognizer.network": 2, "recognizer.quality": 2,
    "recognizer.modeldir": 3,
    "recognizer.pipeline": 4, "recognizer.view": 4, "recognizer.enrolment": 4, "recognizer.video": 4,
    "recognizer.recognizer": 5,
    "recognizer.training": 6, "recognizer.evaluation": 6, "recognizer.clustering": 6, "recognizer.bulk": 6,
    "recognizer.archive": 6, "recognizer.annotate": 6, "recognizer.faces": 6, "recognizer.lifecycle": 6,
    "recognizer": 7, "recognizer._api": 7, "recognizer.cli": 7, "web": 7,
}
MAX_LINES = 80
MAX_COMPLEXITY = 20


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files() -> dict[str, Path]:
    return {_module(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"


def _imports(tree: ast.AST, here: str, is_pkg: bool, known: set[str]):
    """(module imported, line, inside a function) for each of the project's own imports."""
    def walk(node, in_func):
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            inside = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = here.split(".") if is_pkg else here.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - child.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names]
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != here:
                    yield name, child.lineno, in_func
            yield from walk(child, inside)

    yield from walk(tree, False)


def _graph():
    files = _files()
    known = set(files)
    edges = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges[mod] = list(_imports(tree, mod, path.name == "__init__.py", known))
    return files, edges


def _layer(mod: str) -> int:
    best = max((p for p in LAYERS if mod == p or mod.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{mod}: in no layer of tests/test_architecture.py (add it, and to ARCHITECTURE.md)"
    return LAYERS[best]


def test_no_import_cycles():
    _, edges = _graph()
    graph = {m: {t for t, _, _ in e} for m, e in edges.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert cycles == []


def test_no_module_imports_a_layer_above_its_own():
    files, edges = _graph()
    wrong = [f"{files[m]}:{line} {m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
             for m, e in edges.items() for t, line, _ in e if _layer(t) > _layer(m)]
    assert wrong == []


# The one exception: `serve` loads the server (web/, which is FastAPI, Starlette and uvicorn) only
# when it serves, so that `serve.py --help` stays as quick as the other commands'.
LAZY_ALLOWED = {("recognizer.cli.serve", "web.app"), ("recognizer.cli.serve", "web.guard"), ("recognizer.cli.serve", "web.settings")}


def test_project_imports_sit_at_module_top():
    """Lazy imports are for heavy optional third-party modules only (torch, ray, pymilvus...)."""
    files, edges = _graph()
    hidden = [f"{files[m]}:{line} imports {t} inside a function" for m, e in edges.items() for t, line, inside in e
              if inside and (m, t) not in LAZY_ALLOWED]
    assert hidden == []


def test_every_module_declares_its_public_names():
    missing = [str(p) for m, p in _files().items() if p.name != "__main__.py"
               and "__all__" not in p.read_text(encoding="utf-8") and p.stat().st_size > 0
               and any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
                       for n in ast.parse(p.read_text(encoding="utf-8")).body)]
    assert missing == []


def test_no_function_too_long_or_too_branchy():
    radon = pytest.importorskip("radon.complexity")
    over = []
    for path in _files().values():
        src = path.read_text(encoding="utf-8")
        for n in ast.walk(ast.parse(src)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES:
                over.append(f"{path}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines")
        for block in radon.cc_visit(src):
            if block.complexity > MAX_COMPLEXITY:
                over.append(f"{path}:{block.lineno} {block.name}: complexity {block.complexity}")
    assert over == []


def test_recognizer_class_stays_small():
    lines = len((ROOT / "recognizer" / "recognizer.py").read_text(encoding="utf-8").splitlines())
    assert lines <= 350
