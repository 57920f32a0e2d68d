"""RetrievalEvaluator under DDP (2 CPU processes, gloo) equals single-process evaluate() exactly."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedlab.metrics import EvalOptions, RetrievalEvaluator, default_metrics, evaluate

WORLD = 2
NUM_QUERY, NUM_GALLERY = 41, 150  # 191 items: not divisible by the world size


def _dataset() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    n = NUM_QUERY + NUM_GALLERY
    labels = rng.integers(0, 20, n)
    centres = rng.standard_normal((20, 16))
    x = centres[labels] + 0.7 * rng.standard_normal((n, 16))
    labels[NUM_QUERY + rng.choice(NUM_GALLERY, 10, replace=False)] = -1
    return {
        "embeddings": torch.from_numpy(x.astype(np.float32)),
        "labels": torch.from_numpy(labels),
        "cameras": torch.from_numpy(rng.integers(0, 3, n)),
        "is_query": torch.arange(n) < NUM_QUERY,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        data = _dataset()
        n = len(data["labels"])
        # What DistributedSampler(shuffle=True) does: a permutation padded with its own first
        # entries to a multiple of the world size, then every WORLD-th entry.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        padded = torch.cat([order, order[: (-n) % WORLD]])
        shard = padded[rank::WORLD]
        metric = RetrievalEvaluator(default_metrics((1, 5), 10), EvalOptions(chunk_size=16))
        for batch in shard.split(32):
            metric.update(
                data["embeddings"][batch],
                data["labels"][batch],
                data["cameras"][batch],
                batch,
                data["is_query"][batch],
                ~data["is_query"][batch],
            )
        result = metric.compute()
        cmc = result.pop("cmc").tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"scalars": result, "cmc": cmc}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    data = _dataset()
    q = data["is_query"]
    expected = evaluate(
        data["embeddings"][q],
        data["labels"][q],
        data["embeddings"][~q],
        data["labels"][~q],
        data["cameras"][q],
        data["cameras"][~q],
        ks=(1, 5),
        max_rank=10,
    )
    assert expected["num_valid_queries"] > 30
    for rank in range(WORLD):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        for key, value in got["scalars"].items():
            assert value == float(expected[key]), (rank, key)
        assert got["cmc"] == expected["cmc"].tolist()
