"""The package's layout: no import cycle, no names that differ by an underscore, one version."""

import ast
import pathlib
import re

import deephoyer_tf

PACKAGE = pathlib.Path(deephoyer_tf.__file__).resolve().parent
REPO = PACKAGE.parent


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name, path, modules):
    """Package modules `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # `from a.b import c`: c is a module or a name in a.b.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                result.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def _graph():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ is run before any of its submodules: importing a
    # submodule does not depend on it beyond that, so edges from a submodule
    # to its own parent packages are not import dependencies.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def test_the_import_graph_is_read_correctly():
    graph = _graph()
    assert "deephoyer_tf.structure.registry" in graph["deephoyer_tf.sparsity.thresholding"]
    # imports inside functions count too
    assert "deephoyer_tf.sparsity.tfmot_wrapper" in graph["deephoyer_tf.sparsity.fixed_zeros"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_package_modules():
    assert _cycles(_graph()) == []


def test_internal_imports_nothing_else_of_the_package_and_the_library_not_paper():
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith("deephoyer_tf._internal"):
            assert all(t.startswith("deephoyer_tf._internal") for t in targets), (name, targets)
        library = ("regularizers", "sparsity", "callbacks", "structure", "export", "training")
        if name.split(".")[1:2] and name.split(".")[1] in library:
            assert not [t for t in targets if t.startswith("deephoyer_tf.paper")], name
        if name.startswith("deephoyer_tf.structure"):
            assert not [t for t in targets if t.split(".")[1] in ("regularizers", "sparsity", "callbacks")], name


def test_no_two_modules_differ_only_by_a_leading_underscore():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        key = (path.parent, path.stem.lstrip("_"))
        names.setdefault(key, []).append(path.name)
    for path in PACKAGE.rglob("*"):
        if path.is_dir() and path.name != "__pycache__":
            names.setdefault((path.parent, path.name.lstrip("_")), []).append(path.name + "/")
    clashes = [files for (parent, stem), files in names.items() if len(files) > 1 and stem != "init"]
    assert clashes == []


def test_no_module_is_shadowed_by_a_function_of_its_package():
    """`from pkg.mod import mod` in pkg/__init__ would make `pkg.mod` a function."""
    for name in _modules():
        parent, _, leaf = name.rpartition(".")
        if not parent:
            continue
        value = getattr(__import__(parent, fromlist=[leaf]), leaf, None)
        assert value is None or type(value).__name__ == "module", name


def test_the_version_lives_in_one_place():
    version = (PACKAGE / "_version.py").read_text()
    assert re.search(r'__version__ = "([^"]+)"', version).group(1) == deephoyer_tf.__version__
    hits = [
        p for p in list(PACKAGE.rglob("*.py")) + [REPO / "setup.py"]
        if deephoyer_tf.__version__ in p.read_text() and p.name != "_version.py"
    ]
    assert hits == []
    assert "_version.py" in (REPO / "setup.py").read_text()


def test_public_names_are_exported():
    for name in deephoyer_tf.__all__:
        assert getattr(deephoyer_tf, name) is not None, name
