"""CrossBatchMemory (XBM): the authors' composition (paper mode), the joint loss over batch ∪
memory (joint mode), FIFO, resume, DDP."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

import loss_reference as ref
from embedlab import losses as L
from embedlab.distances import batch_as_references
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


def official_contrastive(
    col: Tensor, col_y: Sequence[int], row: Tensor, row_y: Sequence[int], margin: float = 0.5
) -> Tensor:
    """The XBM authors' ContrastiveLoss.forward (ret_benchmark/losses/contrastive_loss.py),
    one anchor and one reference at a time: inputs L2-normalised, S = col·rowᵀ."""
    epsilon = 1e-5
    loss = []
    for i in range(len(col_y)):
        pos_loss = col.sum() * 0.0
        neg_loss = col.sum() * 0.0
        for j in range(len(row_y)):
            sim = torch.dot(col[i], row[j])
            s = float(sim.detach())
            if row_y[j] == col_y[i] and s < 1 - epsilon:
                pos_loss = pos_loss + (-sim + 1)
            if row_y[j] != col_y[i] and s > margin:
                neg_loss = neg_loss + sim
        loss.append(pos_loss + neg_loss)
    return torch.stack(loss).sum() / len(col_y)


def official_step(
    feats: Tensor, y: Sequence[int], memory: Tensor, memory_y: Sequence[int], size: int, w: float
) -> Tensor:
    """The XBM authors' training step after START_ITERATION (ret_benchmark/engine/trainer.py):
    enqueue the detached batch, then loss(batch, batch) + WEIGHT·loss(batch, memory)."""
    queue = torch.cat([memory, feats.detach()])[-size:]
    queue_y = (list(memory_y) + list(y))[-size:]
    loss = official_contrastive(feats, y, feats, y)
    return loss + w * official_contrastive(feats, y, queue, queue_y)


def unit_batch(seed: int, n: int = 8, dim: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """Raw embeddings (requiring grad), their L2-normalised rows, labels in 0..3."""
    raw, y = batch(seed, n, dim)
    return raw, F.normalize(raw, dim=1), y


@pytest.mark.parametrize(
    ("stored", "size", "weight"),
    [(11, 64, 1.0), (16, 16, 0.5), (0, 8, 1.0)],
    ids=["filling", "full-drops-oldest", "batch-only"],
)
def test_paper_mode_is_the_authors_composition(stored: int, size: int, weight: float) -> None:
    """Loss and gradient of one step equal the authors' loops on a fixed memory."""
    xbm = L.CrossBatchMemory(
        L.CosineContrastiveLoss(), memory_size=size, embedding_dim=5, memory_weight=weight
    ).double()
    _, memory, memory_y = unit_batch(20, n=stored)
    if stored:
        xbm.enqueue(memory.detach(), memory_y)
    raw, feats, y = unit_batch(21)
    value = xbm(feats, y)
    expected = official_step(feats, y.tolist(), memory.detach(), memory_y.tolist(), size, weight)
    torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    (g,) = torch.autograd.grad(value, raw, retain_graph=True)
    (g_ref,) = torch.autograd.grad(expected, raw)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-12)
    assert g.abs().sum() > 0
    # the two terms, as the authors log them (batch_loss, xbm_loss)
    batch_only = official_contrastive(feats, y.tolist(), feats, y.tolist())
    stats = xbm.stats  # float32
    torch.testing.assert_close(stats["batch_loss"], batch_only.detach().float())
    torch.testing.assert_close(stats["memory_loss"], ((expected - batch_only) / weight).float())


def test_paper_mode_divides_by_the_anchors_not_the_pairs() -> None:
    """Memory entries that contribute nothing (far negatives) leave the loss unchanged."""
    _, feats, y = unit_batch(22)
    feats = torch.cat([feats, torch.zeros(8, 1, dtype=feats.dtype)], 1)  # a sixth axis, unused
    far = torch.eye(6, dtype=feats.dtype)[5].repeat(40, 1)  # orthogonal to every anchor: S = 0
    plain = L.CrossBatchMemory(L.CosineContrastiveLoss(), memory_size=64, embedding_dim=6)
    padded = L.CrossBatchMemory(L.CosineContrastiveLoss(), memory_size=64, embedding_dim=6)
    padded.enqueue(far, torch.arange(40) + 10)
    a, b = plain.double()(feats, y), padded.double()(feats, y)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert padded.filled == 48


def test_paper_mode_memory_stays_empty_before_start_step() -> None:
    loss = L.CosineContrastiveLoss()
    xbm = L.CrossBatchMemory(loss, memory_size=20, embedding_dim=5, start_step=2).double()
    seen = []
    for step in range(4):
        _, feats, y = unit_batch(30 + step)
        value = xbm(feats, y)
        seen.append((feats.detach(), y))
        if step < 2:  # before start_step: the batch term alone, nothing enqueued
            torch.testing.assert_close(value, loss(feats, y))
            assert xbm.filled == 0 and xbm.position == 0
            assert not xbm.memory.any() and xbm.stats["memory_fill"].item() == 0.0
            assert xbm.stats["memory_loss"].item() == 0.0
        else:  # from start_step: filled with the batches since then, the batch included
            assert xbm.filled == 8 * (step - 1)
            memory = torch.cat([f for f, _ in seen[2:-1]] or [feats[:0].detach()])
            memory_y = [int(v) for _, lab in seen[2:-1] for v in lab]
            expected = official_step(feats, y.tolist(), memory, memory_y, 20, 1.0)
            torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    kept = torch.cat([f for f, _ in seen[2:]])
    assert torch.equal(xbm.memory[:16], kept) and xbm.steps == 4


