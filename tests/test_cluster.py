"""Cluster launches on one CPU machine: two torchrun "nodes", two Slurm tasks, the scripts.

Each test starts two independent ``embedlab fit`` processes the way a cluster would (torchrun
agents meeting at a c10d rendezvous; or the environment ``srun --nodes=2 --ntasks-per-node=1``
gives each task) with ``--trainer.strategy=ddp`` on gloo. Every process must exit 0, leave no
process behind, write exactly one run folder, and reproduce the metrics and weights of the same
two-rank run launched by Lightning itself (``ddp_spawn``): a collective that only rank 0 enters
(``trainer.log_dir`` in rank-zero-only code, once the bug here) makes rank 0 fail or hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from embedlab.callbacks.last_checkpoint import stop_requested
from embedlab.checkpoint_io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

#: Seconds a launch may take before its processes are killed (a hang fails the test).
TIMEOUT = 420
#: float64 training and evaluation; identical per-rank work should give identical numbers.
TOLERANCE = 1e-9
#: The test split only: a ddp_spawn parent runs its final test in fresh workers that load the
#: float64 checkpoint into its own module, which the fit handed back in float32; the rounded
#: weights move the test metrics by a few float32 ulps (1.8e-7 seen). The cluster launches
#: test the checkpoint itself, in float64, as their own workers trained it.
TEST_TOLERANCE = 1e-6
#: Two ranks of P=5 identities each: digits' 10 identities, none on both ranks in a step.
FIT_ARGS = [
    "--config",
    str(ROOT / "experiments" / "digits.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.precision=64-true",
    "--trainer.max_epochs=2",
    "--trainer.check_val_every_n_epoch=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--data.p=5",
    "--data.batches_per_epoch=3",
    "--model.gather_embeddings=true",  # an all_gather in every training step
]
#: Launcher variables of the process running pytest that must not leak into a launch.
LAUNCH_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it; free again once the socket closes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher or Slurm variables, one thread per process
    (as Lightning gives each ``ddp_spawn`` worker on 2 CPUs), plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def alive(group: int) -> list[int]:
    """The processes of process group ``group`` that still run (exited, unreaped zombies are
    left out: they hold no resources, and the container's init reaps them a little later)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: whether the group has any member at all
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return []
        return [group]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # it ended while we looked
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def launch(commands: Sequence[tuple[list[str], dict[str, str]]], logs: Path) -> list[str]:
    """Run ``commands`` (argv, environment) at the same time, each in its own process group, and
    return their outputs. Every one must exit 0 within ``TIMEOUT`` and leave no process of its
    group alive (a torchrun agent's worker included); on any failure all groups are killed."""
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    try:
        for i, (argv, env) in enumerate(commands):
            out = open(logs / f"process{i}.log", "wb")  # noqa: SIM115 - closed in finally
            files.append(out)
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killpg reaches children
                )
            )
        deadline = time.monotonic() + TIMEOUT
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
        # a process still running in the group of an exited launcher (a torchrun agent's
        # worker, a spawned rank) is an orphan; give the exit a few seconds to finish
        grace = time.monotonic() + 5
        while any(alive(p.pid) for p in procs) and time.monotonic() < grace:
            time.sleep(0.2)
        lingering = [pid for p in procs for pid in alive(p.pid)]
    finally:
        for proc in procs:
            if alive(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        gone = time.monotonic() + 10  # SIGKILL is asynchronous: wait for the group to empty
        while any(alive(p.pid) for p in procs) and time.monotonic() < gone:
            time.sleep(0.1)
        for out in files:
            out.close()
    outputs = [(logs / f"process{i}.log").read_text(errors="replace") for i in range(len(procs))]
    for i, (code, text) in enumerate(zip(codes, outputs, strict=True)):
        assert code == 0, f"process {i} exited {code}:\n{text[-6000:]}"
    assert not lingering, f"processes {lingering} outlived their launcher"
    return outputs


def run_folder(output_root: Path) -> Path:
    """The one run folder under ``output_root`` (no second one, none for rank 1)."""
    runs = sorted(p.relative_to(output_root).as_posix() for p in output_root.glob("*/*"))
    assert runs == ["digits/version_0"]
    return output_root / runs[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same two-rank run, launched by Lightning (``ddp_spawn``) in one command."""
    base = tmp_path_factory.mktemp("spawn")
    argv = [sys.executable, "-m", "embedlab", "fit", *FIT_ARGS, f"--output_root={base / 'out'}"]
    argv += ["--trainer.devices=2", "--trainer.strategy=ddp_spawn"]
    launch([(argv, clean_env())], base)
    return run_folder(base / "out")


def assert_same_run(run: Path, reference: Path) -> float:
    """The training and validation rows of ``metrics.csv``, the summary's val metrics and the
    weights of the last checkpoint of ``run`` equal those of ``reference`` to ``TOLERANCE``, and
    its test metrics to ``TEST_TOLERANCE``; returns the largest gap outside the test metrics."""
    ours, theirs = pd.read_csv(run / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    assert list(ours.columns) == list(theirs.columns)
    assert ours.shape == theirs.shape
    tested = ours["test/map@r"].notna()
    assert tested.sum() == 1 and tested.equals(theirs["test/map@r"].notna())
    assert ours.dropna(subset=["val/map@r"])["epoch"].tolist() == [0, 1]
    # the ddp_spawn parent logs its test at epoch 0, step 0 (its own loops never ran)
    gap = float((ours[~tested] - theirs[~tested]).abs().max().max())
    pd.testing.assert_frame_equal(
        ours[~tested], theirs[~tested], check_exact=False, rtol=0, atol=TOLERANCE
    )
    columns = [c for c in ours.columns if c.startswith("test/")]
    pd.testing.assert_frame_equal(
        ours.loc[tested, columns], theirs.loc[tested, columns], rtol=0, atol=TEST_TOLERANCE
    )
    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    for split, tolerance in (("val", TOLERANCE), ("test", TEST_TOLERANCE)):
        assert summary[split].keys() == expected[split].keys()
        assert summary[split]["map@r"] > 0
        for key, value in expected[split].items():
            assert summary[split][key] == pytest.approx(value, rel=0, abs=tolerance), (split, key)
            if split == "val":
                gap = max(gap, abs(summary[split][key] - value))
    weights = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    wanted = load_checkpoint(reference / "checkpoints" / "last.ckpt")["state_dict"]
    assert weights.keys() == wanted.keys()
    for key, tensor in wanted.items():
        assert weights[key].dtype == tensor.dtype
        torch.testing.assert_close(weights[key], tensor, atol=TOLERANCE, rtol=0, msg=key)
        gap = max(gap, float((weights[key] - tensor).abs().max()) if tensor.numel() else 0.0)
    return gap


CLUSTER_ARGS = ["--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp"]


@pytest.mark.slow
def test_two_torchrun_nodes_train_as_one_ddp_spawn_run(tmp_path: Path, reference: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    commands = []
    for node in (0, 1):
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2"]
        argv += ["--nproc-per-node=1", f"--node-rank={node}", "--rdzv-backend=c10d"]
        argv += [f"--rdzv-endpoint={endpoint}", "--rdzv-id=embedlab-test"]
        argv += ["-m", "embedlab", "fit", *FIT_ARGS, *CLUSTER_ARGS]
        argv.append(f"--output_root={tmp_path / 'out'}")
        commands.append((argv, clean_env()))
    outputs = launch(commands, tmp_path)
    assert sum("embedlab: run folder" in text for text in outputs) == 1  # rank 0's agent only
    run = run_folder(tmp_path / "out")
    gap = assert_same_run(run, reference)
    print(f"torchrun: largest difference from ddp_spawn {gap:.3g}")


def slurm_env(task: int, port: int) -> dict[str, str]:
    """What ``srun`` sets for task ``task`` of a job on 2 nodes, one task (one device) per node,
    as sbatch's ``--nodes=2 --ntasks-per-node=1`` asks for. Lightning's SLURMEnvironment reads
    ranks from SLURM_PROCID / SLURM_LOCALID / SLURM_NODEID, the world size from SLURM_NTASKS,
    needs SLURM_NTASKS_PER_NODE when SLURM_NTASKS > 1, checks it and SLURM_NNODES against
    ``devices`` / ``num_nodes``, and is not chosen for a job named "bash" or "interactive".
    MASTER_ADDR is left to Lightning, which takes the first host of SLURM_NODELIST; MASTER_PORT
    is set because Lightning's default (15000 + the job id's last 4 digits) may be taken here.
    """
    return clean_env(
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="embedlab",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NNODES="2",
        SLURM_NTASKS="2",
        SLURM_NPROCS="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_TASKS_PER_NODE="1(x2)",
        SLURM_PROCID=str(task),
        SLURM_LOCALID="0",
        SLURM_NODEID=str(task),
        SLURM_NODELIST="localhost",  # both "nodes" are this machine
        SLURM_STEP_NODELIST="localhost",
        SLURM_JOB_NODELIST="localhost",
        SLURM_STEP_NUM_TASKS="2",
        MASTER_PORT=str(port),
    )


@pytest.mark.slow
def test_two_slurm_tasks_train_as_one_ddp_spawn_run(tmp_path: Path, reference: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "embedlab", "fit", *FIT_ARGS, *CLUSTER_ARGS]
    argv.append(f"--output_root={tmp_path / 'out'}")
    outputs = launch([(argv, slurm_env(task, port)) for task in (0, 1)], tmp_path)
    assert "embedlab: run folder" in outputs[0]
    assert "embedlab: run folder" not in outputs[1]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]  # Slurm's ranks, not two 1-process runs
    run = run_folder(tmp_path / "out")
    gap = assert_same_run(run, reference)
    print(f"slurm: largest difference from ddp_spawn {gap:.3g}")


def test_the_run_folder_check_sees_a_second_folder(tmp_path: Path) -> None:
    (tmp_path / "digits" / "version_0").mkdir(parents=True)
    (tmp_path / "digits" / "version_nonzero_rank").mkdir()
    with pytest.raises(AssertionError):
        run_folder(tmp_path)


def test_the_orphan_check_finds_a_process_left_behind(tmp_path: Path) -> None:
    # the shell exits 0 at once; the sleep it started in the background stays in its group
    with pytest.raises(AssertionError, match="outlived their launcher"):
        launch([(["sh", "-c", "sleep 60 & echo $!; exit 0"], clean_env())], tmp_path)
    pid = int((tmp_path / "process0.log").read_text())
    stat = Path(f"/proc/{pid}/stat")
    state = stat.read_text().rsplit(")", 1)[1].split()[0] if stat.exists() else "gone"
    assert state in ("gone", "Z", "X")  # launch killed it


class FakeStrategy:
    def __init__(self, anyone: bool) -> None:
        self.anyone, self.asked = anyone, 0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002
        assert all is False  # any rank's request stops every rank
        self.asked += 1
        return decision or self.anyone


@pytest.mark.parametrize(
    ("world", "mine", "anyone", "stop"),
    [
        (1, False, True, False),  # one process: only its own flag, no collective
        (1, True, False, True),
        (2, False, True, True),  # another rank got the signal first: this one stops too
        (2, False, False, False),
        (2, True, False, True),
    ],
)
def test_every_rank_agrees_on_a_stop_request(
    world: int, mine: bool, anyone: bool, stop: bool
) -> None:
    strategy = FakeStrategy(anyone)
    trainer = SimpleNamespace(received_sigterm=mine, world_size=world, strategy=strategy)
    assert stop_requested(trainer) is stop  # type: ignore[arg-type]
    assert strategy.asked == (1 if world > 1 else 0)  # under DDP on every rank, every time


SCRIPTS = ROOT / "experiments" / "cluster"


def script_env(**extra: str) -> dict[str, str]:
    """A launch environment whose PATH has this Python's folder and the system's, no GPU tools."""
    env = clean_env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    for name in ("GPUS", "CPU_PROCS", "NNODES", "NODE_RANK", "CONFIG", "RESUME", "PYTHON"):
        env.pop(name, None)
    env.pop("EMBEDLAB_DATA_ROOT", None)
    return {**env, **extra}


def run_script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("name", ["torchrun.sh", "slurm.sbatch"])
def test_the_cluster_scripts_parse(name: str) -> None:
    result = run_script(["-n", str(SCRIPTS / name)], script_env())
    assert result.returncode == 0, result.stderr


def test_torchrun_script_check_mode_falls_back_to_the_cpu(tmp_path: Path) -> None:
    env = script_env()
    if shutil.which("nvidia-smi", path=env["PATH"]):
        pytest.skip("this machine has nvidia-smi")
    result = run_script([str(SCRIPTS / "torchrun.sh"), "--check", "--data.p=5"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "embedlab torchrun.sh: no GPU (nvidia-smi not found): on the CPU with gloo, "
        "CPU_PROCS=1 process(es) per node"
    ]
    command = result.stdout.strip().splitlines()[-1]
    assert "-m torch.distributed.run --nnodes=1 --node-rank=0 --nproc-per-node=1" in command
    assert "--trainer.accelerator=cpu --trainer.devices=1 --trainer.num_nodes=1" in command
    assert "--trainer.strategy=ddp" in command and command.endswith("--data.p=5")
    assert "sync_batchnorm" not in command  # SyncBatchNorm is for GPUs only


@pytest.mark.parametrize(
    ("script", "extra", "message"),
    [
        ("slurm.sbatch", {}, "not inside a Slurm job: submit with sbatch"),
        (
            "slurm.sbatch",
            {"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "bash", "SLURM_NTASKS_PER_NODE": "1"},
            "srun not found on this node",
        ),
        ("torchrun.sh", {"NNODES": "2", "NODE_RANK": "1"}, "needs MASTER_ADDR=<node 0's address>"),
        ("torchrun.sh", {"NODE_RANK": "1"}, "NODE_RANK=1 is not in 0…0"),
        ("torchrun.sh", {"PYTHON": "/missing/python"}, "no Python: /missing/python"),
        ("torchrun.sh", {"CONFIG": "missing.yaml"}, "CONFIG=missing.yaml is not a file"),
        ("torchrun.sh", {"EMBEDLAB_DATA_ROOT": "/missing"}, "EMBEDLAB_DATA_ROOT=/missing is not"),
        ("torchrun.sh", {"RESUME": "runs/none"}, "RESUME=runs/none has no checkpoints/last.ckpt"),
    ],
)
def test_cluster_scripts_name_a_missing_prerequisite_in_one_line(
    script: str, extra: dict[str, str], message: str
) -> None:
    result = run_script([str(SCRIPTS / script), "--check"], script_env(**extra))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.slow
def test_torchrun_script_trains_two_cpu_processes(tmp_path: Path) -> None:
    env = script_env(CPU_PROCS="2", MASTER_PORT=str(free_port()))
    argv = ["bash", str(SCRIPTS / "torchrun.sh"), f"--output_root={tmp_path / 'out'}"]
    argv += ["--data.p=5", "--trainer.max_epochs=1", "--data.batches_per_epoch=2"]
    argv += ["--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false"]
    (output,) = launch([(argv, env)], tmp_path)
    run = run_folder(tmp_path / "out")
    assert (run / "summary.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert "on the CPU with gloo, CPU_PROCS=2 process(es) per node" in output
