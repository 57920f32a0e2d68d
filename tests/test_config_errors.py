"""Bad configurations stop with one line that names the key at fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import Tensor, nn

from embedlab.cli import main
from embedlab.data.sampler import PKBatchSampler
from embedlab.runs import build_run

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
    assert not list(tmp_path.rglob("version_*"))  # the failed start leaves no run folder


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


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--data.eval_batch_size=-1", "data.eval_batch_size: expected a positive int, got -1"),
        (
            "--data.batches_per_epoch=-1",
            "data.batches_per_epoch: expected a positive int or null, got -1",
        ),
        ("--data.p=0", "data.p: expected a positive int, got 0"),
        ("--data.num_workers=-2", "data.num_workers: expected an int >= 0, got -2"),
        (
            "--model.model.init_args.embedding_dim=-3",
            "model.model.init_args.embedding_dim: expected a positive int or null, got -3",
        ),
        (
            "--data.val.size=1.5",
            "data.val.size: expected a fraction in (0, 1) or a positive int, got 1.5",
        ),
        ("--data.val.size=0", "data.val.size: expected a fraction in (0, 1) or a positive int"),
        ("--model.ks=[1,0]", "model.ks: expected a positive int, got 0"),
    ],
)
def test_a_number_out_of_range_is_one_line_naming_the_key(
    arg: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert one_line([arg], capsys).startswith(f"embedlab: error: {expected}")


def test_out_of_range_from_the_shell_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    argv = ["fit", "--config", DIGITS, f"--output_root={tmp_path}", "--data.eval_batch_size=-1"]
    done = subprocess.run(
        [sys.executable, "-m", "embedlab", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "embedlab: error: data.eval_batch_size: expected a positive int, got -1"
    ]
    assert not list(tmp_path.iterdir())


def test_the_checked_types_show_in_help_and_reach_the_classes_as_plain_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data.eval_batch_size EVAL_BATCH_SIZE (type: PositiveInt, default: 256)" in text
    assert "--data.num_workers NUM_WORKERS (type: NonNegativeInt, default: 0)" in text
    recipe = yaml.safe_load(Path(DIGITS).read_text())
    recipe["data"]["val"] = {"size": 3}
    net, data = build_run(recipe)  # as parsed from a configuration
    for value in (data.eval_batch_size, data.p, data.batches_per_epoch, net.embedding_dim):
        assert type(value) is int  # not a jsonargparse type: hparams.yaml stays plain YAML
    assert type(data.val.size) is int  # type: ignore[union-attr]
    numbers = {k: v for k, v in data.hparams.items() if k != "val"}  # val: a ValSplit
    assert yaml.safe_dump(numbers)  # safe_dump refuses any type but plain ones


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--model.optimizer.init_args.lr=-1"], "model.optimizer.init_args.lr"),
        (["--model.optimizer.init_args.lr=0"], "model.optimizer.init_args.lr"),
        (["--trainer.max_epochs=-5"], "trainer.max_epochs"),
    ],
)
def test_values_checked_when_the_run_starts_are_one_line_and_leave_no_run_folder(
    args: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run(args, tmp_path, capsys)
    assert line.startswith(f"embedlab: error: {key}:")
    assert not list(tmp_path.rglob("version_*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_without_one_is_one_line(
    accelerator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run([f"--trainer.accelerator={accelerator}"], tmp_path, capsys)
    assert line.startswith("embedlab: error: trainer.accelerator: a GPU was asked for")
    assert "--trainer.accelerator=cpu" in line
    assert not list(tmp_path.rglob("version_*"))


def test_a_yaml_syntax_error_names_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n  devices: [1\nmodel: {a: 1}\n")
    line = one_line([f"--config={config}"], capsys)
    assert f"config: {config}:4: YAML syntax error" in line and "line 3" in line
    line = one_line(["--data", str(config)], capsys)  # a section's file
    assert f"data: {config}:4: YAML syntax error" in line


def test_a_class_that_cannot_be_imported_names_the_key_and_the_module(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_line(["--data.dataset=mydata.LabelledFiles"], capsys)
    assert "data.dataset" in line and "No module named 'mydata'" in line


class BuggyDataset:
    """A user's dataset with a bug in ``__init__``: its traceback must reach the user."""

    def __init__(self, root: str = "x") -> None:
        self.scale = 1 / 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame()


def test_a_bug_in_a_users_dataset_keeps_its_traceback(tmp_path: Path) -> None:
    dataset = f"--data.dataset={__name__}.BuggyDataset"
    with pytest.raises(ZeroDivisionError) as info:
        main(["fit", "--config", DIGITS, f"--output_root={tmp_path}", *QUICK, dataset])
    assert info.traceback[-1].name == "__init__"
