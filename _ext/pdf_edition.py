"""Sphinx extension: what the PDF edition (Sphinx's LaTeX builder) needs besides the HTML's setup.

- The MathJax macros of ``_config.yml`` (``mathjax3_config.tex.macros``: ``\\E``, ``\\Var``,
  ``\\Cov``, ...) become LaTeX definitions in the preamble, so one definition serves both builds.
- Exercises and theorems are numbered as in the HTML, chapter and position in the chapter
  ("Exercise 4.2", "Theorem 1.1"). sphinx-jupyterbook-latex sets ``numfig_secnum_depth = 2`` when
  the book has parts, which makes sphinx-exercise and sphinx-proof number them by chapter and
  section ("Exercise 4.8.2"); this renumbers them (not figures, tables and code blocks, which
  LaTeX numbers itself) after Sphinx has assigned the numbers, so titles and references agree.
  A reference to an exercise of another chapter, which sphinx-exercise leaves to Sphinx's
  ``\\ref`` (an undefined label, "??" in the PDF), gets the same number and a link to it.
- Parts of the table of contents that the HTML leaves unnumbered (the back matter: notation,
  glossary, references) are unnumbered chapters in the PDF too, not chapters 14, 15, ...
- The bibliography is the body of the References chapter, not a chapter of its own after it.
- A proof is set as paragraphs ("Proof. ..."), not as a box whose title bar would be empty.
- ``bbm.sty``, which the jupyterBook LaTeX class requires, is replaced by a small stand-in
  (``_ext/latex/bbm.sty``) instead of texlive-fonts-extra.

None of this changes the HTML build.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.fileutil import copy_asset_file
from sphinx_exercise.nodes import exercise_enumerable_node, exercise_latex_number_reference
from sphinx_proof.nodes import proof_node

LATEX_FILES = Path(__file__).parent / "latex"


def latex_macros(macros: dict) -> str:
    """LaTeX definitions of MathJax macros: ``{"E": "\\\\operatorname{E}"}`` or, with arguments,
    ``{"norm": ["\\\\lVert #1 \\\\rVert", 1]}``. Defined whether or not a package did already."""
    lines = []
    for name, body in macros.items():
        nargs = 0
        if isinstance(body, (list, tuple)):
            body, nargs = body[0], int(body[1])
        args = f"[{nargs}]" if nargs else ""
        lines.append(f"\\providecommand{{\\{name}}}{{}}\\renewcommand{{\\{name}}}{args}{{{body}}}")
    return "\n".join(lines)


# sphinxcontrib-bibtex's list of works goes to the end of the LaTeX document, where LaTeX's
# thebibliography starts a chapter of its own ("Bibliography") after the References chapter;
# without that heading the list is the References chapter's body, as in the HTML.
BIBLIOGRAPHY_IN_PLACE = r"""
\makeatletter
\renewenvironment{sphinxthebibliography}[1]
  {\begingroup\renewcommand{\chapter}[2]{}\let\@mkboth\@gobbletwo\begin{thebibliography}{#1}}
  {\end{thebibliography}\endgroup}
\makeatother
"""


def _add_preamble(app, config) -> None:
    macros = (config.mathjax3_config or {}).get("tex", {}).get("macros", {})
    elements = config.latex_elements
    elements["preamble"] = (elements.get("preamble", "")
                            + "\n% The book's math macros (from mathjax3_config in _config.yml)\n"
                            + latex_macros(macros) + "\n" + BIBLIOGRAPHY_IN_PLACE)


def _copy_stand_ins(app) -> None:
    if app.builder.format == "latex":
        for path in sorted(LATEX_FILES.glob("*.sty")):
            copy_asset_file(str(path), app.outdir)


def chapter_numbers(numbers: dict) -> dict:
    """Numbers (chapter, section, ..., n) of one kind (exercise, theorem, ...) renumbered as
    (chapter, k), k counting that kind in the chapter in order. ``numbers`` maps docname ->
    {id: tuple}."""
    by_chapter: dict = {}
    for docname, ids in numbers.items():
        for node_id, number in ids.items():
            by_chapter.setdefault(number[0], []).append((tuple(number), docname, node_id))
    result: dict = {docname: {} for docname in numbers}
    for chapter, entries in by_chapter.items():
        for k, (_, docname, node_id) in enumerate(sorted(entries), start=1):
            result[docname][node_id] = (chapter, k)
    return result


# Numbered by LaTeX's own counters in the PDF (Sphinx's numbers do not reach it).
LATEX_COUNTED = {"figure", "table", "code-block"}


def _renumber_by_chapter(app, env) -> list:
    if app.builder.format != "latex" or not app.config.numfig:
        return []
    kinds = {kind for figs in env.toc_fignumbers.values() for kind in figs} - LATEX_COUNTED
    for kind in sorted(kinds):
        numbers = {doc: figs[kind] for doc, figs in env.toc_fignumbers.items() if figs.get(kind)}
        for docname, ids in chapter_numbers(numbers).items():
            env.toc_fignumbers[docname][kind] = ids
    return []


def reference_text(title: str, number: tuple) -> str:
    """A ``{numref}`` title with the number filled in, in either of Sphinx's styles
    ("Exercise %s" or "Exercise {number}")."""
    number = ".".join(map(str, number))
    if "{number}" in title:
        return title.replace("{number}", number)
    return title.replace("%s", number, 1)


class ExerciseReferencesAcrossChapters(SphinxPostTransform):
    """``{numref}`` to an exercise on another page, in the LaTeX build: the number as in the
    exercise's title, linked to sphinx-exercise's ``exercise:<label>`` anchor."""

    default_priority = 23  # after sphinx-exercise's own reference transforms (5-22)
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        registry = getattr(self.env, "sphinx_exercise_registry", {})
        for node in list(self.document.findall(addnodes.number_reference)):
            label = node.get("refuri", "").rpartition("#")[2]
            entry = registry.get(label) if label and not node.get("refid") else None
            if entry is None or not isinstance(entry["node"], exercise_enumerable_node):
                continue
            node_id = entry["node"]["ids"][0]
            number = self.env.toc_fignumbers.get(entry["docname"], {}).get("exercise", {}).get(node_id)
            if number is None:
                continue
            reference = exercise_latex_number_reference(refid=label)
            reference += nodes.Text(reference_text(node.get("title", "%s"), number))
            node.replace_self(reference)


class UnnumberedParts(SphinxPostTransform):
    """In the LaTeX build, the parts that ``_toc.yml`` does not number (``numbered: false``)
    get unnumbered chapters: LaTeX's ``secnumdepth`` is set to -1 where the first one starts
    (they come last, as back matter). Runs after sphinx-jupyterbook-latex has turned the
    captions of the contents into parts (its transform has priority 700)."""

    default_priority = 701
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        site_map = getattr(self.app.config, "external_site_map", None)
        if site_map is None:
            return
        unnumbered = {tree.caption for tree in site_map.root.subtrees if tree.caption and not tree.numbered}
        for node in self.document.findall(addnodes.start_of_file):
            if node.get("docname") in unnumbered:
                node.insert(0, nodes.raw("", "\\setcounter{secnumdepth}{-1}\n", format="latex"))
                return


class ProofsAsText(SphinxPostTransform):
    """A ``{prf:proof}`` in the LaTeX build: its paragraphs (which begin with "Proof."), not a box
    with an empty title bar (sphinx-proof gives the box no title)."""

    default_priority = 700
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(nodes.admonition)):
            if ("proof" in node["classes"] and isinstance(node.parent, proof_node)
                    and not any(isinstance(child, nodes.title) for child in node.children)):
                node.replace_self(node.children[:])


def setup(app):
    app.add_post_transform(ProofsAsText)
    app.add_post_transform(UnnumberedParts)
    app.add_post_transform(ExerciseReferencesAcrossChapters)
    app.connect("config-inited", _add_preamble, priority=900)
    app.connect("builder-inited", _copy_stand_ins)
    # after Sphinx's toctree collector (priority 500) has assigned the figure numbers
    app.connect("env-get-updated", _renumber_by_chapter, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
