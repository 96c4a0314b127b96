"""The student edition: the book with every exercise solution removed from its sources.

Usage (from the repository root; ``make student`` and ``make student-check`` run these):

    python tools/student_edition.py sources _build/student-src
        Write a copy of the book's sources to _build/student-src in which every ``{solution}``
        block is deleted from the notebooks and Markdown pages (the exercises stay), with a
        _config.yml titled "(student edition)". Jupyter Book then builds that copy, so the HTML,
        the page sources (``_sources/``) and the notebooks behind the download buttons hold no
        solution. Files are rewritten only when their content changes, so rebuilds are incremental.

    python tools/student_edition.py check _build/html _build/student
        Search every file under _build/student for the text of each solution: its source lines
        (as written in the notebooks) and its rendered sentences (as they appear in the full
        edition's HTML, _build/html). Fails if any is found, if an exercise is missing, or if the
        same search does not find every solution in the full edition (a check that cannot see
        the solutions there could not see them in the student edition either).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
# What the book's build reads besides book/: its contents, bibliography, Sphinx extension, the
# vendored MathJax, and the package sources that chapter 3 shows with literalinclude.
COPIED = ["_toc.yml", "references.bib", "_ext", "vendor", "lmmnotes"]
SOLUTION_OPENING = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution\}\s*(?P<label>\S*)")
MIN_FINGERPRINT = 30  # characters: shorter lines ("$$", ":class: dropdown") say nothing


@dataclass(frozen=True)
class Solution:
    where: str  # file and exercise label, for messages
    source: str  # the solution block as written, fences included


def split_solutions(markdown: str) -> tuple[str, list[str]]:
    """Remove the fenced ``{solution}`` blocks from MyST Markdown; return the rest and the blocks.

    A block opens with a fence of three or more backticks or colons followed by ``{solution}``
    and closes at the next line made of the same character, at least as many times (MyST's rule,
    so shorter fences nested inside, such as a code block, do not close it).
    """
    lines = markdown.splitlines(keepends=True)
    kept, blocks, i = [], [], 0
    while i < len(lines):
        opening = SOLUTION_OPENING.match(lines[i].strip())
        if not opening:
            kept.append(lines[i])
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            end += 1
        if end == len(lines):
            raise ValueError(f"unclosed {{solution}} block: {lines[i].strip()!r}")
        blocks.append("".join(lines[i:end + 1]))
        i = end + 1
    return "".join(kept), blocks


def _write_if_changed(path: Path, content: str) -> None:
    if not path.exists() or path.read_text() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _strip_notebook(text: str) -> tuple[str, list[str]]:
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


def solutions() -> list[Solution]:
    """Every solution block in the book's sources."""
    found = []
    for page in book_pages():
        text = page.read_text()
        blocks = _strip_notebook(text)[1] if page.suffix == ".ipynb" else split_solutions(text)[1]
        for block in blocks:
            label = SOLUTION_OPENING.match(block.strip())["label"]
            found.append(Solution(f"{page.relative_to(ROOT)} ({label})", block))
    return found


def write_sources(target: Path) -> None:
    """The book's sources without solutions, ready for ``jupyter-book build target``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = f"{config['title']} (student edition)"
    config["sphinx"]["config"]["hide_solutions"] = True
    _write_if_changed(target / "_config.yml", yaml.safe_dump(config, sort_keys=False))
    for name in COPIED:
        source = ROOT / name
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()
                                                    and "__pycache__" not in p.parts]
        for path in files:
            destination = target / path.relative_to(ROOT)
            if not destination.exists() or destination.read_bytes() != path.read_bytes():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
    for page in book_pages():
        text = page.read_text()
        stripped = _strip_notebook(text)[0] if page.suffix == ".ipynb" else split_solutions(text)[0]
        _write_if_changed(target / page.relative_to(ROOT), stripped)


# ---- the leak check --------------------------------------------------------------------------

def _normalize(text: str) -> str:
    return " ".join(text.split())


def _readable_text(path: Path) -> str:
    """What a reader or a search could find in a file: page text for HTML (plus the markup),
    cell sources for notebooks (JSON escapes backslashes and quotes), the raw text otherwise."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".html":
        return _normalize(BeautifulSoup(raw, "html.parser").get_text(" ")) + "\n" + _normalize(raw)
    if path.suffix == ".ipynb":
        cells = json.loads(raw)["cells"]
        return _normalize(" ".join("".join(c["source"]) for c in cells)) + "\n" + _normalize(raw)
    return _normalize(raw)


