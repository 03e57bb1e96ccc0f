"""Near-copies of the reference solutions: what a student copy must never hold.

A reference body is the code between `# BEGIN SOLUTION` and `# END SOLUTION` in minires' own files.
Text is compared as tokens (tokenize, one line at a time, so code inside comments, docstrings and
Markdown counts too; comments, indentation and line breaks are dropped, a `#` that starts a line is
read past). A file leaks a body when some stretch of its tokens as long as the body matches it with
difflib's ratio >= THRESHOLD: a copy with one operator changed (`=` for `+=`) or a name swapped
still matches, while code that computes the same thing another way does not.

Bodies shorter than MIN_TOKENS (`return gy, gy`, `return shortcut + branch`) are left out: their
docstrings state them outright, and such short token runs occur in any NumPy code.
"""
import ast
import difflib
import io
import re
import tokenize
from pathlib import Path

from .registry import all_assignments
from .workspace import PACKAGE_DIR, _definitions, _solution_span, source_path

MIN_TOKENS = 12
THRESHOLD = 0.8
NGRAM = 4  # a window is compared only where many of the body's 4-token runs occur in it
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".json", ".cfg", ".ini", ".rst", ".sh", ".ipynb",
                 ".yml", ".yaml", ".csv", ""}
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
_FALLBACK = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\w+|\*\*=?|//=?|->|[-+*/%@&|^<>!=]=|\S")


def line_tokens(line):
    """The tokens of one line of any text, as Python reads them where it can."""
    line = line.strip().lstrip("#").strip()
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(line).readline)
                if t.type not in _SKIPPED]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return _FALLBACK.findall(line)


def text_tokens(text):
    return [token for line in text.splitlines() for token in line_tokens(line)]


def reference_bodies(names=None):
    """[(where, tokens)] of every solution body of the assignments `names` (default: all) long
    enough to compare, read from this (the teacher's) minires."""
    bodies = []
    for assignment in all_assignments().values():
        if names is not None and assignment.name not in names:
            continue
        for target in assignment.targets:
            path = PACKAGE_DIR / source_path(target.file)
            source = path.read_text()
            lines = source.splitlines()
            node = _definitions(ast.parse(source))[target.qualname]
            if isinstance(node, ast.ClassDef):
                continue
            first, last = _solution_span(lines, node, target.qualname)
            tokens = text_tokens("\n".join(lines[first + 1:last]))
            if len(tokens) >= MIN_TOKENS:
                bodies.append((f"{target.file}: {target.qualname}", tokens))
    return bodies


def best_match(body, tokens):
    """(ratio, start) of the stretch of `tokens` closest to `body`; (0.0, None) when no stretch
    shares enough of its 4-token runs to be worth comparing."""
    length = len(body)
    grams = {tuple(body[i:i + NGRAM]) for i in range(length - NGRAM + 1)}
    hits = [0]
    for i in range(len(tokens) - NGRAM + 1):
        hits.append(hits[-1] + (tuple(tokens[i:i + NGRAM]) in grams))
    best, where = 0.0, None
    needed = (length - NGRAM + 1) / 3
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(body)
    for start in range(len(hits) - 1):
        end = min(start + length, len(hits) - 1)
        if hits[end] - hits[start] < needed:
            continue
        matcher.set_seq1(tokens[start:start + length])
        ratio = matcher.ratio()
        if ratio > best:
            best, where = ratio, start
    return best, where


def find_leaks(root, names=None, threshold=THRESHOLD):
    """[(file, reference body, ratio)] for every text file under `root` that holds a solution
    body of the assignments `names` (default: all), or a near-copy of one."""
    bodies = reference_bodies(names)
    leaks = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
            continue
        tokens = text_tokens(path.read_text(errors="replace"))
        for where, body in bodies:
            ratio, _ = best_match(body, tokens)
            if ratio >= threshold:
                leaks.append((str(path.relative_to(root)), where, round(ratio, 3)))
    return leaks
