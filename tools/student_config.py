"""Write a copy of the book's _config.yml with the exercise solutions hidden.

Usage: python tools/student_config.py _config.yml _build/student_config.yml

The student edition is the same book built with sphinx-exercise's ``hide_solutions``
switched on; everything else (paths, bibliography) is resolved from the repository root.
"""

import pathlib
import sys

import yaml


def main(source: str, target: str) -> None:
    config = yaml.safe_load(pathlib.Path(source).read_text())
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    config["title"] = f"{config['title']} (student edition)"
    out = pathlib.Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
