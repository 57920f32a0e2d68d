"""Checkpoints are loaded without running code: a crafted one is refused in one line naming the
file, what it would call and ``--trust_checkpoint``; embedlab's own load with
``weights_only=True``; ``trust_checkpoint`` loads (and so runs) a crafted one."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from digits_runs import ROOT, TINY_BUDGET
from embedlab.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from embedlab.cli import main
from embedlab.data.splits import ValSplit
from embedlab.errors import ConfigError
from embedlab.inference import load_embedder
from embedlab.runs import load_module
from test_inference import write_digit


class WritesAFile:
    """Unpickled, it calls ``Path.write_text(target, "x")``: what a malicious checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.target, "x"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits run with validation: ``best-*.ckpt`` and ``last.ckpt`` (ModelCheckpoint,
    ValHistory and LastCheckpoint states, loops, sampler, RNG, optimiser and scheduler)."""
    out = tmp_path_factory.mktemp("safe_loading")
    argv = ["fit", "--config", str(ROOT / "experiments" / "digits.yaml"), *TINY_BUDGET]
    argv += ["--trainer.enable_progress_bar=false", f"--output_root={out}"]
    assert main(argv) in (0, None)
    return out / "digits" / "version_0"


@pytest.fixture
def crafted(trained: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(run folder, crafted checkpoint in its checkpoints/, the file unpickling writes)``: a
    copy of the trained run with a genuine checkpoint plus one object that writes a file."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    target = tmp_path / "pwned"
    checkpoint["extra"] = WritesAFile(target)
    path = run / "checkpoints" / "shared.ckpt"
    torch.save(checkpoint, path)
    assert not target.exists()
    return run, path, target


def _one_error_line(err: str, path: Path, flag: str = "--trust_checkpoint") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("embedlab: error: ") and str(path) in lines[0]
    assert flag in lines[0] and "pathlib" in lines[0]  # the global it would call
    return lines[0]


def test_embed_refuses_a_crafted_checkpoint_in_one_line(
    crafted: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, ckpt, target = crafted
    photos = tmp_path / "photos"
    write_digit(photos / "a.png", 0)
    argv = ["embed", "--ckpt_path", str(ckpt), "--images", str(photos)]
    assert main([*argv, "--out", str(tmp_path / "out.parquet")]) == 2
    _one_error_line(capsys.readouterr().err, ckpt)
    assert not target.exists() and not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
def test_the_command_refuses_a_crafted_checkpoint(
    crafted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    run, ckpt, target = crafted
    photos = tmp_path / "photos"
    write_digit(photos / "a.png", 0)
    cmd = [sys.executable, "-m", "embedlab", "embed", "--ckpt_path", str(ckpt)]
    cmd += ["--images", str(photos), "--out", str(tmp_path / "out.parquet")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("embedlab: error:")]
    assert len(errors) == 1, done.stderr
    _one_error_line(errors[0], ckpt)
    assert not target.exists()


def test_python_loaders_refuse_a_crafted_checkpoint(crafted: tuple[Path, Path, Path]) -> None:
    run, ckpt, target = crafted
    with pytest.raises(ConfigError, match="--trust_checkpoint") as refused:
        load_embedder(ckpt, "cpu")
    assert str(ckpt) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="pathlib"):
        load_module(run, ckpt.name)
    with pytest.raises(ConfigError, match="--trust_checkpoint"):
        load_checkpoint(ckpt)
    assert not target.exists()


def test_resuming_from_a_crafted_checkpoint_is_refused(
    crafted: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``embedlab fit / test`` load through Lightning (``AtomicCheckpointIO``): the same safe
    load, whose message names Lightning's own option."""
    run, ckpt, target = crafted
    argv = ["fit", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt)]
    assert main([*argv, f"--output_root={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("embedlab: error:")]
    assert len(errors) == 1, err
    _one_error_line(errors[0], ckpt, flag="--weights_only false")
    assert not target.exists()


def test_embedlab_checkpoints_load_with_weights_only(trained: Path) -> None:
    """In a process that imported nothing of embedlab (no safe globals registered)."""
    files = sorted((trained / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in {f.name for f in files}
    assert any(f.name.startswith("best") for f in files)
    code = (
        "import sys, torch\n"
        "for path in sys.argv[1:]:\n"
        "    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path\n"
        "    checkpoint = torch.load(path, map_location='cpu', weights_only=True)\n"
        "    assert checkpoint['state_dict'] and checkpoint['callbacks'], path\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    last = load_checkpoint(trained / "checkpoints" / "last.ckpt")
    assert {"ValHistory", "embedlab_rng", "loops", "optimizer_states", "lr_schedulers"} <= {
        *last,
        *last["callbacks"],
    }
    module, _ = load_module(trained, "best")
    embedder = load_embedder(trained / "checkpoints" / "last.ckpt", "cpu")
    assert embedder.embedding_dim == 64 and not module.training


def test_trust_checkpoint_loads_the_crafted_file(
    crafted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """What the flag says: full unpickling, which here writes the file (in tmp_path)."""
    run, ckpt, target = crafted
    load_embedder(ckpt, "cpu", trust_checkpoint=True)
    assert target.read_text() == "x"
    target.unlink()
    load_module(run, ckpt.name, trust_checkpoint=True)
    assert target.is_file()
    target.unlink()
    argv = ["embed", "--ckpt_path", str(ckpt), "--data_split", "query", "--trust_checkpoint"]
    assert main([*argv, "--out", str(tmp_path / "query.parquet")]) == 0
    assert target.is_file() and (tmp_path / "query.parquet").is_file()


def test_safe_globals_are_data_classes(tmp_path: Path) -> None:
    """Only harmless data classes are allowed; a ``RetrievalDataModule`` built in Python keeps
    a ``ValSplit`` in its hyper-parameters, and that loads."""
    assert SAFE_GLOBALS and all(dataclasses.is_dataclass(g) for g in SAFE_GLOBALS)
    path = tmp_path / "python.ckpt"
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": {"val": ValSplit(0.3)}}, path)
    assert load_checkpoint(path)["datamodule_hyper_parameters"]["val"] == ValSplit(0.3)


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ConfigError, match="cannot read it") as refused:
        load_checkpoint(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    tensor = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(ConfigError, match="not a checkpoint"):
        load_checkpoint(tensor)
