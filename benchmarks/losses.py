"""Forward+backward timings of embedlab's losses, side by side with pytorch-metric-learning.

Run: ``python benchmarks/losses.py [--quick] [--threads N]`` (``make bench``).

Both libraries get the same L2-normalised float32 embeddings (a leaf tensor), the same
labels (P identities × K images) and non-squared euclidean distances, in the same
process with the same thread count. Each number is the median of one forward and
backward pass over rounds of alternating blocks (see ``time_pair``). Targets: embedlab
(plain autograd formulas) never slower than PML — embedlab/PML ≤ 1.0 for every shared
loss at every shape — and ≤ 0.25 for batch-all, semi-hard and margin + distance-weighted
at (128, 4, 512); seed-only losses within 2× of embedlab's batch-hard triplet.

``--compile`` adds a column with ``torch.compile`` (inductor; needs a C++ compiler) of each
embedlab loss at the first shape; ``--step`` times one forward + backward of a ResNet-50 at 64×3×256×128 and
prints the share of the batch-hard triplet loss in it.
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
SHARED_LIMIT, FAST_LIMIT = 1.0, 0.25
LossFn = Callable[[Tensor, Tensor], Tensor]
BLOCK = 8  # timed calls per block


def pml_losses(num_classes: int, dim: int) -> dict[str, LossFn]:
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
    circle = losses.CircleLoss(m=0.25, gamma=128)
    multi_similarity = losses.MultiSimilarityLoss(2, 50, 0.5)
    supcon = losses.SupConLoss(temperature=0.1)
    proxy_anchor = losses.ProxyAnchorLoss(num_classes, dim, margin=0.1, alpha=32)
    arcface = losses.ArcFaceLoss(num_classes, dim, margin=28.6, scale=64)
    cosface = losses.CosFaceLoss(num_classes, dim, margin=0.35, scale=64)
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
        "circle": lambda x, y: circle(x, y),
        "multi-similarity + miner": with_miner(
            multi_similarity, miners.MultiSimilarityMiner(epsilon=0.1)
        ),
        "SupCon": lambda x, y: supcon(x, y),
        "proxy-anchor": lambda x, y: proxy_anchor(x, y),
        "ArcFace": lambda x, y: arcface(x, y),
        "CosFace": lambda x, y: cosface(x, y),
    }


def embedlab_losses(num_classes: int, dim: int) -> dict[str, LossFn]:
    return {
        "contrastive": el.ContrastiveLoss(),
        "triplet batch-hard": el.TripletLoss(0.3),
        "triplet batch-all": el.TripletLoss(0.3, miner=em.BatchAllMiner(), nonzero_mean=True),
        "triplet semi-hard": el.TripletLoss(0.3, miner=em.SemiHardMiner()),
        "margin + distance-weighted": el.MarginLoss(),
        "circle": el.CircleLoss(m=0.25, gamma=128),
        "multi-similarity + miner": el.MultiSimilarityLoss(miner=em.MultiSimilarityMiner(0.1)),
        "SupCon": el.SupConLoss(0.1),
        "proxy-anchor": el.ProxyAnchorLoss(num_classes, dim),
        "ArcFace": el.ArcFaceLoss(num_classes, dim),
        "CosFace": el.CosFaceLoss(num_classes, dim),
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


def compiled_ms(fn: LossFn, x: Tensor, y: Tensor, warmup: int, repeats: int) -> float:
    """Median ms of forward+backward of ``torch.compile(fn)`` (inductor), after compiling."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    compiled(x, y).backward()  # compile outside the timing
    x.grad = None
    return time_pair(compiled, compiled, x, y, warmup, max(1, repeats // 2))[0]


def compiled_cell(fn: LossFn, x: Tensor, y: Tensor, warmup: int, repeats: int, first: bool) -> str:
    """The compiled timing at the first shape only (each compilation takes tens of seconds)."""
    return f"{compiled_ms(fn, x, y, warmup, repeats):.2f}" if first else "-"


def step_share(threads: int) -> str:
    """One ResNet-50 forward+backward at 64×3×256×128 against the loss's forward+backward."""
    from torchvision.models import resnet50

    model = resnet50(num_classes=2048)
    images = torch.randn(64, 3, 256, 128)
    y = torch.arange(16).repeat_interleave(4)
    loss = el.TripletLoss(0.3)
    times = []
    for _ in range(2):  # the first call warms up
        start = time.perf_counter()
        features = model(images)
        loss(features, y).backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    x = torch.randn(64, 2048, requires_grad=True)
    loss_ms, _ = time_pair(loss, loss, x, y, 2, 4)
    return (
        f"ResNet-50 step (64×3×256×128, forward + backward, {threads} threads): {times[-1]:.1f} s; "
        f"batch-hard triplet loss on its 64×2048 output: {loss_ms:.2f} ms "
        f"= {100 * loss_ms / 1e3 / times[-1]:.3f} % of the step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both libraries")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile column")
    parser.add_argument("--step", action="store_true", help="loss share of a ResNet-50 step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warmup, repeats = (2, 2) if args.quick else (2, 12)
    table = Table(title=f"forward+backward, median ms ({args.threads} threads, float32, CPU)")
    for col in (
        "P×K×D",
        "loss",
        "embedlab ms",
        "PML ms",
        "embedlab/PML",
        "vs batch-hard",
        "target",
        *(["compiled ms"] if args.compile else []),
    ):
        table.add_column(col, justify="left" if col == "loss" else "right")
    failures = 0
    for p, k, d in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = F.normalize(torch.randn(p * k, d, generator=gen), dim=1).requires_grad_()
        y = torch.arange(p).repeat_interleave(k)
        ours = embedlab_losses(p, d)
        pml = pml_losses(p, d)
        hard = ours["triplet batch-hard"]
        for name, fn in ours.items():
            big = (p, k, d) == (128, 4, 512)
            if name in pml:
                ms, ref_ms = time_pair(fn, pml[name], x, y, warmup, repeats)
                limit = FAST_LIMIT if big and name in FAST_AT_SCALE else SHARED_LIMIT
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
                *(
                    [compiled_cell(fn, x, y, warmup, repeats, first=(p, k, d) == SHAPES[0])]
                    if args.compile
                    else []
                ),
            )
        table.add_section()
    Console(width=160).print(table)
    if args.step:
        print(step_share(args.threads))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"targets missed: {failures}   (load average at the end: {load} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
