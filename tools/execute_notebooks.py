"""Re-execute notebooks in place, one after another (make execute).

Usage: python tools/execute_notebooks.py book/*.ipynb

Each notebook runs in a fresh kernel started in its own folder, as nbval runs it. No execution
timestamps are written into the cell metadata (nbclient records them by default), so that a
re-run changes a notebook only where an output changed.
"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        execute(Path(name))
        print(f"executed {name}", flush=True)
