"""``embedlab data prepare``: datasets whose training set must be written from their official
release before it can be read (one module each, with a ``prepare(source, out, **options)``
hook returning counts of what it wrote).

* ``cuhksysu`` — :mod:`.cuhksysu`: CUHK-SYSU's person crops and test protocol.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from embedlab.data.prepare.cuhksysu import prepare_cuhksysu
from embedlab.errors import ConfigError

__all__ = ["PREPARERS", "prepare", "prepare_cuhksysu"]

#: dataset name → the module holding its ``prepare`` hook.
PREPARERS = {"cuhksysu": "embedlab.data.prepare.cuhksysu"}


def prepare(dataset: str, source: Path, out: Path, **options: Any) -> dict[str, int]:
    """Write ``dataset`` into ``out`` from its release in ``source``; returns the counts."""
    if dataset not in PREPARERS:
        choices = ", ".join(PREPARERS)
        raise ConfigError(f"dataset: {dataset!r} has no prepare step (choose from: {choices})")
    hook = importlib.import_module(PREPARERS[dataset]).prepare
    return dict(hook(source, out, **options))
