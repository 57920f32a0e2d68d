"""Subcommands that are not Lightning trainer methods: data check, evaluate, compare, sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


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
        description="Embed the evaluation split with a checkpoint, print the retrieval metrics and "
        "write them as evaluation.json / evaluation.csv in the run folder. Other arguments go to "
        "`embedlab test`, e.g. --data.options.seed=3 (another VehicleID gallery draw).",
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="e.g. runs/X/version_N/checkpoints/last.ckpt"
    )
    parser.add_argument("--config", help="default: config.yaml of the checkpoint's run folder")
    parser.add_argument("--out", help="output folder (default: the checkpoint's run folder)")
    parser.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)"
    )
    parser.add_argument(
        "--flip_test", action="store_true", help="average each image's and its mirror's embedding"
    )
    args, extra = parser.parse_known_args(argv)
    if args.rerank:
        extra.append("--model.test_rerank=true")
    if args.flip_test:
        extra.append("--model.model.init_args.flip_test=true")
    ckpt = Path(args.ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    config = Path(args.config) if args.config else run_dir / "config.yaml"
    if not ckpt.is_file():
        raise SystemExit(f"embedlab evaluate: checkpoint not found: {ckpt}")
    if not config.is_file():
        raise SystemExit(f"embedlab evaluate: no config at {config}; pass --config")
    from embedlab.cli import lightning_main
    from embedlab.report import write_json

    cli = lightning_main(
        [
            "test",
            "--config",
            str(config),
            "--ckpt_path",
            str(ckpt),
            "--trainer.logger=false",
            f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
            *extra,
        ],
        save_config=False,  # the run folder already has its config.yaml
    )
    results = {
        k.removeprefix("test/"): float(v)
        for k, v in cli.trainer.callback_metrics.items()
        if k.startswith("test/")
    }
    out = Path(args.out) if args.out else run_dir
    write_json(out / "evaluation.json", {"checkpoint": str(ckpt), "metrics": results})
    pd.DataFrame([results]).to_csv(out / "evaluation.csv", index=False)
    print(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.csv'}")
    return 0
