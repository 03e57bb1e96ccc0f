"""No import loops in minires: no module imports one that imports it back, directly or through
others, counting the imports inside functions too (a lazy import is still a loop to a reader).

The graph is read from the source with `ast`, not by importing: an edge A -> B for every
`import minires.B`, `from minires.B import x` or relative `from .B import x` in A, wherever it
stands. `from . import B` is an edge to the submodule B where there is one (else to the package,
whose __init__ defines B). Importing a
submodule also runs its package's __init__, but that is Python's doing, not an import the module
asks for, so it is no edge. Run this file as a script to print the loops it finds.
"""
import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "minires"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    """{module name: path} of every .py file under minires/."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path, name, known):
    """The minires modules that the module `name` at `path` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.update(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known
                         else target for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph():
    known = modules()
    return {name: imported_names(path, name, known) for name, path in known.items()}


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    """The reader finds the imports the check relies on (else an empty graph would pass)."""
    graph = import_graph()
    assert "minires.autograd" in graph["minires.functional"]
    assert "minires.backend" in graph["minires.autograd"]
    assert "minires.ops.conv" in graph["minires.functional"]


def test_a_loop_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_minires_has_no_import_loops():
    loops = cycles(import_graph())
    assert not loops, f"import loops in minires: {loops}"


if __name__ == "__main__":
    for loop in cycles(import_graph()):
        print(" <-> ".join(loop))
    sys.exit(0)
