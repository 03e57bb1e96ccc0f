"""`minires assignment make`: a student workspace cut from minires' own files.

Each file the assignment names is copied from minires (minires/ops/<file>, or minires/autograd.py
for the engine) with its relative imports made absolute (`from ..autograd import Function` ->
`from minires.autograd import Function`), so the
student's classes subclass minires.autograd.Function and plug into the real engine. In the copy,
every target's docstring is replaced by the assignment's (shapes and math), and every target
function's solution body, the lines from `# BEGIN SOLUTION` to `# END SOLUTION`, becomes
`raise NotImplementedError("TODO: ...")`. With `with_solutions` (the teacher's copy) the bodies
stay, which is how the tests check that the reference scores full marks.

How much a stub's docstring gives is the teacher's choice, `hints`: a target's doc is paragraphs;
those that begin with "Shapes:" (the intermediate shapes, the plan) are kept at `shapes` and
`full`, those that begin with "Math:" (the formulas, line by line) at `full` only, and the rest
(what to compute, the shapes in and out) always.
"""
import ast
import importlib.util
import json
import re
import textwrap
from pathlib import Path

from .registry import get

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SOURCES = {"autograd.py": "autograd.py",              # the engine (assignment 0)
           "block.py": "assignments/block.py"}        # a BasicBlock by hand (assignment 3)
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
HINTS = ("none", "shapes", "full")  # how much of a target's doc a stub gives (module docstring)
DEFAULT_HINTS = "shapes"
_HINT_LEVEL = {"Shapes:": "shapes", "Math:": "full"}
MANIFEST = "assignment.json"
_RELATIVE_IMPORT = re.compile(r"^(\s*from\s+)(\.+[\w.]*)(\s+import\b)", re.MULTILINE)


def source_path(filename):
    """Where in minires a workspace file is cut from: conv.py -> ops/conv.py (package-relative)."""
    return SOURCES.get(filename, f"ops/{filename}")


def reference_module_name(filename):
    """The minires module a workspace file is cut from: conv.py -> minires.ops.conv."""
    return "minires." + source_path(filename)[:-len(".py")].replace("/", ".")


def reference_path(filename):
    return PACKAGE_DIR / source_path(filename)


def rewrite_imports(source, package):
    """Relative imports of a module in `package` made absolute."""
    return _RELATIVE_IMPORT.sub(
        lambda m: m[1] + importlib.util.resolve_name(m[2], package) + m[3], source)


def _definitions(tree):
    """{qualname: node} for the module's functions and classes and the classes' methods."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _docstring_node(node):
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        return first
    return None


def doc_for(doc, hints=DEFAULT_HINTS):
    """The paragraphs of a target's doc that a stub gives at `hints` (none, shapes or full)."""
    if hints not in HINTS:
        raise ValueError(f"hints must be one of {', '.join(HINTS)}, got {hints!r}")
    paragraphs = re.split(r"\n[ \t]*\n", textwrap.dedent(doc).strip())
    kept = [p for p in paragraphs
            if HINTS.index(_HINT_LEVEL.get(p.split(None, 1)[0], "none"))
            <= HINTS.index(hints)]
    return "\n\n".join(kept)


def _render_docstring(doc, indent):
    lines = textwrap.dedent(doc).strip().splitlines()
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""\n']
    body = [f"{indent}{line}".rstrip() + "\n" for line in lines[1:]]
    return [f'{indent}"""{lines[0]}\n', *body, f'{indent}"""\n']


def _solution_span(lines, node, where):
    """(first, last) 0-based line indices of the marker pair inside a function; the END marker
    is a comment, so it sits in the comment lines right after the last statement."""
    last = node.end_lineno
    while last < len(lines) and lines[last].lstrip().startswith("#"):
        last += 1
    inside = range(node.lineno - 1, last)
    begins = [i for i in inside if lines[i].strip() == BEGIN]
    ends = [i for i in inside if lines[i].strip() == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"{where}: expected one '{BEGIN}' line followed by one '{END}' line, "
                         f"found {len(begins)} and {len(ends)}")
    return begins[0], ends[0]


