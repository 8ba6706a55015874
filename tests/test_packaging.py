"""What `pip install .` ships: every package of the project, not only what an editable
install happens to find in the checkout."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_ships_in_the_distribution():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = set(config["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("models", "stages", "pipeline")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders - shipped == set()
