"""The student edition: the book with every exercise solution removed from its sources.

Usage (from the repository root; ``make student`` and ``make student-check`` run these):

    python tools/student_edition.py sources _build/student-src
        Write a copy of the book's sources to _build/student-src in which every ``{solution}``
        block is deleted from the notebooks and Markdown pages (the exercises stay), with a
        _config.yml titled "(student edition)". Jupyter Book then builds that copy, so the HTML,
        the page sources (``_sources/``) and the notebooks behind the download buttons hold no
        solution.

    python tools/student_edition.py check _build/html _build/student
        Compare the student edition with the full edition (_build/html) and fail if
          - any page's text differs from the full page's text with its solutions taken out
            (Sphinx's own rendering decides what a solution is, not this tool's parser),
          - any file under _build/student contains a solution's text: its source lines (as in the
            notebooks) or its rendered sentences (as in the full edition's pages),
          - the same search does not find every solution in the full edition, both in its page
            and in its notebook under _sources (a search that cannot see them there could not
            see them in the student edition either).

    python tools/student_edition.py check-pdf _build/html _build/pdf/lmmnotes.pdf _build/pdf/lmmnotes-student.pdf
        The same leak check on the PDF editions' text (poppler's pdftotext): fail if the student
        PDF contains any solution's text, or if the full PDF does not show every solution (the
        search must see each one where it is). Text is compared by its letters and digits only,
        so line breaks, hyphenation and ligatures do not hide a leak; fingerprints are cut at
        math and MyST roles, which a PDF renders differently, and pieces that occur in the book
        outside the solutions are left out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
# What the book's build reads besides book/: its contents, bibliography, Sphinx extension, the
# vendored MathJax, and the package sources that chapter 3 shows with literalinclude.
COPIED = ["_toc.yml", "references.bib", "_ext", "vendor", "lmmnotes"]
# A fence opens or closes a code block or a MyST directive: at most three spaces of indentation
# (more makes an indented code block), then three or more backticks, tildes or colons.
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
MIN_FINGERPRINT = 30  # characters: shorter lines ("$$", ":class: dropdown") say nothing


def _closing_line(lines: list[str], start: int, char: str, length: int) -> int:
    """The line that closes the fence opened at ``start``: the same character, at least as many
    times, nothing after it (CommonMark; shorter fences inside, like a code block, do not close it)."""
    for end in range(start + 1, len(lines)):
        m = FENCE.match(lines[end].rstrip("\n"))
        if m and m["fence"][0] == char and len(m["fence"]) >= length and not m["info"].strip():
            return end
    raise ValueError(f"unclosed fence: {lines[start].strip()!r}")


def split_solutions(markdown: str) -> tuple[str, list[str]]:
    """Remove the ``{solution}`` directives from MyST Markdown; return the rest and the blocks.

    Directives are followed into their bodies (a solution may sit inside another directive);
    literal blocks (code, or a Markdown example in a code block) are skipped whole, so a
    ``{solution}`` shown inside one stays.
    """
    lines = markdown.splitlines(keepends=True)
    kept: list[str] = []
    blocks: list[str] = []
    open_directives: list[tuple[str, int]] = []  # fences whose bodies are Markdown, innermost last
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].rstrip("\n"))
        if m is None:
            kept.append(lines[i])
            i += 1
            continue
        char, length, info = m["fence"][0], len(m["fence"]), m["info"].strip()
        if (open_directives and not info and char == open_directives[-1][0]
                and length >= open_directives[-1][1]):
            open_directives.pop()  # the end of the innermost directive
            kept.append(lines[i])
            i += 1
            continue
        if info.startswith("{solution-start}"):
            raise ValueError("gated solutions ({solution-start} ... {solution-end}) are not supported: "
                             "write each solution as one {solution} block")
        end = _closing_line(lines, i, char, length)
        if info.startswith("{solution}"):
            blocks.append("".join(lines[i:end + 1]))
            i = end + 1
        elif info.startswith("{"):
            open_directives.append((char, length))
            kept.append(lines[i])
            i += 1
        else:
            kept += lines[i:end + 1]
            i = end + 1
    return "".join(kept), blocks


def strip_page(path: Path) -> tuple[str, list[str]]:
    """A page of the book (notebook or Markdown) without its solutions, as file content, and the
    solution blocks it had."""
    text = path.read_text()
    if path.suffix != ".ipynb":
        return split_solutions(text)
    notebook = json.loads(text)
    removed = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            kept, blocks = split_solutions("".join(cell["source"]))
            cell["source"] = kept.splitlines(keepends=True)
            removed += blocks
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", removed


def book_pages() -> list[Path]:
    return sorted(BOOK.glob("*.ipynb")) + sorted(BOOK.glob("*.md"))


def write_sources(target: Path) -> None:
    """The book's sources without solutions, in ``target`` (emptied first), ready for
    ``jupyter-book build target``."""
    shutil.rmtree(target, ignore_errors=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = f"{config['title']} (student edition)"
    config["sphinx"]["config"]["hide_solutions"] = True
    target.mkdir(parents=True)
    (target / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target / name)
    (target / "book").mkdir()
    for page in book_pages():
        (target / page.relative_to(ROOT)).write_text(strip_page(page)[0])


# ---- the leak check --------------------------------------------------------------------------

@dataclass(frozen=True)
class Fingerprints:
    """Text of one solution that appears nowhere else in the book."""

    where: str  # page and exercise label, for messages
    page: str  # the page's stem, e.g. "05_blups"
    source_lines: tuple[str, ...]  # lines of the block as written (whitespace folded)
    sentences: tuple[str, ...]  # sentences of its rendered text in the full edition


def _fold(text: str) -> str:
    return " ".join(text.split())


def _page_text(html: str, drop_solutions: bool = False) -> tuple[str, list[str]]:
    """The text of a page's article (whitespace folded) and, taken out of it if asked, the text
    of each solution that Sphinx rendered there."""
    soup = BeautifulSoup(html, "html.parser")
    article = soup.select_one("article") or soup.body or soup
    solutions = []
    for node in article.select("div.solution"):
        solutions.append(_fold((node.select_one("section") or node).get_text(" ")))
        if drop_solutions:
            node.decompose()
    return _fold(article.get_text(" ")), solutions


def _cells(text: str, page: Path) -> str:
    """The cell sources (Markdown and code) of a notebook's content, or a Markdown page's text."""
    if page.suffix != ".ipynb":
        return text
    return "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])


def fingerprints(full_html: Path) -> list[Fingerprints]:
    """For each solution, source lines and rendered sentences that occur nowhere else in the book.

    "Elsewhere" is judged over every page: a source line counts if the pages' cells (Markdown
    and code) without their solutions do not contain it, even as part of a longer line (the
    search is for substrings: ``formula = ...`` in a solution is no fingerprint when a cell has
    ``big_formula = ...``), a sentence if no full-edition page, with Sphinx's solution nodes
    taken out, contains it. (A line such as ``import numpy as np`` in a solution is no evidence
    of a leak: every chapter has it.)
    """
    pages = []
    for page in book_pages():
        stripped, blocks = strip_page(page)
        html = full_html / "book" / f"{page.stem}.html"
        rest, rendered = _page_text(html.read_text(), drop_solutions=True) if html.exists() else ("", [])
        if len(rendered) != len(blocks):
            raise SystemExit(f"{page.name}: the sources hold {len(blocks)} solutions, the full edition's "
                             f"page shows {len(rendered)}: rebuild it (make book)")
        pages.append((page, _cells(stripped, page), blocks, rest, rendered))
    outside = "\n".join(_fold(line) for _, cells, *_ in pages for line in cells.splitlines())
    elsewhere = "\n".join(rest for *_, rest, _ in pages)
    result = []
    for page, _, blocks, _, rendered in pages:
        for block, shown in zip(blocks, rendered):
            label = FENCE.match(block.splitlines()[0])["info"].split()[-1]
            lines = {_fold(line) for line in block.splitlines()[1:-1] if not line.startswith(":")}
            lines = {line for line in lines if len(line) >= MIN_FINGERPRINT and line not in outside}
            sentences = {_fold(s) for s in re.split(r"(?<=[.;:?])\s+", shown)}
            sentences = {s for s in sentences if len(s) >= MIN_FINGERPRINT and s not in elsewhere}
            result.append(Fingerprints(f"{page.relative_to(ROOT)} ({label})", page.stem,
                                       tuple(sorted(lines)), tuple(sorted(sentences))))
    return result


def _searchable(path: Path) -> str:
    """What a reader could find in a file: the text and the markup of a page, the cell sources
    of a notebook (its JSON escapes backslashes and quotes), the raw text of anything else."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".html":
        return _fold(BeautifulSoup(raw, "html.parser").get_text(" ")) + "\n" + _fold(raw)
    if path.suffix == ".ipynb":
        return _fold(" ".join("".join(c["source"]) for c in json.loads(raw)["cells"])) + "\n" + _fold(raw)
    return _fold(raw)


