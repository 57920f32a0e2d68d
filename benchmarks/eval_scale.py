"""The exact ranking engine (``embedlab.metrics.evaluate``) at scale: a device against the CPU.

    python benchmarks/eval_scale.py --device cuda --out gpu_check_out/eval     # full size
    python benchmarks/eval_scale.py --tiny --device cpu --out /tmp/eval        # CI sized

Two scenarios on synthetic clustered embeddings (float32, cosine):

* ``market``: 3,368 queries x 15,913 gallery x 2048-d, 751 identities, 6 cameras, with
  distractors (label 0) and junk (label -1): the ReID protocol. ``--tiny``: 200 x 1,000 x 64.
* ``sop``: 60,502 items x 512-d leave-one-out, 11,316 classes. ``--tiny``: 2,000 x 64.

The reference is ``evaluate`` on CPU tensors (its candidate-based CPU ranking). The candidate is the
same call on CUDA tensors with ``--device cuda``; with ``--device cpu`` it is the CPU running the
accelerator's code path (``embedlab.metrics.positive_ranks.CPU_STRATEGY = "torch"``: every row sorted)
with another chunk size. Every scalar metric must agree within 1e-6. Output:
``OUT/eval_scale.md`` and ``OUT/eval_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

TOLERANCE = 1e-6
FULL = {"market": (3368, 15913, 2048, 751), "sop": (60502, 512, 11316)}
TINY = {"market": (200, 1000, 64, 40), "sop": (2000, 64, 400)}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_market(nq: int, ng: int, dim: int, ids: int, seed: int = 0) -> dict[str, Tensor]:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((ids + 1, dim)))
    cam_bias = 0.3 * _unit(rng.standard_normal((6, dim)))
    ql = rng.integers(1, ids + 1, nq)
    gl = rng.integers(1, ids + 1, ng)
    gl[: ng // 6] = 0  # distractors
    gl[ng // 6 : ng // 6 + ng // 30] = -1  # junk
    qc, gc = rng.integers(0, 6, nq), rng.integers(0, 6, ng)

    def embed(labels: np.ndarray, cams: np.ndarray) -> np.ndarray:
        base = centres[np.maximum(labels, 0)]
        odd = labels <= 0
        base[odd] = _unit(rng.standard_normal((int(odd.sum()), dim)))
        noise = rng.standard_normal((len(labels), dim)).astype(np.float32)
        return _unit(base + cam_bias[cams] + 1.2 * noise / math.sqrt(dim))

    arrays = {"q": embed(ql, qc), "ql": ql, "qc": qc, "g": embed(gl, gc), "gl": gl, "gc": gc}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def make_sop(n: int, dim: int, classes: int, seed: int = 0) -> dict[str, Tensor]:
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, classes, n))
    centres = _unit(rng.standard_normal((classes, dim)))
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    x = _unit(centres[labels] + 1.5 * noise / math.sqrt(dim))
    return {"x": torch.from_numpy(x), "labels": torch.from_numpy(labels)}


def run(scenario: str, data: dict[str, Tensor], device: str, **options: Any) -> dict[str, Any]:
    from embedlab.metrics import evaluate

    moved = {k: v.to(device) for k, v in data.items()}
    if scenario == "market":
        return evaluate(
            moved["q"], moved["ql"], moved["g"], moved["gl"], moved["qc"], moved["gc"], **options
        )
    return evaluate(moved["x"], moved["labels"], ks=(1, 10, 100, 1000), **options)


def timed(fn: Callable[[], dict[str, Any]], device: str) -> tuple[dict[str, Any], float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def scalars(result: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
    }


def compare(scenario: str, data: dict[str, Tensor], device: str, tiny: bool) -> dict[str, Any]:
    from embedlab.metrics import positive_ranks as ranking

    reference, cpu_s = timed(lambda: run(scenario, data, "cpu"), "cpu")
    if device == "cuda":
        run(scenario, data, "cuda")  # warm-up: CUDA context, kernels
        candidate, device_s = timed(lambda: run(scenario, data, "cuda"), "cuda")
        label = "cuda"
    else:
        saved = ranking.CPU_STRATEGY
        ranking.CPU_STRATEGY = "torch"
        try:
            candidate, device_s = timed(lambda: run(scenario, data, "cpu", chunk_size=37), "cpu")
        finally:
            ranking.CPU_STRATEGY = saved
        label = "cpu (accelerator code path, chunk 37)"
    ref, cand = scalars(reference), scalars(candidate)
    shared = sorted(set(ref) & set(cand))
    diffs = {k: abs(ref[k] - cand[k]) for k in shared}
    worst = max(diffs.values()) if diffs else math.nan
    cmc_diff = 0.0
    if "cmc" in reference and "cmc" in candidate:
        cmc_diff = float(
            np.max(np.abs(np.asarray(reference["cmc"]) - np.asarray(candidate["cmc"])))
        )
    shapes = {k: list(v.shape) for k, v in data.items() if v.ndim == 2}
    return {
        "scenario": scenario,
        "shapes": shapes,
        "reference": "cpu",
        "candidate": label,
        "cpu_s": cpu_s,
        "candidate_s": device_s,
        "speedup": cpu_s / device_s,
        "metrics": ref,
        "candidate_metrics": cand,
        "max_abs_diff": max(worst, cmc_diff),
        "equal": bool(shared) and max(worst, cmc_diff) <= TOLERANCE and set(ref) == set(cand),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### Evaluation at scale ({result['device']}, {'tiny' if result['tiny'] else 'full'} sizes)",
        "",
        "| scenario | shapes | CPU s | candidate | candidate s | CPU/candidate | "
        "max abs diff | equal (1e-6) |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        shapes = " / ".join("x".join(str(n) for n in s) for s in row["shapes"].values())
        lines.append(
            f"| {row['scenario']} | {shapes} | {row['cpu_s']:.3f} | {row['candidate']} | "
            f"{row['candidate_s']:.3f} | {row['speedup']:.2f} | {row['max_abs_diff']:.1e} | "
            f"{'yes' if row['equal'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out") / "eval")
    parser.add_argument("--scenarios", default="market,sop")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    sizes = TINY if args.tiny else FULL
    rows = []
    for scenario in args.scenarios.split(","):
        if scenario == "market":
            data = make_market(*sizes["market"])
        elif scenario == "sop":
            data = make_sop(*sizes["sop"])
        else:
            parser.error(f"unknown scenario {scenario!r} (market, sop)")
        rows.append(compare(scenario, data, args.device, args.tiny))
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "tiny": args.tiny,
        "tolerance": TOLERANCE,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "eval_scale.md").write_text(table)
    print(table)
    if not all(r["equal"] for r in rows):
        raise SystemExit("eval_scale: the candidate's metrics differ from the CPU reference")
    return result


if __name__ == "__main__":
    main()
