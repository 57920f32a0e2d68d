"""The README's "Write your own loss" example: its formula, and `embedlab fit` with it on digits."""

from __future__ import annotations

import importlib
import math
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from embedlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> tuple[str, list[str]]:
    """The section's Python block and its `embedlab fit` command (as argv)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Write your own loss", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    command = re.search(r"```bash\n(.*?)```", section, re.S)
    assert code and command, "README: the section needs a python and a bash block"
    argv = shlex.split(command.group(1).strip())
    assert argv[:2] == ["PYTHONPATH=.", "embedlab"], argv
    return code.group(1), argv[2:]


@pytest.fixture
def mylosses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    code, _ = readme_example()
    (tmp_path / "mylosses.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mylosses", None)
    return importlib.import_module("mylosses")


def lifted_reference(x: torch.Tensor, y: list[int], alpha: float) -> torch.Tensor:
    """Oh Song et al.'s formula, one positive pair at a time."""
    n = len(y)
    d = [[torch.linalg.vector_norm(x[i] - x[j]) for j in range(n)] for i in range(n)]
    terms = []
    for i in range(n):
        for j in range(i + 1, n):
            if y[i] != y[j]:
                continue
            s = sum(torch.exp(alpha - d[i][k]) for k in range(n) if y[k] != y[i])
            s = s + sum(torch.exp(alpha - d[j][m]) for m in range(n) if y[m] != y[j])
            terms.append(torch.clamp(torch.log(s) + d[i][j], min=0) ** 2)
    return sum(terms) / (2 * len(terms))


def test_the_example_is_its_formula(mylosses) -> None:  # type: ignore[no-untyped-def]
    labels = [0, 0, 1, 1, 1, 2, 2, 3]
    x = (0.4 * torch.randn(8, 5, generator=torch.Generator().manual_seed(0))).double()
    x.requires_grad_()
    loss = mylosses.LiftedStructureLoss(margin=1.0)
    ours, expected = loss(x, torch.tensor(labels)), lifted_reference(x, labels, 1.0)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x)[0], torch.autograd.grad(expected, x)[0], atol=1e-6, rtol=1e-6
    )


@pytest.mark.slow
def test_the_readme_command_trains_with_it(
    mylosses,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    _, argv = readme_example()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("EMBEDLAB_OUTPUT_ROOT", str(tmp_path / "runs"))
    budget = [
        "--trainer.max_epochs=1",
        "--data.batches_per_epoch=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
    ]
    code = main([*argv, *budget])
    assert code in (0, None)
    (csv,) = (tmp_path / "runs").rglob("metrics.csv")
    values = pd.read_csv(csv)["train/LiftedStructureLoss"].dropna()
    assert len(values) >= 2 and all(math.isfinite(v) for v in values)
