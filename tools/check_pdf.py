"""Check a PDF edition of the book against its sources (``make pdf-check`` runs this).

Usage (from the repository root):

    python tools/check_pdf.py _build/pdf/lmmnotes.pdf --latex-dir _build/pdf-full/_build/latex
    python tools/check_pdf.py _build/pdf/lmmnotes-student.pdf --student --latex-dir ...

It reads the PDF's text with poppler's ``pdftotext`` (its named destinations with ``pdfinfo``,
its images with ``pdfimages``) and fails unless

- every page of ``_toc.yml`` is a chapter of the PDF, with its title, in the contents' order;
- each chapter shows its exercises as the HTML numbers them, "Exercise 4.2" (chapter and
  position), exactly the ones its source holds, and no exercise or theorem is numbered "4.8.2";
- the full edition shows "Solution to Exercise 4.2" for every solution in the sources, the
  student edition none;
- no "??" (LaTeX's unresolved reference) appears anywhere, and the LaTeX log reports no undefined
  reference or citation and no character missing from the fonts;
- each chapter holds as many images as its notebook has image outputs and Markdown images;
- every glossary term (book/glossary.md) is in the glossary chapter, and every bibliography entry
  (references.bib: all of them if book/references.md lists ``:all:``, else the cited ones) is in
  the bibliography, found by its title;
- no line of code runs off the page: no line set in the code blocks' monospaced font ends
  beyond the text column (pdftotext's word boxes), nor does the LaTeX log report an overfull line
  inside a code block; and nothing at all lies beyond the paper's right edge.
Lines wider than the text column that are not code (a wide equation) are listed, not failed.

Everything expected is derived from the sources, so a new chapter, exercise, figure, term or
reference is checked without editing this file. Text is compared by its letters and digits
only (``skeleton``), so line breaks, hyphenation, ligatures and quotes do not matter.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# A MyST directive's opening fence, as tools/student_edition.py reads them.
DIRECTIVE = re.compile(r"^ {0,3}(`{3,}|~{3,}|:{3,})\{(?P<name>[a-z-]+)\}(?P<arg>.*)$")
CODE_ENVIRONMENTS = ("sphinxVerbatim", "sphinxVerbatimInput", "sphinxVerbatimOutput", "sphinxalltt",
                     "Verbatim", "sphinxVerbatimintable")
MARGIN_TOLERANCE = 1.0  # pt: pdftotext's boxes round; LaTeX's own tolerance is 0.1pt


def skeleton(text: str) -> str:
    """Lower-case letters and digits only, after Unicode compatibility folding (ligatures)."""
    return re.sub(r"[^0-9a-z]", "", unicodedata.normalize("NFKC", text).lower())


# ---- what the sources say the book holds ------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Page:
    """One entry of _toc.yml: its document, title, and chapter number (None if unnumbered)."""

    docname: str
    title: str
    chapter: int | None
    exercises: int  # numbered exercises
    solutions: tuple[str, ...]  # labels of the exercises whose solutions the page holds
    images: int


def _markdown_of(path: Path) -> tuple[str, list[dict]]:
    """A page's Markdown (all Markdown cells of a notebook) and its code cells."""
    if path.suffix != ".ipynb":
        return path.read_text(), []
    cells = json.loads(path.read_text())["cells"]
    markdown = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return markdown, [c for c in cells if c["cell_type"] == "code"]


