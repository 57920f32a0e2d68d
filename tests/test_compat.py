"""Every private name embedlab relies on (``embedlab.compat.PRIVATE_NAMES``) exists in the
installed Lightning, argparse, Optuna and wandb: an upgrade that renames one fails here."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from embedlab.compat import PRIVATE_NAMES


def exists(name: str) -> bool:
    module, _, path = name.partition(":")
    obj: object = importlib.import_module(module)
    for part in path.split("."):
        if not hasattr(obj, part):
            # an instance attribute: set as ``self.<part>`` by the class or one of its bases
            bases = obj.__mro__ if isinstance(obj, type) else ()
            pattern = re.compile(rf"self\.{re.escape(part)}\s*[:=]")
            return any(pattern.search(_source(c)) for c in bases if c is not object)
        obj = getattr(obj, part)
    return True


def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # a class defined in C
        return ""


@pytest.mark.parametrize("name", sorted(PRIVATE_NAMES))
def test_private_name_still_exists(name: str) -> None:
    assert exists(name), f"{name} is gone: {PRIVATE_NAMES[name]}"


def test_a_missing_name_is_seen() -> None:
    assert not exists("pytorch_lightning.cli:LightningCLI._no_such_method")
