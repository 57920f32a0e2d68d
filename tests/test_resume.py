"""Exact resume after SIGKILL: the resumed run ends with the uninterrupted run's weights and metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--config",
    str(ROOT / "experiments" / "digits.yaml"),
    "--trainer.max_epochs=4",
    "--data.batches_per_epoch=7",
    "--trainer.check_val_every_n_epoch=2",
    "--checkpoint.every_n_train_steps=3",
    "--checkpoint.monitor=null",
    "--trainer.enable_progress_bar=false",
    "--model.model.init_args.dropout=0.1",  # the model's own random stream must resume too
]


def fit(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "embedlab", "fit", *ARGS, f"--output_root={out}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def final_state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    summary = json.loads((run / "summary.json").read_text())
    return ckpt["state_dict"], {k: v for k, v in summary.items() if k in ("val", "test")}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    whole = fit(tmp_path / "whole")
    killed = fit(tmp_path / "killed")
    last = tmp_path / "killed" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert whole.wait() == 0, whole.stderr.read().decode() if whole.stderr else ""

    step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step < 28 and step % 7 != 0  # killed mid-epoch, before the end
    resumed = fit(tmp_path / "killed", f"--ckpt_path={last}")
    assert resumed.wait() == 0, resumed.stderr.read().decode() if resumed.stderr else ""

    weights_a, metrics_a = final_state(tmp_path / "whole" / "digits" / "version_0")
    weights_b, metrics_b = final_state(tmp_path / "killed" / "digits" / "version_0")  # same folder
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert metrics_a == metrics_b
    assert not list(last.parent.glob("*.tmp"))
    assert os.path.getsize(last) > 0
