"""The Makefile: .env never overrides the command line or the environment; clean keeps runs/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOW = 'show: ; @echo "$(EMBEDLAB_WANDB)|$(WANDB_PROJECT)|$$EMBEDLAB_WANDB"'

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(folder: Path, *args: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDLAB_", "WANDB_"))}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=folder,
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".env").write_text("EMBEDLAB_WANDB=off\nWANDB_PROJECT=from-dotenv\n")
    return tmp_path


def test_dotenv_fills_in_but_never_overrides(folder: Path) -> None:
    assert make(folder, "--eval", SHOW, "show") == "off|from-dotenv|off"
    # the environment and the command line win, and the recipes see the same value
    assert make(folder, "--eval", SHOW, "show", EMBEDLAB_WANDB="online") == (
        "online|from-dotenv|online"
    )
    assert make(folder, "--eval", SHOW, "show", "EMBEDLAB_WANDB=offline") == (
        "offline|from-dotenv|offline"
    )


def test_env_example_switches_nothing(folder: Path) -> None:
    shutil.copy(ROOT / ".env.example", folder / ".env")
    assert make(folder, "--eval", SHOW, "show", EMBEDLAB_WANDB="online") == "online||online"
    assert make(folder, "--eval", SHOW, "show") == "||"


def test_clean_keeps_runs_and_clean_runs_says_what_it_deletes(folder: Path) -> None:
    (folder / "runs" / "x" / "version_0").mkdir(parents=True)
    (folder / ".pytest_cache").mkdir()
    make(folder, "clean")
    assert (folder / "runs" / "x" / "version_0").is_dir()
    assert not (folder / ".pytest_cache").exists()
    out = make(folder, "clean-runs")
    assert "deleting runs/" in out and not (folder / "runs").exists()
    assert "clean-runs" in make(folder, "help")


def test_test_fast_skips_slow_tests_and_both_list_durations(folder: Path) -> None:
    assert "test-fast" in make(folder, "help")
    (folder / "pyproject.toml").touch()  # `install`'s prerequisite; -n runs nothing
    fast = make(folder, "-n", "test-fast", "PYTEST_ARGS=")
    full = make(folder, "-n", "test", "PYTEST_ARGS=")
    assert '-m "not slow"' in fast and "--durations=15" in fast
    assert "not slow" not in full and "--durations=15" in full
