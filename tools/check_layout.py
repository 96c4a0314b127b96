"""Code in the book fits its column: no line of code longer than 79 characters.

Usage: python tools/check_layout.py [FILE ...]        (default: book/*.ipynb and book/*.md)

Checks every line of every code cell of the notebooks (hidden cells too: a reader who downloads
a notebook sees them) and every line inside a fenced code block of the Markdown, in notebooks'
Markdown cells and in the .md pages (not ```text blocks, which show printed output: that may
scroll inside its own box). At the book's code font a line of 79 characters fits the
text column at 1280 px (tools/browser_check.py measures the rendered pages; this check names the
cell and line to fix). Prints one line per offence, ``file: cell C, line L: W characters``, and
exits 1 if there is any. tests/test_layout.py runs it over the book.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_WIDTH = 79
# A fence opens or closes a code block or a MyST directive (as in tools/student_edition.py).
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
# Fenced blocks that show output, not code (rendered as .highlight-text and the like).
OUTPUT_LANGUAGES = ("text", "none", "output", "console")
# Directives whose bodies are code, not Markdown.
CODE_DIRECTIVES = ("{code", "{code-block", "{code-cell", "{sourcecode", "{literalinclude")


@dataclass(frozen=True, kw_only=True)
class LongLine:
    """A line of code wider than MAX_WIDTH: ``cell`` is the notebook cell's index (0-based, as
    nbformat and nbval count; None in a .md page), ``line`` its 1-based line in that cell or page."""

    path: str
    cell: int | None
    line: int
    width: int
    text: str

    def __str__(self) -> str:
        where = f"cell {self.cell}, line {self.line}" if self.cell is not None else f"line {self.line}"
        return f"{self.path}: {where}: {self.width} characters: {self.text.strip()[:60]}"


def code_lines_in_markdown(markdown: str) -> list[tuple[int, str]]:
    """(1-based line number, text) of each line inside a fenced code block.

    Directive fences (```{exercise}, :::{note}) are followed into their bodies, which are
    Markdown; a bare fence closes the innermost open directive, otherwise it opens a code block.
    """
    lines = markdown.splitlines()
    found: list[tuple[int, str]] = []
    directives: list[tuple[str, int]] = []  # open directive fences, innermost last
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        char, length, info = m["fence"][0], len(m["fence"]), m["info"].strip()
        if directives and not info and char == directives[-1][0] and length >= directives[-1][1]:
            directives.pop()
            i += 1
            continue
        if info.startswith("{") and not info.startswith(CODE_DIRECTIVES):
            directives.append((char, length))
            i += 1
            continue
        # A code block: up to a fence of the same character, at least as long, with no info.
        # A ```text block shows printed output, which may scroll inside its box: not checked.
        is_code = info.split()[0] not in OUTPUT_LANGUAGES if info else True
        j = i + 1
        while j < len(lines):
            close = FENCE.match(lines[j])
            if close and close["fence"][0] == char and len(close["fence"]) >= length \
                    and not close["info"].strip():
                break
            if is_code and (not lines[j].lstrip().startswith(":") or not info.startswith("{")):
                found.append((j + 1, lines[j]))  # (a directive's :option: lines are not code)
            j += 1
        i = j + 1
    return found


def long_lines(path: Path, max_width: int = MAX_WIDTH) -> list[LongLine]:
    """Every line of code in a notebook or a Markdown page wider than ``max_width``."""
    path = path.resolve()
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    found = []
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        for k, cell in enumerate(cells):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if cell["cell_type"] == "code":
                lines = list(enumerate(source.splitlines(), start=1))
            elif cell["cell_type"] == "markdown":
                lines = code_lines_in_markdown(source)
            else:
                continue
            found += [LongLine(path=name, cell=k, line=n, width=len(text), text=text)
                      for n, text in lines if len(text) > max_width]
    else:
        found += [LongLine(path=name, cell=None, line=n, width=len(text), text=text)
                  for n, text in code_lines_in_markdown(path.read_text()) if len(text) > max_width]
    return found


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(
        [*ROOT.glob("book/*.ipynb"), *ROOT.glob("book/*.md")])
    found = [problem for path in paths for problem in long_lines(path)]
    for problem in found:
        print(problem)
    print(f"{len(found)} lines of code longer than {MAX_WIDTH} characters in {len(paths)} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
