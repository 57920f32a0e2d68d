"""The README's "Extending embedlab" section: a dataset, a loss and a metric from the user's own
modules plug in by class_path, and one `embedlab fit` epoch logs the metric on val and test."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from embedlab.cli import main
from fake_datasets import write_image

ROOT = Path(__file__).resolve().parents[1]


def python_block(section: str) -> str:
    """The first ```python block after the heading ``section`` of the README."""
    text = (ROOT / "README.md").read_text().split(section, 1)[1]
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, f"README: no python block after {section!r}"
    return found.group(1)


def extending_command() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Extending embedlab", 1)[1]
    found = re.search(r"```bash\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert found, "README: Extending embedlab needs a bash block"
    argv = shlex.split(found.group(1).strip())
    assert argv[:2] == ["PYTHONPATH=.", "embedlab"], argv
    return argv[2:]


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """mydata.py, mylosses.py and mymetrics.py as the README writes them, in a fresh folder."""
    (tmp_path / "mydata.py").write_text(python_block("## Extending embedlab"))
    (tmp_path / "mylosses.py").write_text(python_block("### Write your own loss"))
    (tmp_path / "mymetrics.py").write_text(python_block("**A metric is an object**"))
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "digits.yaml", tmp_path / "experiments")
    for label in range(20):
        for n in range(8):
            write_image(tmp_path / "images" / f"{label}_{n}.png", label, (16, 16), seed=n)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ("mydata", "mylosses", "mymetrics")
    for name in names:
        sys.modules.pop(name, None)
    yield tmp_path
    for name in names:  # later tests in this worker must not find the README's modules
        sys.modules.pop(name, None)


def test_the_dataset_reads_its_files(user_code: Path) -> None:
    import mydata  # type: ignore[import-not-found]

    frame = mydata.LabelledFiles("images").frame()
    assert len(frame) == 160 and set(frame["label"]) == set(range(20))
    assert (frame["split"] == "train").sum() == 80 and (frame["split"] == "test").sum() == 80
    assert frame.loc[frame["path"] == "4_2.png", "label"].item() == 4


@pytest.mark.slow
def test_fit_with_the_users_dataset_loss_and_metric(
    user_code: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's command as printed (the run folder goes to the test's folder), with a
    shorter budget: every flag the run needs to work is in the README."""
    monkeypatch.setenv("EMBEDLAB_OUTPUT_ROOT", str(user_code / "runs"))
    budget = ["--trainer.max_epochs=4", "--trainer.check_val_every_n_epoch=2"]
    assert main([*extending_command(), *budget]) == 0
    [run] = (user_code / "runs" / "digits").glob("version_*")
    metrics = pd.read_csv(run / "metrics.csv")
    for stage in ("val", "test"):
        values = metrics[f"{stage}/ndcg@5"].dropna()
        assert len(values) >= 1 and ((values >= 0) & (values <= 1)).all(), stage
    splits = pd.read_csv(run / "splits.csv")
    assert set(splits.loc[splits["split"] == "test", "label"]) == set(range(10, 20))
    assert len(set(splits.loc[splits["split"] == "val", "label"])) == 2
    assert "mydata.LabelledFiles" in (run / "config.yaml").read_text()
