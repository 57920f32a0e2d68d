"""Index search benchmark: embedlab's faiss ``Index`` (Flat, IVF-PQ, HNSW) vs brute-force numpy.

Synthetic clustered embeddings (``--clusters`` Gaussian centres plus noise, cosine metric):
``--n`` gallery vectors of ``--dim`` dimensions and ``--queries`` held-out queries from the same
centres. For each factory: the build time (training included), the query throughput at k=10 and
recall@10 against the exact neighbours. The baseline is the search people write by hand: one
``queries @ gallery.T`` matrix product in numpy and ``np.argpartition`` of each row (chunked to
bound memory), whose ranking is the ground truth. "speed-up" is the numpy search time over the
index's. One process, ``--threads`` threads for BLAS and faiss.

Usage: ``python benchmarks/search.py [--n 200000] [--dim 128] [--queries 2000] [--threads 2]
[--json out.json]`` (``benchmarks/readme_figures.py`` records the README's table with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--factories",
        nargs="+",
        default=["Flat", "IVF1024,PQ32", "HNSW32"],
        help="faiss index_factory strings",
    )
    parser.add_argument("--json", help="also write the settings and the table to this file")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import faiss
    import numpy as np
    import pandas as pd

    from embedlab.inference import Index

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)

    def sample(n: int) -> np.ndarray:
        x = centres[rng.integers(0, args.clusters, n)]
        x = x + 0.5 * rng.normal(size=x.shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery, queries = sample(args.n), sample(args.queries)
    paths = [f"g{i}" for i in range(args.n)]

    start = time.perf_counter()
    truth = np.empty((args.queries, 10), dtype=np.int64)
    for lo in range(0, args.queries, 256):
        scores = queries[lo : lo + 256] @ gallery.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        truth[lo : lo + 256] = np.take_along_axis(top, order, 1)
    numpy_s = time.perf_counter() - start
    print(f"numpy brute force: {numpy_s:.2f} s", flush=True)
    rows = [
        {
            "method": "numpy brute force",
            "build s": 0.0,
            "queries/s": args.queries / numpy_s,
            "recall@10": 1.0,
            "speed-up": 1.0,
        }
    ]
    position = {p: i for i, p in enumerate(paths)}
    for factory in args.factories:
        start = time.perf_counter()
        index = Index.build(gallery, paths, factory, "cosine", train_size=100_000)
        build_s = time.perf_counter() - start
        params = {"nprobe": 32} if factory.startswith("IVF") else {}
        params |= {"ef_search": 64} if factory.startswith("HNSW") else {}
        start = time.perf_counter()
        hits = index.search(queries, 10, **params)
        search_s = time.perf_counter() - start
        found = hits["path"].map(position).to_numpy().reshape(args.queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
        label = f"{factory} " + " ".join(f"{k}={v}" for k, v in params.items())
        print(
            f"{label.strip()}: built in {build_s:.1f} s, searched in {search_s:.2f} s", flush=True
        )
        rows.append(
            {
                "method": label.strip(),
                "build s": build_s,
                "queries/s": args.queries / search_s,
                "recall@10": recall,
                "speed-up": numpy_s / search_s,
            }
        )
    table = pd.DataFrame(rows)
    print(
        f"{args.n:,} x {args.dim}-d gallery, {args.queries:,} queries, k=10, {args.threads} threads"
    )
    print(table.to_markdown(index=False, floatfmt=".3g"))
    if args.json:
        settings = {k: getattr(args, k) for k in ("n", "dim", "queries", "clusters", "threads")}
        with open(args.json, "w") as file:
            json.dump({**settings, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