def found_in(text: str, prints: Fingerprints) -> list[str]:
    """Which kinds of fingerprint of a solution occur in ``text``."""
    return [kind for kind, marks in (("source", prints.source_lines), ("rendered", prints.sentences))
            if any(mark in text for mark in marks)]


def _exercise_count(pages) -> int:
    return sum(len(BeautifulSoup(p.read_text(), "html.parser").select("div.exercise")) for p in pages)


def check(full_html: Path, student: Path) -> int:
    problems = []
    prints = fingerprints(full_html)
    for p in prints:
        # The search must see each solution where the full edition has it: rendered in the page,
        # as written in the notebook behind the download button.
        page = _searchable(full_html / "book" / f"{p.page}.html")
        sources = [s for s in (full_html / "_sources" / "book").glob(f"{p.page}.*") if s.is_file()]
        if "rendered" not in found_in(page, p):
            problems.append(f"the check cannot see the solution in {p.where} in the full edition's page")
        if not any("source" in found_in(_searchable(s), p) for s in sources):
            problems.append(f"the check cannot see the solution in {p.where} in the full edition's _sources")
    leaks = 0
    files = sorted(p for p in student.rglob("*") if p.is_file())
    for path in files:
        text = _searchable(path)
        for p in prints:
            if kinds := found_in(text, p):
                leaks += 1
                problems.append(f"the solution in {p.where} appears in {path.relative_to(student)} ({', '.join(kinds)})")
    student_html = student / "html"
    for page in sorted((full_html / "book").glob("*.html")):
        expected, _ = _page_text(page.read_text(), drop_solutions=True)
        twin = student_html / "book" / page.name
        actual, shown = _page_text(twin.read_text()) if twin.exists() else ("", [])
        if actual != expected or shown:
            problems.append(f"book/{page.name}: the student page is not the full page without its solutions")
    exercises = (_exercise_count((full_html / "book").glob("*.html")),
                 _exercise_count((student_html / "book").glob("*.html")))
    if exercises[0] != exercises[1]:
        problems.append(f"the student edition shows {exercises[1]} exercises, the full edition {exercises[0]}")
    for problem in problems:
        print("FAILED:", problem)
    print(f"student edition: {len(prints)} solutions ({sum(len(p.source_lines) + len(p.sentences) for p in prints)} "
          f"fingerprints); {len(files)} files searched, {leaks} leaks; {exercises[1]} of {exercises[0]} exercises kept; "
          f"{'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


# ---- the leak check on the PDF editions -------------------------------------------------------

def _letters(text: str) -> str:
    """Lower-case letters and digits only, after Unicode compatibility folding (ligatures)."""
    return re.sub(r"[^0-9a-z]", "", unicodedata.normalize("NFKC", text).lower())


MATH_OR_ROLE = re.compile(r"\\\(.*?\\\)|\\\[.*?\\\]|\$\$.*?\$\$|\$[^$]*\$|\{[a-z:-]+\}`[^`]*`|\\\S+")


def pdf_marks(prints: Fingerprints, elsewhere: str = "") -> set[str]:
    """The fingerprints of a solution as they read in a PDF: its lines and sentences, cut at
    math and MyST roles (which a PDF renders differently), as letters and digits; pieces shorter
    than 20 letters, or found in ``elsewhere`` (the book without its solutions, as letters and
    digits), say nothing about a leak and are left out."""
    marks = set()
    for mark in prints.source_lines + prints.sentences:
        for piece in MATH_OR_ROLE.split(mark):
            letters = _letters(piece)
            if len(letters) >= MIN_FINGERPRINT * 2 // 3 and letters not in elsewhere:
                marks.add(letters)
    return marks


def book_without_solutions() -> str:
    """The book's text without its solutions, as letters and digits: every page's cells (their
    sources, and the text of their outputs) after strip_page."""
    parts = []
    for page in book_pages():
        stripped = strip_page(page)[0]
        if page.suffix != ".ipynb":
            parts.append(stripped)
            continue
        for cell in json.loads(stripped)["cells"]:
            parts.append("".join(cell["source"]))
            for output in cell.get("outputs", []):
                text = output.get("text") or output.get("data", {}).get("text/plain", "")
                parts.append("".join(text) if isinstance(text, list) else text)
    return _letters("\n".join(parts))


def pdf_text(pdf: Path) -> str:
    result = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True,
                            capture_output=True, text=True)
    return _letters(result.stdout)


