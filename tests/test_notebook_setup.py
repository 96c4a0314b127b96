"""Every chapter's setup cell writes nothing to stderr, whatever state the machine's caches are in.

nbval fails a cell that writes to stderr when its committed output has no stderr. Some libraries
print notices that depend on the machine's state rather than on the code: ArviZ 0.23 warns of its
1.0 refactor on the first import of each day (it keeps a date stamp in the user's cache
directory). A setup cell that lets such a notice through passes or fails depending on the date, so
each setup cell is run here with an empty cache directory, where the notice always fires.
"""

import json
import os
import pathlib
import subprocess
import sys

import matplotlib
import pytest

BOOK = pathlib.Path(__file__).resolve().parent.parent / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def setup_cell(notebook: pathlib.Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_setup_cell_is_silent_with_an_empty_cache(notebook, tmp_path):
    env = dict(
        os.environ,
        XDG_CACHE_HOME=str(tmp_path),  # ArviZ's daily stamp lives here (platformdirs)
        MPLCONFIGDIR=matplotlib.get_cachedir(),  # keep matplotlib's built font cache
        MPLBACKEND="Agg",
    )
    run = subprocess.run([sys.executable, "-c", setup_cell(notebook)], env=env, cwd=BOOK,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
