"""The PDF editions' helpers: tools/check_pdf.py (what make pdf-check expects, derived from the
sources), the PDF leak check of tools/student_edition.py, and the Sphinx extension
_ext/pdf_edition.py (exercise numbers and math macros for LaTeX). None of these tests needs TeX;
make pdf-check runs the checks on the real PDFs."""

import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_pdf = _load("check_pdf", ROOT / "tools" / "check_pdf.py")
student_edition = _load("student_edition", ROOT / "tools" / "student_edition.py")
pdf_edition = _load("pdf_edition", ROOT / "_ext" / "pdf_edition.py")


def test_skeleton_ignores_line_breaks_hyphenation_and_ligatures():
    assert check_pdf.skeleton("The \ufb01tted one-\nway model’s “mean”") == "thefittedonewaymodelsmean"


def _notebook(markdown, images=0):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": markdown.splitlines(keepends=True)}]
    outputs = [{"output_type": "display_data", "data": {"image/png": "AAAA", "text/plain": "<Figure>"},
                "metadata": {}}] * images
    cells.append({"cell_type": "code", "metadata": {}, "source": [], "outputs": outputs,
                  "execution_count": 1})
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def book(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: One\n    numbered: true\n    chapters:\n      - file: book/a\n      - file: book/b\n"
        "  - caption: Two\n    numbered: true\n    chapters:\n      - file: book/c\n"
        "  - caption: Back matter\n    chapters:\n      - file: book/glossary\n      - file: book/references\n")
    (tmp_path / "book" / "intro.md").write_text("# Preface\n\nAs {cite}`b2000` says.\n")
    exercise = "```{exercise}\n:label: ex-%s\n\nDo it.\n```\n\n```{solution} ex-%s\n:class: dropdown\n\nDone.\n```\n"
    (tmp_path / "book" / "a.ipynb").write_text(_notebook("# First\n\n" + exercise % ("a1", "a1")
                                                         + exercise % ("a2", "a2"), images=2))
    unnumbered = "```{exercise}\n:nonumber:\n\nWarm up.\n```\n"
    (tmp_path / "book" / "b.ipynb").write_text(_notebook("# Second\n\n![a picture](fig.png)\n\n" + unnumbered
                                                         + "```{exercise}\n:label: ex-b1\n\nOnly this.\n```\n"))
    (tmp_path / "book" / "c.md").write_text("# Third\n\nSee {cite:t}`a1990,c2010`.\n")
    (tmp_path / "book" / "glossary.md").write_text(
        "# Glossary\n\n```{glossary}\n:sorted:\n\nBLUP\n  A predictor.\n\n50:50 mixture\n  A mixture"
        " of $\\chi^2_0$ and\n  $\\chi^2_1$.\n```\n")
    (tmp_path / "book" / "references.md").write_text("# References\n\n```{bibliography}\n```\n")
    (tmp_path / "references.bib").write_text(
        "@book{a1990, title={An {A} Book}, author={A, B}, year={1990}}\n"
        "@book{b2000, title={The B Book}, author={B, C}, year={2000}}\n"
        "@book{c2010, title={The C Book}, author={C, D}, year={2010}}\n"
        "@book{z2020, title={Never Cited}, author={Z, Z}, year={2020}}\n")
    return tmp_path


def test_pages_are_numbered_through_the_numbered_parts_only(book):
    pages = check_pdf.book_pages(book)
    assert [(p.docname, p.title, p.chapter) for p in pages] == [
        ("book/a", "First", 1), ("book/b", "Second", 2), ("book/c", "Third", 3),
        ("book/glossary", "Glossary", None), ("book/references", "References", None)]


def test_exercises_solutions_and_images_are_counted_from_the_sources(book):
    a, b, c, *_ = check_pdf.book_pages(book)
    assert (a.exercises, a.solutions, a.images) == (2, ("ex-a1", "ex-a2"), 2)
    assert (b.exercises, b.solutions, b.images) == (1, (), 1)  # the :nonumber: one has no number
    assert (c.exercises, c.images) == (0, 0)
    assert check_pdf.exercise_labels(book) == {"ex-a1": (1, 1), "ex-a2": (1, 2), "ex-b1": (2, 1)}


def test_glossary_terms_are_the_unindented_lines_of_the_glossary_block(book):
    assert check_pdf.glossary_terms(book) == ["BLUP", "50:50 mixture"]


