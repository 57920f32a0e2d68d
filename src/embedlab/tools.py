"""Subcommands that are not Lightning trainer methods: data check, evaluate, compare, sweep."""

from __future__ import annotations

import argparse


def run(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "data":
        if not rest or rest[0] != "check":
            raise SystemExit("usage: embedlab data check --dataset NAME --root DIR")
        from embedlab.data.check import main as check_main

        return check_main(rest[1:])
    if command == "evaluate":
        return _evaluate(rest)
    if command == "compare":
        from embedlab.analysis.compare import main as compare_main

        return compare_main(rest)
    if command == "sweep":
        from embedlab.sweep import main as sweep_main

        return sweep_main(rest)
    raise SystemExit(f"unknown command {command!r}")


def _evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="embedlab evaluate",
        description="Embed a dataset with a checkpoint and print/write its retrieval metrics "
        "(the same as `embedlab test --config CONFIG --ckpt_path CKPT`).",
    )
    parser.add_argument("--config", required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", required=True)
    args, extra = parser.parse_known_args(argv)
    from embedlab.cli import lightning_main

    lightning_main(["test", "--config", args.config, "--ckpt_path", args.ckpt_path, *extra])
    return 0