def _rendered_solutions(full_html: Path) -> tuple[list[str], dict[str, str]]:
    """The rendered text of each solution in the full edition, and each page's text without them."""
    texts, rest = [], {}
    for page in sorted((full_html / "book").glob("*.html")):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        for node in soup.select("div.solution"):
            body = node.select_one("section") or node
            texts.append(_normalize(body.get_text(" ")))
            node.decompose()
        rest[page.name] = _normalize(soup.get_text(" "))
    return texts, rest


def fingerprints(full_html: Path) -> dict[str, list[str]]:
    """For each solution, text that appears in it and nowhere else in the book.

    Source lines of the block (without its fence and options), and sentences of its rendered
    text; anything that also occurs outside the solutions (a formula quoted in the exercise, say)
    is dropped, since finding it proves nothing.
    """
    student_sources = " ".join(_normalize(_strip_notebook(p.read_text())[0] if p.suffix == ".ipynb"
                                          else split_solutions(p.read_text())[0]) for p in book_pages())
    rendered, rest = _rendered_solutions(full_html)
    outside = student_sources + " " + " ".join(rest.values())
    result = {}
    all_solutions = solutions()
    if len(rendered) != len(all_solutions):
        raise SystemExit(f"the full edition shows {len(rendered)} solutions, the sources hold "
                         f"{len(all_solutions)}: build it first (make book-check)")
    for solution, text in zip(all_solutions, rendered):
        body = [line for line in solution.source.splitlines()[1:-1] if not line.startswith(":")]
        candidates = [_normalize(line) for line in body]
        candidates += [_normalize(s) for s in re.split(r"(?<=[.;:?])\s+", text)]
        result[solution.where] = sorted({c for c in candidates
                                         if len(c) >= MIN_FINGERPRINT and c not in outside})
    return result


def find_leaks(tree: Path, prints: dict[str, list[str]]) -> dict[str, list[str]]:
    """Solutions (by name) whose fingerprints occur in some file under ``tree``, with the files."""
    leaks: dict[str, list[str]] = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        text = _readable_text(path)
        for where, marks in prints.items():
            if any(mark in text for mark in marks):
                leaks.setdefault(where, []).append(str(path.relative_to(tree)))
    return leaks


def check(full_html: Path, student: Path) -> int:
    prints = fingerprints(full_html)
    problems = [f"no fingerprint for the solution in {where}" for where, marks in prints.items() if not marks]
    seen_in_full = find_leaks(full_html, prints)
    problems += [f"the check does not find the solution in {where} in the full edition"
                 for where in prints if where not in seen_in_full]
    leaks = find_leaks(student, prints)
    problems += [f"the solution in {where} appears in the student edition: {', '.join(files[:5])}"
                 for where, files in leaks.items()]
    exercises_full = sum(len(BeautifulSoup(p.read_text(), "html.parser").select("div.exercise"))
                         for p in (full_html / "book").glob("*.html"))
    exercises_student = sum(len(BeautifulSoup(p.read_text(), "html.parser").select("div.exercise"))
                            for p in student.rglob("book/*.html"))
    if exercises_student != exercises_full:
        problems.append(f"the student edition shows {exercises_student} exercises, the full edition {exercises_full}")
    n_files = sum(1 for p in student.rglob("*") if p.is_file())
    for problem in problems:
        print("FAILED:", problem)
    print(f"student edition: {len(prints)} solutions ({sum(map(len, prints.values()))} fingerprints), "
          f"each found in the full edition; searched {n_files} files under {student}: "
          f"{len(leaks)} solutions found there; {exercises_student} exercises kept")
    return 1 if problems else 0


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "sources":
        write_sources(Path(paths[0]))
    elif command == "check":
        sys.exit(check(Path(paths[0]), Path(paths[1])))
    else:
        sys.exit(__doc__)
