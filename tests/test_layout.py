"""The house rules of docs/layout.md, read from the source with `ast`: imports point one way
down the stages (a module imports only its own stage or earlier ones), no circle of imports,
and no module imports another module's underscore names. Imports inside functions count too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "netspec"

# The stages in the order data flows through them (docs/layout.md). A module may import
# modules of its own stage or of earlier ones; the longest matching prefix gives the stage.
STAGES = [
    ("netspec.version", "netspec.errors", "netspec.fsio", "netspec.checkpoint"),
    ("netspec.kernels",),
    ("netspec.nn",),
    ("netspec.plan.shapes",),
    ("netspec.data",),
    ("netspec.spec",),
    ("netspec.plan",),
    ("netspec.train",),
    ("netspec.interop", "netspec.viz"),
    ("netspec.sweep",),
    ("netspec.cli",),
    ("netspec", "netspec.__main__", "netspec.model"),  # the public API imports from every stage
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def stage(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} belongs to no stage; add it to STAGES and docs/layout.md"
    return rank


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every netspec import in `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names
                      if a.name.split(".")[0] == "netspec"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.split(".")[0] != "netspec":
                continue
            names = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # `from netspec.kernels import winograd`: a module
                    found.append((sub, [], node.lineno))
                else:
                    names.append(alias.name)
            if names:
                found.append((base, names, node.lineno))
    return found


def test_every_module_has_a_stage():
    for module in MODULES:
        stage(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_stages(module):
    mine = stage(module)
    for target, _, line in imports(module):
        assert stage(target) <= mine, (
            f"{MODULES[module]}:{line}: {module} (stage {mine}) imports {target} "
            f"(stage {stage(target)}), a later stage; see docs/layout.md")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_underscore_names_from_other_modules(module):
    for target, names, line in imports(module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, (f"{MODULES[module]}:{line}: imports {private} from {target}; "
                             "make them public, or move them to the module that uses them")
        assert not target.rpartition(".")[2].startswith("_") or target == module, (
            f"{MODULES[module]}:{line}: imports the private module {target}")


def test_no_circles():
    graph = {m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ may re-export its own modules: the edge from a module to its own
    # package's __init__ is the other direction and would close a trivial loop
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not (m.startswith(t + ".") and t != "netspec")}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                circle = path[path.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(circle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_walker_sees_a_violation(tmp_path):
    """Negative control: an upward import and an underscore import are reported."""
    source = "from netspec.cli.common import _hidden\nimport netspec.train.run\n"
    tree = ast.parse(source)
    names = [(n.module, [a.name for a in n.names]) for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom)]
    assert names == [("netspec.cli.common", ["_hidden"])]
    assert stage("netspec.train.run") > stage("netspec.kernels.col2im")
    assert stage("netspec.plan.shapes") < stage("netspec.spec.model") < stage("netspec.plan.fuse")


def private_calls(source: str) -> list[tuple[int, str]]:
    """(line, callee) for every call of an underscore method on anything but self or cls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, node.func.value
        if (name.startswith("_") and not name.startswith("__")
                and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls"))):
            found.append((node.lineno, ast.unparse(node.func)))
    return found


def test_no_module_calls_another_objects_underscore_methods():
    """A protocol lives in one place: no module drives another object through its private
    methods (as a batch exchange once did its pool's). Control: such a call is found."""
    assert private_calls("self.pool._send(k, 'go')\nself._send(k)\n") == [(1, "self.pool._send")]
    found = [f"{MODULES[m]}:{line}: {callee}" for m in sorted(MODULES)
             for line, callee in private_calls(MODULES[m].read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)
