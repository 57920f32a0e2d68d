"""Forward+backward timings of embedlab's losses, side by side with pytorch-metric-learning.

Run: ``python benchmarks/losses.py [--quick] [--threads N]`` (``make bench``).

Both libraries get the same L2-normalised float32 embeddings (a leaf tensor), the same
labels (P identities × K images) and non-squared euclidean distances, in the same
process with the same thread count. Each number is the median of one forward and
backward pass over rounds of alternating blocks (see ``time_pair``). Targets (issue 3): embedlab/PML ≤ 0.5 for
every shared loss, ≤ 0.2 for batch-all, semi-hard and margin + distance-weighted at
(128, 4, 512); seed-only losses within 2× of embedlab's batch-hard triplet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor

from embedlab import losses as el
from embedlab import miners as em

SHAPES = [(32, 4, 128), (64, 4, 2048), (128, 4, 512)]
FAST_AT_SCALE = {"triplet batch-all", "triplet semi-hard", "margin + distance-weighted"}
LossFn = Callable[[Tensor, Tensor], Tensor]
BLOCK = 8  # timed calls per block


def pml_losses() -> dict[str, LossFn]:
    """PML equivalents of the shared losses, with settings matching embedlab's defaults."""
    from pytorch_metric_learning import losses, miners, reducers
    from pytorch_metric_learning.distances import LpDistance

    plain = LpDistance(normalize_embeddings=False)  # embedlab does not normalise inside losses

    def with_miner(loss: Callable[..., Tensor], miner: Callable[..., object]) -> LossFn:
        return lambda x, y: loss(x, y, miner(x, y))

    contrastive = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, distance=plain)
    triplet_mean = losses.TripletMarginLoss(
        margin=0.3, distance=plain, reducer=reducers.MeanReducer()
    )
    triplet_nonzero = losses.TripletMarginLoss(margin=0.3, distance=plain)
    margin = losses.MarginLoss(margin=0.2, beta=1.2, learn_beta=True, nu=0.0)
    return {
        "contrastive": lambda x, y: contrastive(x, y),
        "triplet batch-hard": with_miner(triplet_mean, miners.BatchHardMiner(distance=plain)),
        "triplet batch-all": with_miner(
            triplet_nonzero, miners.TripletMarginMiner(0.3, distance=plain, type_of_triplets="all")
        ),
        "triplet semi-hard": with_miner(
            triplet_mean,
            miners.TripletMarginMiner(0.3, distance=plain, type_of_triplets="semihard"),
        ),
        "margin + distance-weighted": with_miner(
            margin, miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
        ),
    }


def embedlab_losses(num_classes: int, dim: int) -> dict[str, LossFn]:
    return {
        "contrastive": el.ContrastiveLoss(),
        "triplet batch-hard": el.TripletLoss(0.3),
        "triplet batch-all": el.TripletLoss(0.3, miner=em.BatchAllMiner(), nonzero_mean=True),
        "triplet semi-hard": el.TripletLoss(0.3, miner=em.SemiHardMiner()),
        "margin + distance-weighted": el.MarginLoss(),
        "quadruplet": el.QuadrupletLoss(),
        "MSML": el.MSMLLoss(),
        "coupled clusters": el.CoupledClustersLoss(),
        "improved triplet": el.ImprovedTripletLoss(),
        "ranked list": el.RankedListLoss(),
        "center": el.CenterLoss(num_classes, dim),
    }


def time_pair(
    first: LossFn, second: LossFn, x: Tensor, y: Tensor, warmup: int, repeats: int
) -> tuple[float, float]:
    """Median ms of forward+backward of two losses, measured in alternating blocks.

    Each round runs a block of calls of one loss, then a block of the other (the order
    swaps every round), discarding the first ``warmup`` calls of each block: every
    timing is a steady-state call, as in ``torch.utils.benchmark``, and a machine whose
    load drifts during the run affects both sides alike.
    """
    times: tuple[list[float], list[float]] = ([], [])
    pairs = [(first, times[0]), (second, times[1])]
    for round_ in range(repeats):
        for fn, out in pairs if round_ % 2 == 0 else pairs[::-1]:
            for i in range(warmup + BLOCK):
                start = time.perf_counter()
                fn(x, y).backward()
                elapsed = time.perf_counter() - start
                x.grad = None
                if i >= warmup:
                    out.append(elapsed * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both libraries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, repeats = (2, 2) if args.quick else (2, 12)
    pml = pml_losses()
    table = Table(title=f"forward+backward, median ms ({args.threads} threads, float32, CPU)")
    for col in (
        "P×K×D",
        "loss",
        "embedlab ms",
        "PML ms",
        "embedlab/PML",
        "vs batch-hard",
        "target",
    ):
        table.add_column(col, justify="left" if col == "loss" else "right")
    failures = 0
    for p, k, d in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = F.normalize(torch.randn(p * k, d, generator=gen), dim=1).requires_grad_()
        y = torch.arange(p).repeat_interleave(k)
        ours = embedlab_losses(p, d)
        hard = ours["triplet batch-hard"]
        for name, fn in ours.items():
            big = (p, k, d) == (128, 4, 512)
            if name in pml:
                ms, ref_ms = time_pair(fn, pml[name], x, y, warmup, repeats)
                limit = 0.2 if big and name in FAST_AT_SCALE else 0.5
                ok = ms / ref_ms <= limit
                ratio, target = f"{ms / ref_ms:.3f}", f"PML ratio ≤ {limit}"
                vs_hard = "-"
            else:
                ms, hard_ms = time_pair(fn, hard, x, y, warmup, repeats)
                ok = name == "center" or ms <= 2 * hard_ms
                ratio, ref_ms, vs_hard = "-", None, f"{ms / hard_ms:.2f}"
                target = "-" if name == "center" else "≤ 2× batch-hard"
            failures += not ok
            table.add_row(
                f"{p}×{k}×{d}",
                name,
                f"{ms:.2f}",
                "-" if ref_ms is None else f"{ref_ms:.2f}",
                ratio,
                vs_hard,
                f"{target} {'ok' if ok else 'MISSED'}" if target != "-" else "-",
            )
        table.add_section()
    Console(width=140).print(table)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"targets missed: {failures}   (load average at the end: {load} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
