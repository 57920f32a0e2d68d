"""The GPU-check benchmarks of issue 27 (benchmarks/train_throughput.py, eval_scale.py and
gpu_check.sh) at their --tiny sizes on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import eval_scale  # noqa: E402
import train_throughput  # noqa: E402


def positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_train_throughput_tiny_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    train_throughput.main(
        ["--tiny", "--device", "cpu", "--out", str(out), "--data", str(tmp_path / "market")]
    )
    # the synthetic tree is a Market-1501 tree
    names = sorted(p.name for p in (tmp_path / "market" / "bounding_box_train").iterdir())
    assert len(names) == 20 * 4 and names[0] == "0001_c1s1_000001_00.jpg"
    result = json.loads((out / "train_throughput.json").read_text())
    rows = result["rows"]
    loader = {(r["decode"], r["workers"]) for r in rows if r["part"] == "loader"}
    assert loader == {(d, w) for d in ("PIL", "decode_jpeg") for w in (0, 2)}
    model = {(r["precision"], r["channels_last"]) for r in rows if r["part"] == "model"}
    assert model == {(p, c) for p in ("fp32", "bf16") for c in (False, True)}
    assert {r["workers"] for r in rows if r["part"] == "e2e"} == {0, 2}
    for row in rows:
        assert positive(row["images_per_s"]), row
        if row["part"] != "loader":
            assert positive(row["plain_images_per_s"]) and positive(row["ratio_to_plain"]), row
    sync = result["sync"]
    assert sync["cuda_syncs_per_step"] == "n/a (no CUDA)"
    # embedlab's step converts one tensor to Python (its fused finiteness check); Adam reads
    # its CPU step counters, one per parameter tensor
    assert sync["conversions_per_step"] == 1
    assert sync["optimizer_conversions_per_step"] > 0
    table = (out / "train_throughput.md").read_text()
    assert "| e2e | PIL, workers=2" in table and "n/a (no CUDA)" in table


@pytest.mark.slow
def test_eval_scale_tiny_cpu_paths_agree(tmp_path: Path) -> None:
    result = eval_scale.main(["--tiny", "--device", "cpu", "--out", str(tmp_path)])
    rows = {r["scenario"]: r for r in result["rows"]}
    assert set(rows) == {"market", "sop"}
    assert rows["market"]["shapes"] == {"q": [200, 64], "g": [1000, 64]}
    for row in rows.values():
        assert row["equal"] and row["max_abs_diff"] <= 1e-6
        assert positive(row["cpu_s"]) and positive(row["candidate_s"])
        assert row["metrics"] == pytest.approx(row["candidate_metrics"], abs=1e-6)
        assert 0.0 < row["metrics"]["map"] < 1.0  # neither trivial nor empty
    assert json.loads((tmp_path / "eval_scale.json").read_text())["rows"][0]["equal"] is True


def test_eval_scale_comparison_can_fail() -> None:
    reference = {"map": 0.5, "recall@1": 0.7}
    assert eval_scale.scalars(reference) == reference
    data = eval_scale.make_market(30, 120, 16, 8)
    row = eval_scale.compare("market", data, "cpu", tiny=True)
    assert row["equal"]
    shifted = {k: v.clone() for k, v in data.items()}
    shifted["q"] = shifted["q"].flip(0)  # other queries: the metrics move
    other = eval_scale.run("market", shifted, "cpu")
    assert eval_scale.scalars(other) != pytest.approx(row["metrics"], abs=1e-6)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "check"), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = (tmp_path / "check" / "gpu_check.md").read_text()
    for part in ("train", "sync", "eval"):
        assert f"| {part} | ok |" in table
    assert "| sync | CUDA host syncs per training step" in table
    assert "| market |" in table and "| model | fp32" in table
    summary = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert set(summary["parts"]) == {"train", "sync", "eval"}


def test_gpu_check_names_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": str(tmp_path / "no-python")}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check.sh: missing: python")