def test_paper_mode_validation_leaves_the_memory_alone() -> None:
    xbm = L.CrossBatchMemory(L.CosineContrastiveLoss(), memory_size=20, embedding_dim=5).double()
    _, memory, memory_y = unit_batch(40)
    xbm.enqueue(memory.detach(), memory_y)
    _, feats, y = unit_batch(41)
    xbm.eval()
    value = xbm(feats, y)
    # the stored memory plus the batch, as a training step would see it
    expected = official_step(feats, y.tolist(), memory.detach(), memory_y.tolist(), 64, 1.0)
    torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    assert xbm.filled == 8 and xbm.steps == 0 and torch.equal(xbm.memory[:8], memory.detach())


def test_paper_mode_under_ddp_pairs_the_local_anchors_with_the_global_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 1 of 2 (simulated gather): the memory gains both halves, the anchors are rank 1's."""
    xbm = L.CrossBatchMemory(L.CosineContrastiveLoss(), memory_size=30, embedding_dim=5).double()
    _, memory, memory_y = unit_batch(50, n=18)
    xbm.enqueue(memory.detach(), memory_y)
    _, other, other_y = unit_batch(51, n=4)  # rank 0's half of the step
    raw, feats, y = unit_batch(52, n=4)

    def gathered(e: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]:
        return torch.cat([other.detach(), e]), torch.cat([other_y, labels]), 4

    monkeypatch.setattr(xbm, "_global", gathered)
    value = xbm(feats, y)
    queue = torch.cat([memory.detach(), other.detach()])
    queue_y = memory_y.tolist() + other_y.tolist()
    expected = official_step(feats, y.tolist(), queue, queue_y, 30, 1.0)
    torch.testing.assert_close(value, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(value, raw, retain_graph=True)[0],
        torch.autograd.grad(expected, raw)[0],
        atol=1e-12,
        rtol=1e-12,
    )


def test_a_compiled_loss_follows_batch_as_references() -> None:
    """torch.compile(fullgraph=True) traces the memory term and guards on the switch."""
    torch._dynamo.reset()
    _, feats, y = unit_batch(70, n=12)
    _, memory, memory_y = unit_batch(71, n=7)
    loss = L.CosineContrastiveLoss()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)

    def grad(f) -> Tensor:  # type: ignore[no-untyped-def]
        return torch.autograd.grad(f(feats, y, memory, memory_y), feats, retain_graph=True)[0]

    both_sides = grad(compiled)
    with batch_as_references():
        anchors_only = grad(compiled)
        torch.testing.assert_close(anchors_only, grad(loss))
    torch.testing.assert_close(both_sides, grad(loss))
    assert not torch.allclose(both_sides, anchors_only)


def test_paper_mode_needs_a_memory_of_one_batch() -> None:
    xbm = L.CrossBatchMemory(L.CosineContrastiveLoss(), memory_size=4, embedding_dim=5)
    _, feats, y = unit_batch(60)
    with pytest.raises(ValueError, match="less than one batch"):
        xbm.double()(feats, y)
    with pytest.raises(ValueError, match="mode"):
        L.CrossBatchMemory(L.CosineContrastiveLoss(), 8, 5, mode="both")  # type: ignore[arg-type]


def test_first_step_is_the_plain_loss_then_the_memory_joins() -> None:
    xbm = L.CrossBatchMemory(
        L.ContrastiveLoss(), memory_size=20, embedding_dim=5, mode="joint"
    ).double()
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
    xbm = L.CrossBatchMemory(
        L.ContrastiveLoss(), memory_size=12, embedding_dim=5, start_step=2, mode="joint"
    )
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
    a = L.CrossBatchMemory(
        L.ContrastiveLoss(), memory_size=10, embedding_dim=5, mode="joint"
    ).double()
    for step in range(3):
        a(*batch(step))
    b = L.CrossBatchMemory(
        L.ContrastiveLoss(), memory_size=10, embedding_dim=5, mode="joint"
    ).double()
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
        xbm = L.CrossBatchMemory(
            L.ContrastiveLoss(), memory_size=40, embedding_dim=5, mode="joint"
        ).double()
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
    one = L.CrossBatchMemory(
        L.ContrastiveLoss(), memory_size=40, embedding_dim=5, mode="joint"
    ).double()
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
            "--trainer.max_epochs=3",
            "--data.batches_per_epoch=8",
            "--trainer.callbacks=null",
        ]
    )
    assert code in (0, None)
    (ckpt,) = tmp_path.rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    (extra,) = [v for k, v in state.items() if k.endswith("_extra_state")]
    # the preset's memory starts at step 20: steps 20..23 enqueued batches of 120
    assert extra["steps"] == 24 and extra["filled"] == 4 * 120
