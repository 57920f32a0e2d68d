"""CrossBatchMemory (XBM): the loss over (batch, batch ∪ memory) pairs, FIFO, resume, DDP."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

import loss_reference as ref
from embedlab import losses as L
from embedlab.miners import BatchAllMiner, SemiHardMiner


def contrastive_with_refs(
    x: Tensor, y: Sequence[int], mem: Tensor, mem_y: Sequence[int], neg_margin: float = 1.0
) -> Tensor:
    """Hadsell et al.'s pairs (i, j), i in the batch, j in batch ∪ memory, j ≠ i."""
    cols = torch.cat([x, mem.detach()])
    labels = list(y) + list(mem_y)
    terms = []
    for i in range(len(y)):
        for j in range(len(labels)):
            if j == i:
                continue
            d = torch.linalg.vector_norm(x[i] - cols[j])
            same = labels[j] == y[i]
            terms.append(0.5 * (d**2 if same else ref.relu(neg_margin - d) ** 2))
    return torch.stack(terms).sum() / len(terms)


def batch(seed: int, n: int = 8, dim: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (0.5 * torch.randn(n, dim, generator=g, dtype=torch.float64)).requires_grad_()
    return x, torch.randint(0, 4, (n,), generator=g)


def test_first_step_is_the_plain_loss_then_the_memory_joins() -> None:
    xbm = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=20, embedding_dim=5).double()
    x1, y1 = batch(0)
    torch.testing.assert_close(xbm(x1, y1), L.ContrastiveLoss()(x1, y1))
    x2, y2 = batch(1)
    value = xbm(x2, y2)
    expected = contrastive_with_refs(x2, y2.tolist(), x1.detach(), y1.tolist())
    torch.testing.assert_close(value, expected, atol=1e-10, rtol=1e-10)
    (g,) = torch.autograd.grad(value, x2)
    (g_ref,) = torch.autograd.grad(expected, x2)
    torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)
    assert xbm.stats["memory_fill"].item() == pytest.approx(16 / 20)


@pytest.mark.parametrize(
    "loss",
    [
        L.TripletLoss(),
        L.TripletLoss(miner=BatchAllMiner()),
        L.TripletLoss(miner=SemiHardMiner()),
        L.MultiSimilarityLoss(),
        L.CircleLoss(),
        L.SupConLoss(),
        L.RankedListLoss(),
        L.RankedListLoss(paper_gradient=False),
    ],
    ids=repr,
)
def test_every_reference_loss_is_finite_with_references(loss: L.MetricLoss) -> None:
    x, y = batch(2, n=10)
    mem, mem_y = batch(3, n=6)
    with_refs = loss.double()(x, y, mem.detach(), mem_y)
    assert torch.isfinite(with_refs)
    (g,) = torch.autograd.grad(with_refs, x)
    assert torch.isfinite(g).all()


def test_batch_hard_triplet_mines_over_batch_and_memory() -> None:
    x, y = batch(4, n=10)
    mem, mem_y = batch(5, n=7)
    value = L.TripletLoss(margin=0.3).double()(x, y, mem.detach(), mem_y)
    cols, labels = torch.cat([x, mem.detach()]), y.tolist() + mem_y.tolist()
    terms = []
    for a in range(len(y)):
        d = [torch.linalg.vector_norm(x[a] - cols[j]) for j in range(len(labels))]
        ps = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        ns = [j for j in range(len(labels)) if labels[j] != labels[a]]
        if ps and ns:
            p = max(ps, key=lambda j: float(d[j]))
            n = min(ns, key=lambda j: float(d[j]))
            terms.append(ref.relu(0.3 + d[p] - d[n]))
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(
        torch.autograd.grad(value, x)[0], torch.autograd.grad(expected, x)[0]
    )


def test_fifo_wraps_and_start_step() -> None:
    xbm = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=12, embedding_dim=5, start_step=2)
    xbm = xbm.double()
    seen = []
    for step in range(4):
        x, y = batch(10 + step)
        value = xbm(x, y)
        if step < 2:  # before start_step: the plain loss
            torch.testing.assert_close(value, L.ContrastiveLoss()(x, y))
        seen.append(x.detach())
    # 32 embeddings into 12 slots: the last 12 are kept, in ring order
    last = torch.cat(seen)[-12:]
    assert xbm.filled == 12 and xbm.steps == 4
    rows = {tuple(r.tolist()) for r in xbm.memory}
    assert rows == {tuple(r.tolist()) for r in last}


def test_state_dict_restores_memory_and_counters() -> None:
    a = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=10, embedding_dim=5).double()
    for step in range(3):
        a(*batch(step))
    b = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=10, embedding_dim=5).double()
    b.load_state_dict(a.state_dict())
    assert (b.filled, b.position, b.steps) == (a.filled, a.position, a.steps)
    assert torch.equal(a.memory, b.memory) and torch.equal(a.memory_labels, b.memory_labels)
    x, y = batch(9)
    torch.testing.assert_close(a(x, y), b(x, y))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        xbm = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=40, embedding_dim=5).double()
        for step in range(3):
            x, y = batch(100 + step, n=8)  # the global batch of 8; this rank's half
            half = slice(4 * rank, 4 * rank + 4)
            xbm(x.detach()[half].requires_grad_(), y[half])
        if rank == 0:
            torch.save({"memory": xbm.memory, "labels": xbm.memory_labels}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_hold_the_memory_of_one_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "memory.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    got = torch.load(out)
    one = L.CrossBatchMemory(L.ContrastiveLoss(), memory_size=40, embedding_dim=5).double()
    for step in range(3):
        one(*batch(100 + step, n=8))
    assert torch.equal(got["memory"], one.memory)
    assert torch.equal(got["labels"], one.memory_labels)


@pytest.mark.slow
def test_fit_with_the_memory_and_test_from_its_checkpoint(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The memory rides in the checkpoint that fit's final test reloads."""
    from pathlib import Path

    from embedlab.cli import main

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    monkeypatch.setenv("EMBEDLAB_OUTPUT_ROOT", str(tmp_path))
    code = main(
        [
            "fit",
            "--config=experiments/digits_compare.yaml",
            "--model.loss=experiments/losses/xbm_contrastive.yaml",
            "--trainer.max_epochs=1",
            "--data.batches_per_epoch=3",
            "--trainer.callbacks=null",
        ]
    )
    assert code in (0, None)
    (ckpt,) = tmp_path.rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    (extra,) = [v for k, v in state.items() if k.endswith("_extra_state")]
    assert extra["steps"] == 3 and extra["filled"] == 3 * 120
