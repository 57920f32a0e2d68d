"""Bad configurations stop with one line that names the key at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedlab.cli import main
from embedlab.data.sampler import PKBatchSampler

DIGITS = str(Path(__file__).resolve().parents[1] / "experiments" / "digits.yaml")
QUICK = [
    "--trainer.max_epochs=1",
    "--data.batches_per_epoch=1",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
]


def run(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: int = 1) -> str:
    code = main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *QUICK, *args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == lines
    return err[0]


def test_more_identities_per_batch_than_the_dataset_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run(["--data.p=11"], tmp_path, capsys)
    assert "data.p=11" in line and "only 10" in line


def test_single_image_identities_with_k_above_one() -> None:
    with pytest.raises(ValueError, match=r"data\.k=4 .* single image"):
        PKBatchSampler(np.arange(12), 4, 4)
    with pytest.warns(UserWarning, match="2 of 4 training identities have a single image"):
        PKBatchSampler(np.array([0, 1, 2, 2, 3, 3]), 2, 2)


def test_missing_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data.dataset=market1501", f"--data.root={tmp_path / 'absent'}"]
    line = run(args, tmp_path, capsys, lines=7)  # the message goes on with the expected layout
    assert line.startswith("embedlab: error: market1501:") and "absent" in line


def test_embedding_dimension_mismatch_with_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *QUICK]) == 0
    ckpt = tmp_path / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    line = run(
        [f"--ckpt_path={ckpt}", "--model.model.init_args.embedding_dim=32"], tmp_path, capsys
    )
    assert "model.projection.weight" in line and "embedding_dim" in line