def test_the_bibliography_holds_the_cited_entries_or_all_of_them(book):
    assert check_pdf.bibliography_titles(book) == {"a1990": "An A Book", "b2000": "The B Book",
                                                   "c2010": "The C Book"}
    (book / "book" / "references.md").write_text("# References\n\n```{bibliography}\n:all:\n```\n")
    assert set(check_pdf.bibliography_titles(book)) == {"a1990", "b2000", "c2010", "z2020"}


TEX = "\n".join([
    r"\begin{document}",                                  # 1
    r"Some text.",                                         # 2
    r"\begin{sphinxVerbatimInput}",                        # 3
    r"\begin{sphinxVerbatim}[commandchars=\\\{\}]",        # 4
    r"x = 1  # a very long line",                          # 5
    r"\end{sphinxVerbatim}",                               # 6
    r"\end{sphinxVerbatimInput}",                          # 7
    r"\begin{equation*}",                                  # 8
    r"a = b",                                              # 9
    r"\end{equation*}",                                    # 10
])


def test_an_overfull_line_is_code_only_inside_a_code_block():
    log = ("Overfull \\hbox (12.5pt too wide) in paragraph at lines 5--5\n []\n"
           "Overfull \\hbox (93.06754pt too wide) detected at line 10\n"
           "Overfull \\hbox (1.9pt too wide) in paragraph at lines 1--2\n")
    found = check_pdf.overfull_lines(log, TEX)
    assert [(b.line, b.points, b.in_code) for b in found] == [(5, 12.5, True), (10, 93.06754, False),
                                                               (1, 1.9, False)]


def test_exercise_titles_are_told_from_references_in_the_text():
    text = "Exercise 4.1\nShow it.\nSolution to Exercise 4.1\nExercise 4.2 (Power)\nas Exercise 2.2 shows\n"
    assert check_pdf.EXERCISE_TITLE.findall(text) == [("", "4.1"), ("Solution to ", "4.1"), ("", "4.2")]
    assert check_pdf.EXERCISE_NUMBER.findall("see Exercise 4.8.2.") == ["4.8.2"]


def test_pdf_fingerprints_are_cut_at_math_and_roles_and_must_be_specific():
    prints = student_edition.Fingerprints(
        where="x", page="x", source_lines=("The estimate is $\\hat\\sigma^2$ and no more than that.",
                                           "Use {term}`shrinkage` to pull the group effects to zero.",
                                           "Each group mean moves toward the grand mean by a factor."),
        sentences=("Each group mean moves toward the grand mean by a factor.",
                   "With \\(n_i = n\\) the weights are all equal to one another."))
    assert student_edition.pdf_marks(prints) == {"topullthegroupeffectstozero",
                                                 "eachgroupmeanmovestowardthegrandmeanbyafactor",
                                                 "theweightsareallequaltooneanother"}
    # a piece that the book holds outside its solutions is no evidence of a leak
    assert student_edition.pdf_marks(prints, elsewhere="xxtopullthegroupeffectstozeroxx") == {
        "eachgroupmeanmovestowardthegrandmeanbyafactor", "theweightsareallequaltooneanother"}


def test_exercises_are_renumbered_by_chapter_in_their_order():
    numbers = {"book/a": {"ex-1": (1, 8, 2), "ex-0": (1, 8, 1), "ex-x": (1, 9, 1)},
               "book/b": {"ex-2": (2, 6, 1)}}
    assert pdf_edition.chapter_numbers(numbers) == {"book/a": {"ex-0": (1, 1), "ex-1": (1, 2), "ex-x": (1, 3)},
                                                    "book/b": {"ex-2": (2, 1)}}


def test_mathjax_macros_become_latex_definitions():
    latex = pdf_edition.latex_macros({"E": "\\operatorname{E}", "norm": ["\\lVert #1 \\rVert", 1]})
    assert latex.splitlines() == ["\\providecommand{\\E}{}\\renewcommand{\\E}{\\operatorname{E}}",
                                  "\\providecommand{\\norm}{}\\renewcommand{\\norm}[1]{\\lVert #1 \\rVert}"]


def test_the_books_macros_reach_latex():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    macros = config["mathjax3_config"]["tex"]["macros"]
    assert {"E", "Var", "Cov"} <= set(macros)
    assert "pdf_edition" in yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["local_extensions"]


@pytest.mark.parametrize("title, expected", [("Exercise %s", "Exercise 2.2"),
                                             ("Exercise {number}", "Exercise 2.2")])
def test_a_reference_to_an_exercise_in_another_chapter_gets_its_number(title, expected):
    assert pdf_edition.reference_text(title, (2, 2)) == expected
