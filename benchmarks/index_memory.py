"""Peak memory of ``embedlab index build``: streamed with the inverted lists on disk vs in memory.

For each of ``--sizes`` (default 250,000 and 1,000,000 rows) the parent writes synthetic
clustered ``--dim``-d embeddings (``--clusters`` Gaussian centres plus noise, seeded) as
``--shards`` files ``part-<rank>.parquet`` in the format ``embedlab embed --shard`` writes
(``path`` string and ``embedding`` list<float32> columns, the embedding settings in the schema
metadata, row groups of 4,096 rows; paths of ``--path_length`` characters), then runs
``embedlab index build --factory IVF1024,Flat --metric euclidean`` on them in each ``--modes``,
each build in a fresh interpreter (``--worker``):

* ``streamed``: ``--max_memory 64MB --on_disk`` (chunks of vectors, inverted lists and paths
  written to disk);
* ``lists``: ``--max_memory 64MB``: the same chunks, the index (and its paths) in memory;
* ``memory``: ``--max_memory 4GB``: the vectors read in one chunk, as ``index build`` of one
  embeddings file reads them.

``peak MiB`` is the worker's resident high-water mark (``VmHWM`` of ``/proc/self/status``,
reset through ``/proc/self/clear_refs`` once embedlab, faiss and pyarrow are imported) minus its
resident size at that moment: what the build adds. ``vectors MiB`` is ``rows x dim x 4`` bytes.

Usage: ``python benchmarks/index_memory.py [--sizes 250000 1000000] [--out memory.json]``;
``--tiny`` (2,000 and 8,000 rows, IVF16) checks the script in seconds. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: rows per row group, as ``embedlab embed`` writes them (its ``flush_rows``)
ROW_GROUP = 4096
#: the ``index build`` options of each mode (``{max_memory}``: ``--max_memory``)
MODES = {
    "streamed": ["--max_memory", "{max_memory}", "--on_disk"],
    "lists": ["--max_memory", "{max_memory}"],
    "memory": ["--max_memory", "4GB"],
}
TITLES = {"streamed": "streamed on disk", "lists": "lists in memory", "memory": "all in memory"}


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # --worker RESULT EMBEDLAB-ARGUMENTS...
        worker(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--path_length", type=int, default=40, help="characters per path")
    parser.add_argument("--factory", default="IVF1024,Flat")
    parser.add_argument("--max_memory", default="64MB")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--tiny", action="store_true", help="2,000 and 8,000 rows, IVF16")
    parser.add_argument("--out", help="also write the table as JSON")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.factory, args.clusters = [2000, 8000], "IVF16,Flat", 20
    print("peak MiB above the post-import baseline (seconds of the build)", flush=True)
    print(f"{'rows':<10} {'vectors MiB':>11}  " + "  ".join(f"{TITLES[m]:>16}" for m in args.modes))
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="index-memory-") as folder:
            shards = Path(folder) / "shards"
            write_shards(shards, size, args)
            row: dict[str, Any] = {"rows": size, "vectors MiB": size * args.dim * 4 / 2**20}
            for mode in args.modes:
                argv = ["index", "build", "--embeddings", str(shards)]
                argv += ["--out", str(Path(folder) / mode), "--factory", args.factory]
                argv += ["--metric", "euclidean"]
                argv += [option.format(max_memory=args.max_memory) for option in MODES[mode]]
                result = run_worker(Path(folder) / f"{mode}.json", argv)
                if result["count"] != size:
                    raise SystemExit(f"{mode}: {result['count']} vectors indexed, not {size}")
                row[f"{mode} peak MiB"], row[f"{mode} s"] = result["peak MiB"], result["s"]
        rows.append(row)
        cells = [f"{row[f'{m} peak MiB']:>8,.0f} ({row[f'{m} s']:>3.0f} s)" for m in args.modes]
        print(f"{size:<10,} {row['vectors MiB']:>11,.0f}  " + "  ".join(cells), flush=True)
    if args.out:
        keys = ("dim", "shards", "path_length", "factory", "max_memory")
        figure = {**{k: getattr(args, k) for k in keys}, "rows": rows}
        Path(args.out).write_text(json.dumps(figure, indent=2) + "\n")


def write_shards(folder: Path, rows: int, args: argparse.Namespace) -> None:
    """``args.shards`` embedding files of ``rows`` clustered vectors in all, block by block."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedlab.inference.embed import META_KEY, embedding_array

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    meta = {"checkpoint": "bench.ckpt", "config": None, "dim": args.dim, "model": "bench"}
    schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])
    schema = schema.with_metadata({META_KEY: json.dumps(meta).encode()})
    pad = max(0, args.path_length - 34)  # photos/ + pad/ + shop-123/IMG_000000001.jpg
    folders = "photos/" + ("x" * pad + "/" if pad else "")
    bounds = np.linspace(0, rows, args.shards + 1).astype(int)
    for rank in range(args.shards):
        with pq.ParquetWriter(folder / f"part-{rank:05d}.parquet", schema) as writer:
            for start in range(int(bounds[rank]), int(bounds[rank + 1]), ROW_GROUP):
                stop = min(start + ROW_GROUP, int(bounds[rank + 1]))
                labels = rng.integers(0, args.clusters, stop - start)
                noise = rng.normal(scale=0.3, size=(stop - start, args.dim)).astype(np.float32)
                paths = [f"{folders}shop-{i % 997:03d}/IMG_{i:09d}.jpg" for i in range(start, stop)]
                vectors = embedding_array(centres[labels] + noise)
                writer.write_table(pa.table({"path": paths, "embedding": vectors}, schema=schema))


def run_worker(result: Path, argv: list[str]) -> dict[str, Any]:
    """``embedlab`` ``argv`` in a fresh interpreter: its peak MiB, seconds and vector count."""
    command = [sys.executable, __file__, "--worker", str(result), *argv]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"embedlab {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(result.read_text())
    return measured


def status_kib(key: str) -> int:
    """``key`` (``VmRSS``, ``VmHWM``) of ``/proc/self/status``, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise SystemExit(f"/proc/self/status has no {key} (Linux only)")


def worker(result: Path, argv: list[str]) -> None:
    """Run ``embedlab argv`` here and write what it added to the resident memory to ``result``."""
    import faiss  # noqa: F401  (imported before the baseline)
    import pyarrow.parquet  # noqa: F401

    import embedlab.inference.build  # noqa: F401
    from embedlab.cli import main as run_embedlab

    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    base = status_kib("VmRSS")
    start = time.perf_counter()
    code = run_embedlab(argv)
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    if code != 0:
        raise SystemExit(f"embedlab {' '.join(argv)} exited with {code}")
    out = Path(argv[argv.index("--out") + 1])
    count = json.loads((out / "meta.json").read_text())["count"]
    measured = {"peak MiB": (peak - base) / 1024, "s": seconds, "count": count}
    result.write_text(json.dumps(measured))


if __name__ == "__main__":
    main()
