"""A teaching aid, not a boundary: it names the lines of a student file that look like a way
around the assignment, as advice printed beside the score. It never refuses a file.

What it points at: imports beyond what the handed-out file imports plus numpy, math and a few
harmless standard modules; frame and heap introspection (sys._getframe, inspect, gc); reaching
around the language (eval, exec, open, __import__, getattr with a computed name, dunder
attributes such as __globals__ or __subclasses__).

Python cannot be sandboxed by reading its source, so the score never rests on this screen: the
sandbox holds no answer to find (stripped.py) and the score is decided outside it (grader.py).
Honest code must never be flagged: np.stack, a variable named `input`, a UTF-8 BOM and
`from __future__ import annotations` pass it silently.
"""
import ast

STANDARD = {"numpy", "math", "functools", "itertools", "typing", "collections", "dataclasses",
            "numbers", "operator", "abc", "enum", "warnings", "contextlib", "__future__"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "globals", "locals", "vars", "__import__",
                   "breakpoint", "open", "help", "exit", "quit"}
COMPUTED_NAME_CALLS = {"getattr", "setattr", "delattr", "hasattr"}
FORBIDDEN_ATTRIBUTES = {"_getframe", "currentframe", "getouterframes", "f_back",
                        "f_locals", "f_globals", "f_code", "f_builtins", "gi_frame", "cr_frame",
                        "ag_frame", "tb_frame", "tb_next", "get_objects", "get_referrers",
                        "get_referents", "modules", "functional", "assignments", "fast", "_ops",
                        "_operators"}
ALLOWED_DUNDERS = {"__init__", "__name__", "__len__", "__call__", "__repr__"}


def handed_out_usage(handed_out):
    """What the handed-out file does itself, and so a student's file may too: {module} for
    `import m`, {(module, name)} for from-imports, {attribute} for attributes it uses."""
    modules, names, attributes = set(), set(), set()
    for node in ast.walk(ast.parse(handed_out)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    return modules, names, attributes


def _standard(module):
    return module.split(".")[0] in STANDARD


def screen_file(source, filename, handed_out):
    """Every suspicious line of `source` (a student's `filename`), as advice naming the line; []
    if none.
    Whatever the handed-out file does itself (autograd.py's computed getattr) stays allowed."""
    allowed = {why for _, why in _problems(handed_out, filename, handed_out)}
    return [f"{filename}, line {line}: {why}"
            for line, why in _problems(source, filename, handed_out) if why not in allowed]


def _problems(source, filename, handed_out):
    """[(line, why)] for every construct of `source` the screen points at."""
    try:
        tree = ast.parse(source.removeprefix("\ufeff"), filename)
    except SyntaxError as error:
        return [(error.lineno, f"syntax error: {error.msg}")]
    modules, names, attributes = handed_out_usage(handed_out)
    problems = []

    def refuse(node, why):
        problems.append((node.lineno, why))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in modules and not _standard(alias.name):
                    refuse(node, f"imports {alias.name}: {_which(alias.name)}")
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if (module, alias.name) not in names and not _standard(module):
                    refuse(node, f"imports {alias.name} from {module}: {_which(module)}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS | {"__builtins__"}:
            refuse(node, f"uses {node.id}, which reaches around the assignment")
        elif isinstance(node, ast.Attribute) and node.attr not in attributes \
                and _forbidden_attribute(node.attr):
            refuse(node, f"uses .{node.attr}: frame, heap and module introspection reach "
                         "for the grader's state or a reference solution, not the assignment")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in COMPUTED_NAME_CALLS and not _constant_name(node):
            refuse(node, f"calls {node.func.id} with a computed or dunder name; write the "
                         "attribute itself")
    return problems


def _which(module):
    if module.startswith("minires"):
        return ("beyond the minires imports of the handed-out file (minires' reference modules "
                "and the grader hold no answer for you)")
    return "not among the modules a submission needs (numpy, math, the handed-out file's imports)"


def _forbidden_attribute(name):
    dunder = name.startswith("__") and name.endswith("__")
    return name in FORBIDDEN_ATTRIBUTES or (dunder and name not in ALLOWED_DUNDERS)


def _constant_name(call):
    if len(call.args) < 2:
        return True
    name = call.args[1]
    return isinstance(name, ast.Constant) and isinstance(name.value, str) \
        and not _forbidden_attribute(name.value)
