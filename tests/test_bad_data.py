"""Bad images: `error` names the first bad file; `skip` completes and lists every bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedlab.cli import main
from fake_datasets import make_table, write_truncated_jpeg

DIGITS = str(Path(__file__).resolve().parents[1] / "experiments" / "digits.yaml")


def broken_table(root: Path) -> Path:
    """A custom table dataset where three files are not what they claim."""
    make_table(root, num_ids=6, images_per_id=4)
    frame = pd.read_csv(root / "dataset.csv")
    train = frame[frame["split"] == "train"]["path"].tolist()
    write_truncated_jpeg(root / "images" / "truncated.jpg")
    (root / "images" / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.full((16, 8), 40000, dtype=np.uint16)).save(root / "images" / "deep.png")
    extra = pd.DataFrame(
        [
            ("images/truncated.jpg", 0, -1, "train"),
            ("images/empty.jpg", 1, -1, "train"),
            ("images/deep.png", 2, -1, "train"),
        ],
        columns=frame.columns,
    )
    pd.concat([frame, extra]).to_csv(root / "dataset.csv", index=False)
    assert len(train) == 12
    return root


def fit(root: Path, tmp_path: Path, bad_data: str) -> int:
    return main(
        [
            "fit",
            "--config",
            DIGITS,
            f"--output_root={tmp_path / 'runs'}",
            "--data.dataset=Table",
            f"--data.dataset.root={root}",
            f"--data.bad_data={bad_data}",
            "--data.p=2",  # of the 3 classes, one is held out for validation
            "--data.k=2",
            "--data.transforms=embedlab.data.PlainTransforms",
            "--data.batches_per_epoch=8",
            "--data.eval_batch_size=64",
            "--model.model.init_args.backbone.init_args.in_channels=3",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.enable_progress_bar=false",
        ]
    )


@pytest.mark.slow
def test_error_mode_names_the_first_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = broken_table(tmp_path / "data")
    assert fit(root, tmp_path, "error") == 2
    err = capsys.readouterr().err
    assert "truncated.jpg" in err or "empty.jpg" in err


@pytest.mark.slow
def test_skip_mode_completes_and_lists_the_bad_files(tmp_path: Path) -> None:
    root = broken_table(tmp_path / "data")
    with pytest.warns(RuntimeWarning, match="2 unreadable image"):
        assert fit(root, tmp_path, "skip") == 0
    run = tmp_path / "runs" / "digits" / "version_0"
    listed = pd.read_csv(run / "skipped_files.tsv", sep="\t")
    assert sorted(listed["path"]) == [
        "images/empty.jpg",
        "images/truncated.jpg",
    ]  # 16-bit PNG is fine
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["data/skipped_files"].dropna().tolist() == [2.0]
    assert metrics["val/map"].notna().any() and metrics["test/map"].notna().sum() == 1
