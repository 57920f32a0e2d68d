"""Sharded embedding (one Parquet file per rank, resumable per shard) and streamed index builds
(bounded chunks, inverted lists and paths on disk, bounded memory, repeated paths left out) from
a folder of shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlab.cli import main
from embedlab.errors import ConfigError
from embedlab.inference import (
    Index,
    embed_to_parquet,
    image_files,
    load_embedder,
    read_embeddings,
    streamed,
)
from embedlab.inference.embed import META_KEY, EmbedStep, embedding_array, shard_from_env
from embedlab.inference.streamed import parse_memory, stream_into
from test_inference import photos, run  # noqa: F401 (run: the module's trained-run fixture)

ROOT = Path(__file__).resolve().parents[1]


def union(folder: Path) -> tuple[list[str], np.ndarray]:
    """The rows of every shard of ``folder``, in rank order."""
    files = sorted(folder.glob("part-*.parquet"))
    read = [read_embeddings(f) for f in files]
    return [p for frame, _ in read for p in frame["path"]], np.concatenate([v for _, v in read])


def test_the_shards_of_two_ranks_are_a_one_process_run(run: Path, tmp_path: Path) -> None:  # noqa: F811
    photos(tmp_path / "photos", count=9)
    embedder = load_embedder(run / "checkpoints" / "last.ckpt", "cpu")
    paths = image_files(tmp_path / "photos")
    whole = embed_to_parquet(embedder, tmp_path / "one.parquet", paths, progress=False)
    frame, vectors = read_embeddings(whole.out)
    for rank in (1, 0):
        result = embed_to_parquet(
            embedder, tmp_path / "shards", paths, batch_size=2, shard=(rank, 2), progress=False
        )
        assert result.out == tmp_path / "shards" / f"part-{rank:05d}.parquet"
        assert result.rows == [4, 5][rank]  # contiguous blocks: 9 // 2, then the rest
    got_paths, got = union(tmp_path / "shards")
    assert got_paths == frame["path"].tolist()
    np.testing.assert_allclose(got, vectors, atol=1e-6)
    meta = json.loads(pq.read_schema(tmp_path / "shards" / "part-00001.parquet").metadata[META_KEY])
    assert meta["shard"] == [1, 2] and meta["model"] == embedder.fingerprint
    with pytest.raises(ConfigError, match="shard 1 of 2 processes"):  # another world size
        embed_to_parquet(embedder, tmp_path / "shards", paths, shard=(1, 3), progress=False)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert shard_from_env({"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}) == (2, 3)
    assert shard_from_env({}) == (0, 1)
    with pytest.raises(ConfigError, match="rank 4 of 4"):
        shard_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_a_rank_killed_mid_shard_resumes_its_own_shard_only(
    run: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photos(tmp_path / "photos", count=12)
    embedder = load_embedder(run / "checkpoints" / "last.ckpt", "cpu")
    paths = image_files(tmp_path / "photos")
    shards = tmp_path / "shards"
    embed_to_parquet(embedder, shards, paths, shard=(0, 2), progress=False)
    rank0 = (shards / "part-00000.parquet").stat().st_mtime_ns
    step = EmbedStep.predict_step

    def dies_at_batch_2(self: EmbedStep, batch, batch_idx: int):  # type: ignore[no-untyped-def]
        if batch_idx == 2:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(EmbedStep, "predict_step", dies_at_batch_2)
        with pytest.raises(RuntimeError, match="killed"):
            embed_to_parquet(
                embedder, shards, paths, batch_size=2, flush_rows=2, shard=(1, 2), progress=False
            )
    parts = sorted((shards / "part-00001.parquet.parts").glob("part-*.parquet"))
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in parts) == 4
    assert not (shards / "part-00001.parquet").exists()
    resumed = embed_to_parquet(embedder, shards, paths, batch_size=2, shard=(1, 2), progress=False)
    assert (resumed.rows, resumed.embedded) == (6, 2)  # its block of 6, four written before
    assert (shards / "part-00000.parquet").stat().st_mtime_ns == rank0  # rank 0 untouched
    assert not (shards / "part-00001.parquet.parts").exists()
    one = embed_to_parquet(embedder, tmp_path / "one.parquet", paths, progress=False)
    frame, vectors = read_embeddings(one.out)
    got_paths, got = union(shards)
    assert got_paths == frame["path"].tolist()
    np.testing.assert_allclose(got, vectors, atol=1e-6)


@pytest.mark.slow
def test_two_processes_with_torchrun_variables_write_one_shard_each(
    run: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    photos(tmp_path / "photos", count=7)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    argv = [sys.executable, "-m", "embedlab", "embed", "--ckpt_path", ckpt]
    argv += ["--images", str(tmp_path / "photos"), "--out", str(tmp_path / "shards")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", WORLD_SIZE="2", MASTER_PORT="1")
    ranks = [
        subprocess.Popen(
            [*argv, "--shard", "auto", "--device", "cpu"],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for process in ranks:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert "rows" in out
    assert main(["embed", "--ckpt_path", ckpt, "--images", str(tmp_path / "photos"),
                 "--out", str(tmp_path / "one.parquet"), "--device", "cpu"]) == 0  # fmt: skip
    frame, vectors = read_embeddings(tmp_path / "one.parquet")
    got_paths, got = union(tmp_path / "shards")
    assert [
        pq.ParquetFile(f).metadata.num_rows for f in sorted((tmp_path / "shards").iterdir())
    ] == [3, 4]
    assert got_paths == frame["path"].tolist()
    np.testing.assert_allclose(got, vectors, atol=1e-6)
    # the folder of shards is an index's input
    assert main(["index", "build", "--embeddings", str(tmp_path / "shards"),
                 "--out", str(tmp_path / "index")]) == 0  # fmt: skip
    assert Index.load(tmp_path / "index").paths == got_paths


def write_shard(file: Path, paths: list[str], vectors: np.ndarray, model: str = "m1") -> None:
    meta = {"checkpoint": "c.ckpt", "config": None, "dim": vectors.shape[1], "model": model}
    table = pa.table({"path": pa.array(paths), "embedding": embedding_array(vectors)})
    file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), file)


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)).astype(np.float32)
    return centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("on_disk", [True, False], ids=["on_disk", "in_memory_lists"])
def test_an_ivf_index_streamed_from_three_shards_finds_the_in_memory_neighbours(
    on_disk: bool, tmp_path: Path
) -> None:
    d, nlist = 16, 8
    vectors = clustered(3000, d, 0)
    paths = [f"img/{i:05d}.png" for i in range(len(vectors))]
    for k, (lo, hi) in enumerate([(0, 1000), (1000, 1700), (1700, 3000)]):
        write_shard(tmp_path / "shards" / f"part-{k:05d}.parquet", paths[lo:hi], vectors[lo:hi])
    out = tmp_path / "index"
    argv = ["index", "build", "--embeddings", str(tmp_path / "shards"), "--out", str(out)]
    argv += ["--factory", f"IVF{nlist},Flat", "--metric", "euclidean", "--max_memory", "64KB"]
    argv += ["--train_size", "500"]
    assert main([*argv, *(["--on_disk"] if on_disk else [])]) == 0
    assert (out / "index.ivfdata").is_file() == on_disk
    assert not list(out.glob(".blocks-*"))
    moved = tmp_path / "moved"
    out.rename(moved)  # the lists are found next to the index wherever the folder goes
    streamed = Index.load(moved)
    assert streamed.paths == paths and len(streamed) == 3000
    # the same trained quantizer, every vector added at once, in memory
    ivf = faiss.extract_index_ivf(streamed.index)
    centroids = ivf.quantizer.reconstruct_n(0, nlist)
    quantizer = faiss.IndexFlatL2(d)
    quantizer.add(centroids)
    reference = faiss.IndexIVFFlat(quantizer, d, nlist)
    reference.is_trained = True
    reference.add(vectors)
    queries = clustered(100, d, 1)
    reference.nprobe = nlist
    expected_d, expected_i = reference.search(queries, 10)
    hits = streamed.search(queries, 10, nprobe=nlist)
    assert hits["path"].tolist() == [paths[i] for i in expected_i.reshape(-1)]
    np.testing.assert_allclose(
        hits["distance"].to_numpy(), np.sqrt(expected_d.reshape(-1)), rtol=1e-5, atol=1e-5
    )
    # exact at nprobe = nlist: the flat index's neighbours
    exact = Index.build(vectors, paths, "Flat", "euclidean").search(queries, 10)
    assert hits["path"].tolist() == exact["path"].tolist()
    # the quantizer was trained on the sample Index.build draws from all vectors at once
    in_memory = Index.build(vectors, paths, f"IVF{nlist},Flat", "euclidean", train_size=500)
    own = faiss.extract_index_ivf(in_memory.index).quantizer.reconstruct_n(0, nlist)
    np.testing.assert_allclose(own, centroids, atol=1e-4)


def test_streaming_reads_bounded_chunks_and_refuses_mixed_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors = clustered(900, 8, 2)
    paths = [f"p{i}" for i in range(900)]
    for k in range(3):
        write_shard(tmp_path / "s" / f"part-{k:05d}.parquet", paths[k::3], vectors[k::3])
    index = Index.empty(8, "IVF4,Flat", "cosine")
    budget = parse_memory("4KB")
    files = sorted((tmp_path / "s").glob("*.parquet"))
    with pytest.warns(RuntimeWarning, match="training on 128 vectors, not 200"):
        stats = stream_into(index, files, budget, 200)
    assert stats.max_chunk_rows * 8 * 4 * 4 <= budget and stats.chunks >= 3 * 300 // 32
    assert (stats.trained_on, stats.added, len(index.paths)) == (128, 900, 900)
    assert parse_memory("512MB") == 512 * 2**20 and parse_memory("2GiB") == 2 * 2**30
    with pytest.raises(ConfigError, match="max_memory: expected a size"):
        parse_memory("lots")
    with pytest.raises(ConfigError, match="on_disk: keeps the inverted lists of a new IVF"):
        stream_into(Index.empty(8, "Flat"), files, budget, on_disk=tmp_path)
    write_shard(tmp_path / "s" / "part-00003.parquet", ["x"], vectors[:1], model="m2")
    build = ["index", "build", "--out", str(tmp_path / "i"), "--embeddings"]
    assert main([*build, str(tmp_path / "s")]) == 2
    assert "part-00003.parquet holds model m2" in capsys.readouterr().err
    assert main([*build, str(tmp_path)]) == 2
    assert "holds no part-*.parquet shards" in capsys.readouterr().err


@pytest.mark.parametrize("collide", [False, True], ids=["hashes", "every_hash_colliding"])
@pytest.mark.parametrize("on_disk", [True, False], ids=["on_disk", "in_memory_lists"])
def test_repeated_paths_are_left_out_with_a_count_per_file(
    on_disk: bool, collide: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if collide:  # one hash for every path: only the paths themselves tell them apart
        monkeypatch.setattr(streamed, "_hashes", lambda paths: np.zeros(len(paths), np.uint64))
    vectors = clustered(400, 8, 3)
    # rows 300-399 hold other vectors of paths 0-299; chunks of 32 rows (--max_memory 4KB)
    rows = [
        [*range(0, 150), 307],  # 307: path 7 again, a later chunk
        [*range(100, 250), 320, 399],  # 100-149 in shard 0; 320 and 399: paths 20 and 99
        [250, 350, *range(251, 300), 305],  # 350: path 250 again, same chunk; 305: path 5
    ]
    paths = [f"img/{i % 300:04d}.png" for i in range(400)]
    files = [tmp_path / "shards" / f"part-{k:05d}.parquet" for k in range(3)]
    for file, picked in zip(files, rows, strict=True):
        write_shard(file, [paths[i] for i in picked], vectors[picked])
    out = tmp_path / "index"
    argv = ["index", "build", "--embeddings", str(tmp_path / "shards"), "--out", str(out)]
    argv += ["--factory", "IVF4,Flat", "--metric", "euclidean", "--max_memory", "4KB"]
    with pytest.warns(RuntimeWarning) as caught:
        assert main([*argv, *(["--on_disk"] if on_disk else [])]) == 0
    left_out = [str(w.message) for w in caught if "left out" in str(w.message)]
    assert left_out == [
        f"1 path(s) of {files[0]} already in the index left out",
        f"52 path(s) of {files[1]} already in the index left out",
        f"2 path(s) of {files[2]} already in the index left out",
    ]
    built = Index.load(out)
    assert built.paths == paths[:300]  # each path once, where it came first
    hits = built.search(vectors, 1, nprobe=4)
    first, again = hits.iloc[:300], hits.iloc[300:]
    assert first["path"].tolist() == paths[:300] and first["distance"].max() < 1e-5
    assert again["distance"].min() > 1e-3  # the vectors of the repeats are not indexed


def test_adding_shards_to_a_streamed_index_and_refusing_on_disk_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors = clustered(350, 8, 4)
    paths = [f"img/{i:04d}.png" for i in range(350)]
    for folder, (lo, hi) in (("a", (0, 200)), ("b", (150, 350))):
        for k, (start, stop) in enumerate([(lo, lo + 100), (lo + 100, hi)]):
            write_shard(tmp_path / folder / f"part-{k:05d}.parquet", paths[start:stop],
                        vectors[start:stop])  # fmt: skip
    build = ["index", "build", "--factory", "IVF4,Flat", "--metric", "euclidean"]
    build += ["--max_memory", "4KB", "--embeddings"]
    assert main([*build, str(tmp_path / "a"), "--out", str(tmp_path / "i")]) == 0
    with pytest.warns(RuntimeWarning) as caught:
        assert main([*build, str(tmp_path / "b"), "--out", str(tmp_path / "i"), "--add"]) == 0
    part = tmp_path / "b" / "part-00000.parquet"
    assert [str(w.message) for w in caught if "left out" in str(w.message)] == [
        f"50 path(s) of {part} already in the index left out"
    ]
    added = Index.load(tmp_path / "i")
    assert added.paths == paths
    assert json.loads((tmp_path / "i" / "meta.json").read_text())["count"] == 350
    hits = added.search(vectors, 1, nprobe=4)
    assert hits["path"].tolist() == paths and hits["distance"].max() < 1e-5
    # inverted lists on disk take no additions: one line naming the index
    capsys.readouterr()
    assert main([*build, str(tmp_path / "a"), "--out", str(tmp_path / "d"), "--on_disk"]) == 0
    for target, extra in ((tmp_path / "d", []), (tmp_path / "i", ["--on_disk"])):
        assert main([*build, str(tmp_path / "b"), "--out", str(target), "--add", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert f"add: {target} keeps (or would keep) its inverted lists on disk" in err
        assert len(err.splitlines()) == 1
    assert len(Index.load(tmp_path / "d")) == 200


def test_an_on_disk_build_writes_its_paths_file_once_and_reads_it_when_searched(
    tmp_path: Path,
) -> None:
    vectors = clustered(300, 8, 5)
    paths = [f"img/{i:04d}.png" for i in range(300)]
    write_shard(tmp_path / "s" / "part-00000.parquet", paths, vectors)
    index = Index.empty(8, "IVF4,Flat", "euclidean")
    out = tmp_path / "index"
    out.mkdir()
    with pytest.warns(RuntimeWarning, match="training on 128 vectors"):
        stats = stream_into(index, [tmp_path / "s" / "part-00000.parquet"], 4096, on_disk=out)
    assert (stats.added, stats.left_out, len(index)) == (300, 0, 300)
    written = (out / "paths.parquet").stat()
    assert pq.read_table(out / "paths.parquet")["path"].to_pylist() == paths
    index.save(out)  # the paths file is the index's already: not written again
    assert (out / "paths.parquet").stat().st_mtime_ns == written.st_mtime_ns
    assert index.search(vectors[:5], 1, nprobe=4)["path"].tolist() == paths[:5]
    index.save(tmp_path / "copy")  # elsewhere: copied
    assert (tmp_path / "copy" / "paths.parquet").read_bytes() == (
        out / "paths.parquet"
    ).read_bytes()
    assert index.paths == paths


@pytest.mark.slow  # two index builds in fresh interpreters, about 20 s on two cores
def test_a_streamed_build_on_disk_holds_neither_the_vectors_nor_the_paths(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "index_memory.py"), "--modes", "streamed"]
    command += ["--sizes", "100000", "500000", "--dim", "32", "--clusters", "20", "--shards", "2"]
    command += ["--path_length", "120", "--factory", "IVF16,Flat", "--max_memory", "4MB"]
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True, cwd=tmp_path)
    small, large = json.loads(out.read_text())["rows"]
    extra = large["rows"] - small["rows"]
    growth = large["streamed peak MiB"] - small["streamed peak MiB"]
    vectors = extra * 32 * 4 / 2**20  # 49 MiB more vectors
    strings = extra * (49 + 120 + 8) / 2**20  # 68 MiB more paths as str objects in a list
    # 16 bytes of path hashes per row (6 MiB) and some noise, a fraction of either
    assert growth < 16 * extra / 2**20 + 8 < min(vectors, strings) / 3, (growth, vectors)
