"""Every chapter's setup cell writes nothing to stderr, whatever state the machine's caches are in.

nbval fails a cell that writes to stderr when its committed output has no stderr. Some libraries
print notices that depend on the machine's state rather than on the code: ArviZ 0.23 warns of its
1.0 refactor on the first import of each day (it keeps a date stamp in the user's cache
directory). A setup cell that lets such a notice through passes or fails depending on the date, so
each setup cell is run here with an empty cache directory, where the notice always fires (the
first test checks that it does, or the others would pass without testing anything).
"""

import json
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import matplotlib
import matplotlib.font_manager  # noqa: F401  builds matplotlib's font cache, if missing, here
import pytest
from IPython.core.inputtransformer2 import TransformerManager

BOOK = pathlib.Path(__file__).resolve().parent.parent / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
ARVIZ_NOTICE = "ArviZ is undergoing a major refactor"


def setup_cell(notebook: pathlib.Path) -> str:
    """The first code cell, as plain Python (IPython's magics translated)."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    return TransformerManager().transform_cell(source)


def _run(code: str, cache: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        XDG_CACHE_HOME=str(cache),  # where ArviZ keeps its daily stamp (platformdirs, on Linux)
        MPLCONFIGDIR=matplotlib.get_cachedir(),  # matplotlib's font cache, built above
        MPLBACKEND="Agg",
    )
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=BOOK, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each setup cell, and a bare ``import arviz``, in fresh interpreters run side by side."""
    codes = {"import arviz": "import arviz"} | {notebook.stem: setup_cell(notebook) for notebook in NOTEBOOKS}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {name: pool.submit(_run, code, tmp_path_factory.mktemp("cache")) for name, code in codes.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="platformdirs reads XDG_CACHE_HOME on Linux only")
def test_arviz_prints_its_notice_with_an_empty_cache(runs):
    assert ARVIZ_NOTICE in runs["import arviz"].stderr


@pytest.mark.parametrize("notebook", [p.stem for p in NOTEBOOKS])
def test_the_setup_cell_is_silent_with_an_empty_cache(runs, notebook):
    run = runs[notebook]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