def _source(root: Path, docname: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (root / f"{docname}{suffix}").exists():
            return root / f"{docname}{suffix}"
    raise SystemExit(f"_toc.yml names {docname}, which has no .ipynb or .md file")


def directives(markdown: str, name: str) -> list[tuple[str, list[str]]]:
    """The ``{name}`` directives of MyST Markdown: (argument, option lines) for each."""
    found = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = DIRECTIVE.match(line)
        if m and m["name"] == name:
            options = []
            for following in lines[i + 1:]:
                if not following.startswith(":") or DIRECTIVE.match(following):
                    break
                options.append(following)
            found.append((m["arg"].strip(), options))
    return found


def read_page(root: Path, docname: str, chapter: int | None) -> Page:
    markdown, code_cells = _markdown_of(_source(root, docname))
    title = next((line[2:].strip() for line in markdown.splitlines() if line.startswith("# ")), docname)
    exercises = [options for _, options in directives(markdown, "exercise")]
    images = sum(1 for cell in code_cells for output in cell.get("outputs", [])
                 if any(kind.startswith("image/") for kind in output.get("data", {})))
    images += len(re.findall(r"!\[[^\]]*\]\(", markdown))
    images += len(directives(markdown, "figure")) + len(directives(markdown, "image"))
    return Page(docname=docname, title=title, chapter=chapter,
                exercises=sum(1 for options in exercises if not any(o.startswith(":nonumber:") for o in options)),
                solutions=tuple(arg.split()[0] for arg, _ in directives(markdown, "solution") if arg),
                images=images)


def book_pages(root: Path = ROOT) -> list[Page]:
    """The chapters and back matter in _toc.yml's order (the root page, the preface, left out),
    numbered as the HTML numbers them: consecutively through the numbered parts."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages, number = [], 0
    for part in toc.get("parts", [{"chapters": toc.get("chapters", []), "numbered": True}]):
        for entry in part.get("chapters", []):
            chapter = None
            if part.get("numbered"):
                number += 1
                chapter = number
            pages.append(read_page(root, entry["file"], chapter))
    return pages


def exercise_labels(root: Path = ROOT) -> dict[str, tuple[int | None, int]]:
    """Each numbered exercise's label -> (chapter, position), as sphinx-exercise numbers them."""
    labels = {}
    for page in book_pages(root):
        markdown, _ = _markdown_of(_source(root, page.docname))
        k = 0
        for _, options in directives(markdown, "exercise"):
            if any(o.startswith(":nonumber:") for o in options):
                continue
            k += 1
            label = next((o.split(":", 2)[2].strip() for o in options if o.startswith(":label:")), None)
            if label:
                labels[label] = (page.chapter, k)
    return labels


def glossary_terms(root: Path = ROOT) -> list[str]:
    """The terms of the ``{glossary}`` blocks of book/glossary.md (a term is an unindented line)."""
    terms = []
    path = root / "book" / "glossary.md"
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = DIRECTIVE.match(line)
        if not (m and m["name"] == "glossary"):
            continue
        fence = m.group(1)
        for body in lines[i + 1:]:
            if body.strip() == fence:
                break
            if body and not body[0].isspace() and not body.startswith(":"):
                terms.append(body.strip())
    return terms


def bibliography_titles(root: Path = ROOT) -> dict[str, str]:
    """key -> title of the entries the bibliography lists: all of references.bib when a
    ``{bibliography}`` directive has ``:all:``, otherwise the keys cited in the pages."""
    from pybtex.database import parse_file

    entries = parse_file(str(root / "references.bib")).entries
    sources = [_source(root, p.docname) for p in book_pages(root)] + [root / "book" / "intro.md"]
    texts = [_markdown_of(s)[0] for s in sources]
    if any(":all:" in options for text in texts for _, options in
           [(a, "\n".join(o)) for a, o in directives(text, "bibliography")]):
        keys = list(entries.keys())
    else:
        cited = re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", "\n".join(texts))
        keys = sorted({key.strip() for group in cited for key in group.split(",")})
    return {key: entries[key].fields.get("title", key).replace("{", "").replace("}", "") for key in keys}


# ---- what the PDF holds -----------------------------------------------------------------------

def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def pdf_pages(pdf: Path) -> list[str]:
    """The text of each page (pdftotext puts a form feed after each)."""
    return _run("pdftotext", "-enc", "UTF-8", str(pdf), "-").split("\f")[:-1]


def chapter_starts(pdf: Path) -> list[int]:
    """First pages (1-based) of the chapters after the contents, in order: the hyperref
    destinations chapter.N (numbered) and chapter*.N (unnumbered) that pdfinfo lists."""
    starts = []
    for line in _run("pdfinfo", "-dests", str(pdf)).splitlines():
        m = re.match(r'\s*(\d+)\s+\[.*\]\s+"chapter\*?\.\d+"', line)
        if m:
            starts.append(int(m.group(1)))
    first_part = re.search(r'^\s*(\d+)\s+\[.*\]\s+"part\.1"', _run("pdfinfo", "-dests", str(pdf)), re.M)
    if first_part:  # the contents (and any front matter) come before the first part
        starts = [s for s in starts if s >= int(first_part.group(1))]
    return sorted(starts)


def image_pages(pdf: Path) -> list[int]:
    """The page of each image drawn in the PDF (soft masks are not images of their own)."""
    pages = []
    for line in _run("pdfimages", "-list", str(pdf)).splitlines()[2:]:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "image":
            pages.append(int(fields[0]))
    return pages


@dataclass(frozen=True, kw_only=True)
class WideLine:
    """A line of a page that ends beyond the text column."""

    page: int
    right: float  # where its last word ends, pt from the left edge of the paper
    column: float  # the text column's right edge
    paper: float  # the paper's width
    text: str
    code: bool  # set in the monospaced font of code blocks


def wide_lines(pdf: Path) -> list[WideLine]:
    """Lines that end beyond the text column, from pdftotext's word boxes.

    The column's right edge is the rightmost end most pages share. A line is code when every
    word on it is as wide as its characters in the code blocks' monospaced font (the width per
    character that most long words of the book have: the code blocks' font)."""
    words_of_pages = []
    for chunk in _run("pdftotext", "-bbox", str(pdf), "-").split("<page ")[1:]:
        paper = float(re.search(r'width="([\d.]+)"', chunk).group(1))
        words = [(float(x0), float(y0), float(x1), html.unescape(w)) for x0, y0, x1, w in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', chunk)]
        words_of_pages.append((paper, words))
    rights = [round(max(w[2] for w in words)) for _, words in words_of_pages if words]
    column = max(set(rights), key=rights.count) if rights else 0
    ratios = [round((x1 - x0) / len(w), 2) for _, words in words_of_pages for x0, _, x1, w in words if len(w) >= 6]
    mono = max(set(ratios), key=ratios.count) if ratios else 0

    def monospaced(word) -> bool:
        x0, _, x1, w = word
        return abs((x1 - x0) / max(len(w), 1) - mono) <= 0.03 * mono

    found = {}
    for number, (paper, words) in enumerate(words_of_pages, start=1):
        for y in sorted({round(w[1]) for w in words if w[2] > column + MARGIN_TOLERANCE}):
            line = sorted((w for w in words if abs(w[1] - y) < 1.5), key=lambda w: w[0])
            wide = WideLine(page=number, right=max(w[2] for w in line), column=column, paper=paper,
                            text=" ".join(w[3] for w in line), code=all(map(monospaced, line)))
            found.setdefault((number, wide.text), wide)
    return list(found.values())


@dataclass(frozen=True, kw_only=True)
class Overfull:
    line: int  # the .tex line LaTeX names
    points: float
    in_code: bool


def overfull_lines(log: str, tex: str) -> list[Overfull]:
    """LaTeX's "Overfull \\hbox" reports, each with whether its line is inside a code block."""
    inside, depth = [], 0
    begin = re.compile(r"\\begin\{(%s)\}" % "|".join(CODE_ENVIRONMENTS))
    end = re.compile(r"\\end\{(%s)\}" % "|".join(CODE_ENVIRONMENTS))
    for line in tex.splitlines():
        depth += len(begin.findall(line))
        inside.append(depth > 0)
        depth -= len(end.findall(line))
    found = []
    for m in re.finditer(r"Overfull \\hbox \(([\d.]+)pt too wide\) (?:in paragraph at lines (\d+)--(\d+)|"
                         r"detected at line (\d+)|in alignment at lines (\d+)--(\d+))", log):
        numbers = [int(g) for g in m.groups()[1:] if g]
        in_code = any(0 < n <= len(inside) and inside[n - 1] for n in range(numbers[0], numbers[-1] + 1))
        found.append(Overfull(line=numbers[0], points=float(m.group(1)), in_code=in_code))
    return found


# An exercise's or solution's title: a line of its own, or followed by the exercise's own title.
EXERCISE_TITLE = re.compile(r"^(Solution to )?Exercise (\d+(?:\.\d+)+)(?:[ \t]*$| \()", re.M)
# Exercises, and sphinx-proof's numbered environments, are numbered "chapter.k" as in the HTML.
EXERCISE_NUMBER = re.compile(r"(?:Exercise|Theorem|Lemma|Definition|Proposition|Corollary|Algorithm|Example|"
                             r"Remark|Conjecture|Axiom|Criterion|Observation|Property|Assumption|Hypothesis) "
                             r"(\d+(?:\.\d+)+)")


def check(pdf: Path, *, student: bool, latex_dir: Path | None, root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    texts = pdf_pages(pdf)
    whole = "\n".join(texts)
    pages = book_pages(root)
    labels = exercise_labels(root)

    if "??" in whole:
        where = sorted({i for i, t in enumerate(texts, 1) if "??" in t})
        problems.append(f'"??" (an unresolved reference) on page(s) {where}')

    starts = chapter_starts(pdf)
    if len(starts) != len(pages):
        problems.append(f"the PDF has {len(starts)} chapters after the contents, _toc.yml {len(pages)}")
    ends = starts[1:] + [len(texts) + 1]
    images = image_pages(pdf)
    for page, start, end in zip(pages, starts, ends):
        text = "\n".join(texts[start - 1:end - 1])
        name = f"chapter {page.chapter}" if page.chapter else page.docname
        if skeleton(page.title) not in skeleton(texts[start - 1]):
            problems.append(f"{name}: its title {page.title!r} is not on its first page ({start})")
        numbers = [(sol, num) for sol, num in EXERCISE_TITLE.findall(text)]
        shown = sorted({num for sol, num in numbers if not sol}, key=lambda n: [int(p) for p in n.split(".")])
        expected = [f"{page.chapter}.{k}" for k in range(1, page.exercises + 1)] if page.chapter else []
        if page.exercises and not page.chapter:
            expected = [f"?.{k}" for k in range(1, page.exercises + 1)]
        if shown != expected:
            problems.append(f"{name} (pages {start}-{end - 1}): exercises {shown}, expected {expected}")
        solutions = {num for sol, num in numbers if sol}
        wanted = set() if student else {".".join(map(str, labels[s])) for s in page.solutions if s in labels}
        if solutions != wanted:
            problems.append(f"{name}: solutions to exercises {sorted(solutions)} shown, "
                            f"expected {sorted(wanted)}")
        count = sum(start <= p < end for p in images)
        if count != page.images:
            problems.append(f"{name}: {count} images in pages {start}-{end - 1}, its source has {page.images}")
        if page.docname.endswith("glossary"):
            body = skeleton(text)
            missing = [t for t in glossary_terms(root) if skeleton(re.sub(r"\$[^$]*\$", "", t)) not in body]
            if missing:
                problems.append(f"glossary: terms missing from the PDF: {missing}")
    deep = [num for num in EXERCISE_NUMBER.findall(whole) if num.count(".") > 1]
    if deep:
        problems.append(f"exercises or theorems numbered by section, not as in the HTML: {sorted(set(deep))}")

    if starts:
        tail = skeleton("\n".join(texts[starts[-1] - 1:]))
        missing = [key for key, title in bibliography_titles(root).items() if skeleton(title) not in tail]
        if missing:
            problems.append(f"bibliography entries missing from the PDF: {missing}")

    for line in wide_lines(pdf):
        where = f"page {line.page}: {line.text[:50]!r}"
        if line.code:
            problems.append(f"{where}: a code line runs {line.right - line.column:.0f}pt past the text column")
        elif line.right > line.paper:
            problems.append(f"{where}: runs off the paper (ends at {line.right:.0f}pt of {line.paper:.0f}pt)")
        else:
            print(f"note: {where}: ends {line.right - line.column:.0f}pt beyond the text column (not code)")

    if latex_dir is not None:
        log_path = next(latex_dir.glob("*.log"), None)
        tex_path = log_path.with_suffix(".tex") if log_path else None
        if log_path is None or not tex_path.exists():
            problems.append(f"no LaTeX log and source in {latex_dir}")
        else:
            log = log_path.read_text(errors="replace")
            for m in re.finditer(r"LaTeX Warning: (Reference|Citation) `([^']*)' .*undefined", log):
                problems.append(f"LaTeX: {m.group(1).lower()} {m.group(2)!r} undefined")
            for glyph in sorted(set(re.findall(r"Missing character: There is no (.+?) in font", log))):
                problems.append(f"LaTeX: no glyph for {glyph} in the fonts, so it is missing from the PDF")
            for box in overfull_lines(log, tex_path.read_text(errors="replace")):
                if box.in_code:
                    problems.append(f"a code line runs {box.points:.0f}pt past the text column "
                                    f"({tex_path.name}, line {box.line})")
                else:
                    print(f"note: {tex_path.name} line {box.line}: {box.points:.1f}pt too wide (not code)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pdf", type=Path)
    parser.add_argument("--student", action="store_true", help="the student edition: no solutions")
    parser.add_argument("--latex-dir", type=Path, help="the LaTeX build (its .log and .tex)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the sources (default: this repository)")
    args = parser.parse_args(argv)
    problems = check(args.pdf, student=args.student, latex_dir=args.latex_dir, root=args.root)
    for problem in problems:
        print("FAILED:", problem)
    pages = len(pdf_pages(args.pdf))
    print(f"{args.pdf}: {pages} pages; {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
