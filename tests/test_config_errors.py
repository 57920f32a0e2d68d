"""Bad configurations stop with one line that names the key at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pytest
from torch import Tensor, nn

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
    args = ["--data.dataset=Market1501", f"--data.dataset.root={tmp_path / 'absent'}"]
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


def one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``embedlab fit`` with ``args`` exits with 2 and exactly one line on stderr."""
    assert main(["fit", "--config", DIGITS, *args, "--print_config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_wrong_key_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(["--model.loss.init_args.margn=0.3"], capsys)
    assert "model.loss" in line and "margn" in line


def test_a_wrong_key_in_a_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("trainer:\n  max_epoch: 3\n")
    line = one_line([f"--config={config}"], capsys)
    assert "max_epoch" in line


def test_a_wrong_class_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(["--model.model.init_args.backbone=embedlab.models.NoSuchNet"], capsys)
    assert "backbone" in line and "NoSuchNet" in line
    line = one_line(["--model.loss=torch.optim.Adam"], capsys)  # not a module
    assert "model.loss" in line and "torch.optim.Adam" in line


def test_an_unreachable_hub_says_so_and_points_to_a_local_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.hub

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setattr(torch.hub, "urlopen", unreachable)
    backbone = "--model.model.init_args.backbone"
    args = [f"{backbone}=embedlab.models.ResNet", f"{backbone}.init_args.depth=18"]
    code = main(
        ["fit", "--config", DIGITS, f"--output_root={tmp_path}", *QUICK, *args]
        + [f"{backbone}.init_args.pretrained=true"]
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot download" in line and "resnet18" in line and "pretrained: /path/to" in line


class BuggyLoss(nn.Module):
    """A user's loss with a bug: its traceback must reach the user."""

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        raise ValueError("bug in the user's loss")


def test_a_bug_in_a_users_loss_keeps_its_traceback(tmp_path: Path) -> None:
    loss = f"--model.loss={__name__}.BuggyLoss"
    with pytest.raises(ValueError, match="bug in the user's loss") as info:
        main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *QUICK, loss])
    assert info.traceback[-1].name == "forward"