def stub_source(source, targets, filename, keep_markers=False, hints=DEFAULT_HINTS):
    """`source` with each target's docstring replaced (by the paragraphs of its doc that `hints`
    gives) and each target function's solution body turned into a TODO stub (between the markers,
    with `keep_markers`). Raises ValueError naming a target that is missing or unmarked."""
    lines = source.splitlines(keepends=True)
    nodes = _definitions(ast.parse(source))
    edits = []  # (first line index, last line index, replacement lines)
    for target in targets:
        where = f"{filename}: {target.qualname}"
        if target.qualname not in nodes:
            raise ValueError(f"{where} is not defined there")
        node = nodes[target.qualname]
        doc_node = _docstring_node(node)
        if isinstance(node, ast.FunctionDef):
            first, last = _solution_span(lines, node, where)
            indent = lines[first][:len(lines[first]) - len(lines[first].lstrip())]
            stub = [f'{indent}raise NotImplementedError("TODO: {target.qualname}; see the '
                    'docstring")\n']
            if keep_markers:
                stub = [f"{indent}{BEGIN}\n", *stub, f"{indent}{END}\n"]
            if doc_node is None:  # the stub's docstring goes where the solution was
                stub = _render_docstring(doc_for(target.doc, hints), indent) + stub
            edits.append((first, last, stub))
        elif doc_node is None:
            raise ValueError(f"{where} has no docstring to replace")
        if doc_node is not None:
            edits.append((doc_node.lineno - 1, doc_node.end_lineno - 1,
                          _render_docstring(doc_for(target.doc, hints),
                                            " " * doc_node.col_offset)))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first:last + 1] = replacement
    return "".join(lines)


def absolute_source(filename, package_dir=PACKAGE_DIR):
    """minires' <filename> as found in `package_dir`, its relative imports made absolute: what a
    workspace file, or a submission gathered from a student copy, holds."""
    package = reference_module_name(filename).rpartition(".")[0]
    return rewrite_imports((Path(package_dir) / source_path(filename)).read_text(), package)


def workspace_source(filename, targets, with_solutions=False, hints=DEFAULT_HINTS):
    """The student's copy of minires' <filename>."""
    source = absolute_source(filename)
    if with_solutions:
        return source
    return stub_source(source, [t for t in targets if t.file == filename], filename, hints=hints)


def make_workspace(name, out, with_solutions=False, force=False, hints=DEFAULT_HINTS):
    """Write assignment `name`'s workspace into directory `out`; returns the paths written.

    Refuses to overwrite an existing file (a student's work) unless `force`.
    """
    assignment = get(name)
    out = Path(out)
    files = {f: workspace_source(f, assignment.targets, with_solutions, hints)
             for f in assignment.files}
    files.update(assignment.extras)
    files["README.md"] = readme(assignment)
    files[MANIFEST] = json.dumps({"assignment": assignment.name,
                                  "files": list(assignment.files)}, indent=2) + "\n"
    existing = [f for f in files if (out / f).exists()]
    if existing and not force:
        raise SystemExit(f"{out} already has {', '.join(existing)}; not overwriting a student's "
                         "work (use --force to replace them)")
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (out / filename).write_text(text)
    return [out / f for f in files]


def readme(assignment):
    """The student's README.md: what to write, how each part is graded, how to grade oneself."""
    graded = {name for part in assignment.parts for name in part.uses}
    todo = "\n".join(f"- `{t.file}`: `{t.qualname}`" for t in assignment.targets
                     if t.qualname in graded)
    parts = "\n".join(f"| `{p.name}` | {p.points} | {p.description} |" for p in assignment.parts)
    return f"""# Assignment {assignment.number}: {assignment.name}

{assignment.summary[0].upper()}{assignment.summary[1:]}.

## What to write

Replace each `raise NotImplementedError("TODO: ...")` with your code; the docstring above it gives
the shapes and the math. Keep the names and signatures: the grader calls them.

{todo}

Your classes subclass `minires.autograd.Function`, so they plug into minires' real autograd
engine: `forward` and `backward` take and return NumPy arrays, and `Function.apply` records the
graph. Use float64 when you experiment: `minires.gradcheck` compares your backward with
numerical gradients.

## Check yourself, then grade

    minires assignment check {assignment.name} --workspace .     # public checks, no reference
    minires assignment grade . --assignment {assignment.name}    # with your teacher's full copy
    minires assignment grade . --assignment {assignment.name} --part {assignment.parts[0].name}

| part | points | what is checked |
|---|---|---|
{parts}

`check` compares your backward with numerical gradients of your own forward, checks shapes,
dtypes and that inputs are left unchanged; it needs no reference. Grading needs your teacher's
complete copy of minires; in a student release, submit to your course's autograder.

Each part runs in its own sandboxed process on fresh random inputs (a new seed every run; `--seed
N` repeats one), with a copy of minires that holds no solution: your code runs with your own
other functions, and the grader compares what it returns with minires' reference in its own
process. Each case of a part earns its share of the part's points. A part that crashes, runs past
the time limit (`--timeout`, seconds) or returns the wrong shape or no array loses its cases, and
the grader says why; a wrong value is reported with its index, the value you returned and the
expected one, and an op that writes into one of its inputs is told so. A backward must be written
by hand: one that calls your forward, minires' autograd or `minires.functional` scores 0 for
that part, with a message saying so.

Your files may import numpy, math, the standard library and what they import now. The grader
reads your source only to give advice (a suspicious line is named, nothing is refused). Keep each
file's name: a missing or renamed file scores 0 for its parts.

{textwrap.fill(assignment.notes, 99)}
"""
