"""The README's Layout section lists every module and package of ``src/embedlab`` and nothing
that is not there: a newcomer finds a file from it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "embedlab"


def listed() -> set[str]:
    """The names of the ``src/embedlab/`` block of the README's Layout section."""
    section = ROOT.joinpath("README.md").read_text().split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    names: set[str] = set()
    inside = False
    for line in block.splitlines():
        if line.startswith("src/embedlab/"):
            inside = True
            continue
        if inside and not line.startswith("  "):
            break
        if inside:  # "  a.py, b.py   what they do": the names before the description
            head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            names.update(n.strip() for n in head.split(","))
    return names


def on_disk() -> set[str]:
    """The modules (``x.py``) and packages (``x/``) directly in ``src/embedlab``."""
    modules = {p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    packages = {f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def test_the_layout_block_is_read() -> None:
    names = listed()
    assert {"cli.py", "commands/", "losses/"} <= names, names


def test_layout_lists_every_module_and_only_those() -> None:
    names, files = listed(), on_disk()
    assert not files - names, f"not in the README's Layout: {sorted(files - names)}"
    assert not names - files, (
        f"in the README's Layout but not in src/embedlab: {sorted(names - files)}"
    )
