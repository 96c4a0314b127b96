"""tools/check_layout.py: every line of code in the book is at most 79 characters."""

import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_layout = _tool("check_layout")
PAGES = sorted([*ROOT.glob("book/*.ipynb"), *ROOT.glob("book/*.md")])


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_code_fits_the_column(path):
    found = check_layout.long_lines(path)
    assert not found, "lines of code longer than 79 characters:\n" + "\n".join(map(str, found))


def test_the_check_finds_long_lines(tmp_path):
    long, fits = "x = " + "1 + " * 18 + "1000", "y = 1"  # 80 and 5 characters
    markdown = (
        f"Text {long} is prose.\n\n```python\n{fits}\n{long}\n```\n\n"
        f"```{{exercise}}\n:label: ex\n\n```python\n{long}\n```\n{long}\n```\n\n"
        f":::{{note}}\n```\n{long}\n```\n:::\n\n```text\n{long}\n```\n"
    )
    notebook = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": markdown},
        {"cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "source": [f"{fits}\n", long],
         "outputs": [], "execution_count": None},
        {"cell_type": "raw", "metadata": {}, "source": long},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "planted.ipynb"
    path.write_text(json.dumps(notebook))
    found = [(p.cell, p.line, p.width) for p in check_layout.long_lines(path)]
    # markdown: the python block (line 5), the block inside the exercise (line 12) and the bare
    # block inside the note (line 19); not the prose, nor the line after the inner block (line
    # 14, Markdown of the exercise), nor the printed output in the text block (line 24). Code
    # cell 1, line 2 (hidden cells count). Not the raw cell.
    assert found == [(0, 5, 80), (0, 12, 80), (0, 19, 80), (1, 2, 80)]
    page = tmp_path / "page.md"
    page.write_text(markdown)
    assert [p.line for p in check_layout.long_lines(page)] == [5, 12, 19]
    assert check_layout.long_lines(path, max_width=80) == []
