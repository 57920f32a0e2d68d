"""Every command in README.md's ```bash blocks runs as written (with a small budget), or is on
an explicit allow-list saying why it cannot run here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# command prefix -> why it cannot run in the tests
NOT_HERE: dict[str, str] = {
    "make train": "installs into .venv with pip (the tests run inside that environment)",
    "make test": "runs this test suite",
    "EMBEDLAB_WANDB=online": "needs a wandb account and the network",
    "embedlab data check --dataset Market1501 --dataset.root /data": "needs Market-1501 on disk",
    "embedlab data check --dataset CUHK03NP": "needs CUHK03-NP on disk",
    "embedlab data prepare cuhksysu --source /data": (
        "needs the CUHK-SYSU release; test_cuhksysu.py runs the command on a miniature release"
    ),
    "embedlab embed --ckpt_path runs/shop": "run on a trained model by test_inference.py (README section test)",
    "embedlab index build --embeddings photos": "run by test_inference.py after its embed step",
    "embedlab search --index photos.index": "run by test_inference.py after its index step",
    "torchrun --nproc_per_node 4": (
        "needs 4 processes; test_sharded.py runs two ranks with torchrun's RANK/WORLD_SIZE"
    ),
    "srun --ntasks 8": "needs SLURM",
    "embedlab index build --embeddings shards": (
        "run by test_sharded.py on a folder of shards (streamed, on disk)"
    ),
    "PYTHONPATH=. embedlab fit --config experiments/digits.yaml --model.loss=": (
        "run by test_own_loss.py with the README's mylosses.py"
    ),
    "PYTHONPATH=. embedlab fit --config experiments/digits.yaml --data.dataset=mydata": (
        "run by test_extending.py with the README's mydata.py, mylosses.py and mymetrics.py"
    ),
    "embedlab fit --config experiments/market1501_bot.yaml": "needs 4 GPUs and Market-1501",
    "NNODES=2": (
        "needs a second node; test_cluster.py launches two torchrun nodes on one CPU machine"
    ),
    "embedlab evaluate --ckpt_path runs/faces": (
        "needs LFW / YouTube Faces; test_verification.py runs both on miniature trees"
    ),
    "sbatch": "needs Slurm; test_cluster.py runs two tasks with the variables srun sets",
}
# the budget: documented overrides appended to each command of that kind
BUDGET: dict[str, list[str]] = {
    "embedlab fit": [
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=1",
        "--data.batches_per_epoch=2",
        "--trainer.enable_progress_bar=false",
    ],
    "embedlab sweep": [
        "--count=2",
        "--",
        "--trainer.max_epochs=1",
        "--trainer.check_val_every_n_epoch=1",  # a trial's value is its best validation
        "--data.batches_per_epoch=1",
        "--trainer.enable_progress_bar=false",
    ],
}


def readme_commands() -> list[str]:
    """The commands of the ```bash blocks: comments dropped, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def reason_not_here(command: str) -> str | None:
    return next((why for prefix, why in NOT_HERE.items() if command.startswith(prefix)), None)


def test_every_readme_command_is_run_or_allowed() -> None:
    commands = readme_commands()
    assert any(c.startswith("embedlab fit") for c in commands)
    used = {prefix for prefix in NOT_HERE for c in commands if c.startswith(prefix)}
    assert used == set(NOT_HERE), f"stale allow-list entries: {set(NOT_HERE) - used}"


def with_budget(command: str, checkpoint: Path) -> list[str]:
    args = shlex.split(command.replace("…", str(checkpoint)))
    if args[:3] == ["python", "-m", "embedlab"]:
        args = [sys.executable, "-m", "embedlab", *args[3:]]
    for prefix, extra in BUDGET.items():
        if command.startswith(prefix) and "--help" not in args and "--print_config" not in args:
            args += extra
    return args


FIRST_FIT = "embedlab fit --config experiments/digits.yaml --model.loss"


def chain_of(command: str) -> str:
    """Commands that read what an earlier one wrote share a chain (run in order, in one
    folder); every other command is a chain of its own, so the chains can run in parallel."""
    if command.startswith("embedlab evaluate") or command.startswith(FIRST_FIT):
        return "digits run, then evaluate"
    if "sweeps/losses.yaml" in command or command.startswith("embedlab compare runs/digits_losses"):
        return "loss sweep, resumed, reported, compared"
    return command


def readme_chains() -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    for command in readme_commands():
        if not reason_not_here(command):
            chains.setdefault(chain_of(command), []).append(command)
    return chains


def test_the_chains_hold_every_runnable_command() -> None:
    chains = readme_chains()
    runnable = [c for c in readme_commands() if not reason_not_here(c)]
    assert sorted(c for chain in chains.values() for c in chain) == sorted(runnable)
    assert len(runnable) >= 8
    evaluate = chains["digits run, then evaluate"]
    assert evaluate[0].startswith(FIRST_FIT) and len(evaluate) >= 2  # the fit comes first


@pytest.mark.slow
@pytest.mark.parametrize(
    "chain", list(readme_chains()), ids=lambda c: re.sub(r"[^\w.=-]+", "_", c)[:70]
)
def test_readme_commands_run(chain: str, tmp_path: Path) -> None:
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDLAB_", "WANDB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["WANDB_MODE"] = "offline"
    env["PYTHONWARNINGS"] = "ignore"
    checkpoint = tmp_path / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    for command in readme_chains()[chain]:
        result = subprocess.run(
            with_budget(command, checkpoint),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        if command.startswith(FIRST_FIT):
            assert checkpoint.is_file()  # the run the evaluate commands read