def check_pdf(full_html: Path, full_pdf: Path, student_pdf: Path) -> int:
    problems = []
    full, student = pdf_text(full_pdf), pdf_text(student_pdf)
    prints = fingerprints(full_html)
    elsewhere = book_without_solutions()
    counted = 0
    for p in prints:
        marks = pdf_marks(p, elsewhere)
        counted += len(marks)
        if not marks:  # all math: tools/check_pdf.py checks that its "Solution to" title is gone
            print(f"note: the solution in {p.where} is all math, which the PDF's text cannot be searched for")
            continue
        if not any(mark in full for mark in marks):
            problems.append(f"the check cannot see the solution in {p.where} in {full_pdf.name}")
        if leaked := [mark for mark in marks if mark in student]:
            problems.append(f"the solution in {p.where} appears in {student_pdf.name}: {leaked[0][:60]}...")
    for problem in problems:
        print("FAILED:", problem)
    print(f"student PDF: {len(prints)} solutions ({counted} fingerprints in "
          f"PDF form) searched in {student_pdf.name}; {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    command, *paths = sys.argv[1:] or [""]
    if command == "sources" and len(paths) == 1:
        write_sources(Path(paths[0]))
    elif command == "check" and len(paths) == 2:
        sys.exit(check(Path(paths[0]), Path(paths[1])))
    elif command == "check-pdf" and len(paths) == 3:
        sys.exit(check_pdf(*map(Path, paths)))
    else:
        sys.exit(__doc__)
