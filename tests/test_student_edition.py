"""tools/student_edition.py: the solutions leave the student edition, the exercises stay."""

import importlib.util
import pathlib
import sys

import pytest

TOOLS = pathlib.Path(__file__).resolve().parent.parent / "tools"


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


student_edition = _tool("student_edition")

EXERCISE = "```{exercise}\n:label: ex-a\n\nShow that 1 + 1 = 2.\n```\n"
SOLUTION = "```{solution} ex-a\n:class: dropdown\n\nCount: one, two.\n```\n"


def test_solution_blocks_are_removed_and_exercises_kept():
    text = "# Chapter\n\n" + EXERCISE + "\n" + SOLUTION + "\nAfter.\n"
    kept, removed = student_edition.split_solutions(text)
    assert removed == [SOLUTION]
    assert kept == "# Chapter\n\n" + EXERCISE + "\n" + "\nAfter.\n"


def test_a_longer_fence_is_closed_only_by_a_fence_as_long():
    solution = "````{solution} ex-a\nCode:\n```python\nprint(1)\n```\nDone.\n````\n"
    kept, removed = student_edition.split_solutions(EXERCISE + solution + "Tail\n")
    assert removed == [solution]
    assert kept == EXERCISE + "Tail\n"


def test_colon_fenced_solutions_are_removed():
    solution = ":::{solution} ex-a\nText\n:::\n"
    kept, removed = student_edition.split_solutions("A\n" + solution + "B\n")
    assert (kept, removed) == ("A\nB\n", [solution])


def test_an_unclosed_solution_is_an_error():
    with pytest.raises(ValueError, match="unclosed"):
        student_edition.split_solutions("```{solution} ex-a\nno end\n")


def test_the_book_has_solutions_to_remove():
    found = student_edition.solutions()
    assert len(found) >= 20
    assert all(s.source.lstrip().startswith("```{solution}") for s in found)
