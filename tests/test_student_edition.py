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
split = student_edition.split_solutions

EXERCISE = "```{exercise}\n:label: ex-a\n\nShow that 1 + 1 = 2.\n```\n"
SOLUTION = "```{solution} ex-a\n:class: dropdown\n\nCount: one, two.\n```\n"


def test_solution_blocks_are_removed_and_exercises_kept():
    text = "# Chapter\n\n" + EXERCISE + "\n" + SOLUTION + "\nAfter.\n"
    assert split(text) == ("# Chapter\n\n" + EXERCISE + "\n\nAfter.\n", [SOLUTION])


def test_a_longer_fence_is_closed_only_by_a_fence_as_long():
    solution = "````{solution} ex-a\nCode:\n```python\nprint(1)\n```\nDone.\n````\n"
    assert split(EXERCISE + solution + "Tail\n") == (EXERCISE + "Tail\n", [solution])


def test_an_indented_code_fence_inside_a_solution_does_not_end_it():
    solution = "````{solution} ex-a\n1. A list item with code:\n\n    ```python\n    x = 1\n    ```\n\n   Still the solution.\n````\n"
    assert split(solution + "Tail\n") == ("Tail\n", [solution])


@pytest.mark.parametrize("fence", [":::", "~~~"])
def test_colon_and_tilde_fences(fence):
    solution = f"{fence}{{solution}} ex-a\nText\n{fence}\n"
    assert split("A\n" + solution + "B\n") == ("A\nB\n", [solution])


def test_a_solution_inside_another_directive_is_found():
    text = "::::{admonition} Try it\nWork it out.\n:::{solution} ex-a\nAnswer.\n:::\n::::\nAfter\n"
    assert split(text) == ("::::{admonition} Try it\nWork it out.\n::::\nAfter\n", [":::{solution} ex-a\nAnswer.\n:::\n"])


def test_a_solution_shown_in_a_code_block_is_text_not_a_solution():
    example = "````markdown\n```{solution} ex-a\nAnswer.\n```\n````\n"
    assert split(example) == (example, [])


def test_a_fence_indented_four_spaces_is_not_a_fence():
    text = "    ```{solution} ex-a\n    code, not a directive\n"
    assert split(text) == (text, [])


def test_unclosed_and_gated_solutions_are_errors():
    with pytest.raises(ValueError, match="unclosed"):
        split("```{solution} ex-a\nno end\n")
    with pytest.raises(ValueError, match="gated"):
        split("```{solution-start} ex-a\n```\nAnswer\n```{solution-end}\n```\n")


def test_every_solution_of_the_book_is_removed_and_every_exercise_kept():
    """Counted independently of the parser: the book's pages written as text, one solution and one
    exercise per fence line that opens one."""
    pages = student_edition.book_pages()
    raw = "".join(page.read_text() for page in pages)
    n_solutions, n_exercises = raw.count("```{solution}"), raw.count("```{exercise}")
    stripped = [student_edition.strip_page(page) for page in pages]
    assert n_solutions == n_exercises > 0
    assert sum(len(blocks) for _, blocks in stripped) == n_solutions
    kept = "".join(text for text, _ in stripped)
    assert "```{solution}" not in kept and kept.count("```{exercise}") == n_exercises
