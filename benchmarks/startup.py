"""Start-up time: how long a fresh process takes to import embedlab or print a ``--help``.

Each command runs ``--repeat`` times (default 5) in a new interpreter; the table gives the
median wall time in seconds and its ratio to ``python -c "import torch"`` measured in the same
run, so that a busy machine slows the baseline as much as the rows. The first run of each
command is a warm-up (not counted), which keeps cold disk caches out of the medians.

Usage: ``python benchmarks/startup.py [--repeat 5] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
EMBEDLAB = [PYTHON, "-m", "embedlab"]
COMMANDS: dict[str, list[str]] = {
    "import torch": [PYTHON, "-c", "import torch"],
    "import embedlab.losses": [PYTHON, "-c", "import embedlab.losses"],
    "import embedlab.cli": [PYTHON, "-c", "import embedlab.cli"],
    "embedlab --help": [*EMBEDLAB, "--help"],
    "embedlab fit --help": [*EMBEDLAB, "fit", "--help"],
    "embedlab search --help": [*EMBEDLAB, "search", "--help"],
    "embedlab evaluate --help": [*EMBEDLAB, "evaluate", "--help"],
    "embedlab data check --help": [*EMBEDLAB, "data", "check", "--help"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command")
    parser.add_argument("--json", type=Path, help="also write the medians to this file")
    args = parser.parse_args()
    medians: dict[str, float] = {}
    for name, command in COMMANDS.items():
        seconds(command)  # warm-up
        medians[name] = statistics.median(seconds(command) for _ in range(args.repeat))
    torch = medians["import torch"]
    width = max(map(len, medians))
    print(f"{'command':<{width}}  {'seconds':>7}  {'× torch':>7}")
    for name, value in medians.items():
        print(f"{name:<{width}}  {value:7.2f}  {value / torch:7.2f}")
    if args.json:
        args.json.write_text(json.dumps({"repeat": args.repeat, "seconds": medians}, indent=2))


if __name__ == "__main__":
    main()
