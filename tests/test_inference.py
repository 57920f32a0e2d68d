"""From a trained checkpoint to a search system: embed, index build, search (and the README's)."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from embedlab.cli import main
from embedlab.errors import ConfigError
from embedlab.inference import Index, embed_to_parquet, image_files, load_embedder, read_embeddings
from embedlab.inference.embed import EmbedStep
from embedlab.runs import load_module

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def write_digit(path: Path, index: int) -> Path:
    """Digit ``index`` of scikit-learn's set, upscaled to 16×16 RGB (a real, distinct image)."""
    pixels = (load_digits().images[index] * 255 / 16).astype(np.uint8)
    picture = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.convert("RGB").save(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained on an image folder of digits (4 classes); its folder."""
    base = tmp_path_factory.mktemp("inference")
    digits = load_digits()
    by_class = {c: np.flatnonzero(digits.target == c) for c in range(4)}
    for c, indices in by_class.items():
        for k, i in enumerate(indices[:4]):
            write_digit(base / "shop" / "train" / f"d{c}" / f"{k}.png", int(i))
        for k, i in enumerate(indices[4:7]):
            write_digit(base / "shop" / "test" / f"d{c}" / f"{k}.png", int(i))
    recipe = {
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
        "model": {
            "model": {
                "class_path": "embedlab.models.EmbeddingModel",
                "init_args": {
                    "backbone": {
                        "class_path": "embedlab.models.SmallCNN",
                        "init_args": {"in_channels": 3, "width": 8, "depth": 2},
                    },
                    "embedding_dim": 8,
                    "bnneck": True,
                    "normalize": True,
                },
            },
            "loss": {"class_path": "embedlab.losses.TripletLoss"},
        },
        "data": {
            "dataset": {
                "class_path": "embedlab.data.ImageFolder",
                "init_args": {"root": str(base / "shop")},
            },
            "val": "none",
            "p": 2,
            "k": 2,
            "batches_per_epoch": 2,
            "eval_batch_size": 8,
            "transforms": {
                "class_path": "embedlab.data.PlainTransforms",
                "init_args": {"height": SIZE, "width": SIZE},
            },
        },
    }
    (base / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["fit", "--config", str(base / "recipe.yaml"), "--output_root", str(base / "runs")]
    assert main([*argv, "--experiment", "shop"]) in (0, None)
    return base / "runs" / "shop" / "version_0"


def photos(folder: Path, first: int = 100, count: int = 10) -> list[Path]:
    """Digits ``first..first+count`` as PNGs in ``folder`` and a nested sub-folder."""
    return [
        write_digit(folder / ("nested" if i % 2 else "") / f"p{i}.png", first + i)
        for i in range(count)
    ]


def test_load_embedder_is_the_trained_model_without_the_dataset(run: Path, tmp_path: Path) -> None:
    files = photos(tmp_path / "photos", count=5)
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    recipe["data"]["dataset"]["init_args"]["root"] = str(tmp_path / "no_such_dataset")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recipe))
    embedder = load_embedder(run / "checkpoints" / "last.ckpt", "cpu", tmp_path / "config.yaml")
    assert not embedder.training and embedder.model.bnneck
    got = embedder.embed_images(files, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (5, 8)
    from_pil = embedder.embed_images([Image.open(f) for f in files])
    np.testing.assert_allclose(from_pil, got, atol=1e-6)
    # the reference: the whole trained module as `embedlab evaluate` rebuilds it
    module, datamodule = load_module(run, "last")
    batch = torch.stack([datamodule.transforms.eval(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        expected = module.model(batch).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embed_a_folder_names_a_corrupt_image_and_resumes_after_a_kill(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = photos(tmp_path / "photos")
    (tmp_path / "photos" / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "photos.parquet"
    argv = ["embed", "--ckpt_path", ckpt, "--images", str(tmp_path / "photos"), "--out", str(out)]
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        assert main([*argv, "--batch_size", "3"]) == 0
    frame, vectors = read_embeddings(out)
    assert sorted(frame["path"]) == sorted(str(f) for f in files)
    assert vectors.shape == (10, 8) and vectors.dtype == np.float32
    assert pq.read_schema(out).field("embedding").type.value_type == "float"
    skipped = pd.read_csv(tmp_path / "photos.skipped.tsv", sep="\t")
    assert skipped["path"].tolist() == [str(tmp_path / "photos" / "nested" / "broken.jpg")]
    assert "broken.jpg" in capsys.readouterr().err

    # a run killed at its third batch keeps the two batches written before
    embedder = load_embedder(ckpt, "cpu")
    paths = image_files(tmp_path / "photos")
    step = EmbedStep.predict_step

    def dies_at_batch_2(self: EmbedStep, batch, batch_idx: int):  # type: ignore[no-untyped-def]
        if batch_idx == 2:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    killed = tmp_path / "killed.parquet"
    with monkeypatch.context() as patch:
        patch.setattr(EmbedStep, "predict_step", dies_at_batch_2)
        with pytest.raises(RuntimeError, match="killed"):
            embed_to_parquet(embedder, killed, paths, batch_size=2, flush_rows=2, progress=False)
    written = list((tmp_path / "killed.parquet.parts").glob("part-*.parquet"))
    # batches 0 and 1: broken.jpg and three readable images
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in written) == 3
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        result = embed_to_parquet(embedder, killed, paths, batch_size=2, progress=False)
    assert result.rows == 10 and result.embedded == 10 - 3
    resumed, again = read_embeddings(killed)
    assert resumed["path"].is_unique and sorted(resumed["path"]) == sorted(frame["path"])
    order = frame.set_index("path").index.get_indexer(resumed["path"])
    np.testing.assert_allclose(again, vectors[order], atol=1e-6)
    assert not (tmp_path / "killed.parquet.parts").exists()
    # a complete file: the rerun embeds nothing
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        assert embed_to_parquet(embedder, killed, paths, progress=False).embedded == 0


def test_embed_a_split_of_the_run_dataset_has_labels(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "test.parquet"
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["embed", "--ckpt_path", ckpt, "--data_split", "test", "--out", str(out)]) == 0
    frame, vectors = read_embeddings(out)
    assert len(frame) == 12 and vectors.shape == (12, 8)
    assert sorted(set(frame["label"])) == [0, 1, 2, 3] and set(frame["camera"]) == {-1}
    assert frame["path"].str.startswith("test/d").all()


def test_index_build_add_and_search_find_each_image_first(run: Path, tmp_path: Path) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    photos(tmp_path / "a", first=100, count=6)
    photos(tmp_path / "b", first=200, count=6)
    for name in ("a", "b"):
        argv = ["embed", "--ckpt_path", ckpt, "--images", str(tmp_path / name)]
        assert main([*argv, "--out", str(tmp_path / f"{name}.parquet")]) == 0
    index = str(tmp_path / "gallery.index")
    build = ["index", "build", "--embeddings", str(tmp_path / "a.parquet"), "--out", index]
    assert main(build) == 0
    add = ["index", "build", "--embeddings", str(tmp_path / "b.parquet"), "--out", index, "--add"]
    assert main(add) == 0
    meta = yaml.safe_load((tmp_path / "gallery.index" / "meta.json").read_text())
    assert meta["count"] == 12 and meta["dim"] == 8 and meta["checkpoint"] == ckpt
    with pytest.warns(RuntimeWarning, match="already in the index"):
        assert main(add) == 0  # adding the same paths again adds nothing
    assert len(Index.load(index)) == 12

    hits_file = tmp_path / "hits.csv"
    query = ["search", "--index", index, "--k", "5", "--out", str(hits_file)]
    assert main([*query, "--ckpt_path", ckpt, "--images", str(tmp_path / "b")]) == 0
    hits = pd.read_csv(hits_file)
    assert list(hits.columns) == ["query", "rank", "path", "distance"]
    assert hits.groupby("query").size().tolist() == [5] * 6
    first = hits[hits["rank"] == 1]
    assert (first["query"] == first["path"]).all()
    assert first["distance"].abs().max() <= 1e-5
    assert (hits.groupby("query")["distance"].diff().dropna() >= -1e-6).all()
    # the same queries from their embeddings file
    assert main([*query, "--embeddings", str(tmp_path / "b.parquet")]) == 0
    again = pd.read_csv(hits_file)
    pd.testing.assert_frame_equal(
        again.sort_values(["query", "rank"]).reset_index(drop=True),
        hits.sort_values(["query", "rank"]).reset_index(drop=True),
        atol=1e-5,
    )


def test_an_index_refuses_queries_and_additions_of_another_model(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    photos(tmp_path / "a", first=100, count=4)
    embed = ["embed", "--images", str(tmp_path / "a")]
    assert main([*embed, "--ckpt_path", str(ckpt), "--out", str(tmp_path / "a.parquet")]) == 0
    index = str(tmp_path / "a.index")
    assert (
        main(["index", "build", "--embeddings", str(tmp_path / "a.parquet"), "--out", index]) == 0
    )
    # the same weights in another folder are the same model; changed weights are not
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    shutil.copy(ckpt, copy / "checkpoints" / "same.ckpt")
    state = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] = state["state_dict"][name] + 0.01
    torch.save(state, copy / "checkpoints" / "other.ckpt")
    query = ["search", "--index", index, "--out", str(tmp_path / "hits.csv"), "--k", "2"]
    images = ["--images", str(tmp_path / "a")]
    capsys.readouterr()
    assert main([*query, *images, "--ckpt_path", str(copy / "checkpoints" / "same.ckpt")]) == 0
    assert "warning" not in capsys.readouterr().err
    other = str(copy / "checkpoints" / "other.ckpt")
    assert main([*query, *images, "--ckpt_path", other]) == 2
    line = error_line(capsys)
    assert "other.ckpt" in line and "the index holds model" in line, line
    assert main([*embed, "--ckpt_path", other, "--out", str(tmp_path / "b.parquet")]) == 0
    assert main([*query, "--embeddings", str(tmp_path / "b.parquet")]) == 2
    assert "the index holds model" in error_line(capsys)
    add = ["index", "build", "--embeddings", str(tmp_path / "b.parquet"), "--out", index, "--add"]
    assert main(add) == 2
    assert "the index holds model" in error_line(capsys)
    assert len(Index.load(index)) == 4
    # resuming an embedding with other weights at the same path is refused as well
    again = [*embed, "--ckpt_path", str(copy / "checkpoints" / "same.ckpt")]
    assert main([*again, "--out", str(tmp_path / "c.parquet")]) == 0
    shutil.copy(other, copy / "checkpoints" / "same.ckpt")
    assert main([*again, "--out", str(tmp_path / "c.parquet")]) == 2
    assert "holds embeddings of another model" in error_line(capsys)


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` vectors around 64 fixed centres (the same for every seed)."""
    centres = np.random.default_rng(42).normal(size=(64, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def recall_at_10(found: pd.DataFrame, exact: pd.DataFrame) -> float:
    truth = exact.groupby("query")["path"].apply(set)
    hits = found.groupby("query")["path"].apply(set)
    return float(hits.combine(truth, lambda a, b: len(a & b) / 10).mean())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(
    ("factory", "params"), [("HNSW32", {"ef_search": 64}), ("IVF64,Flat", {"nprobe": 16})]
)
def test_approximate_factories_recall_against_flat(
    factory: str, params: dict[str, int], metric: Literal["cosine", "euclidean"], tmp_path: Path
) -> None:
    gallery, queries = clustered(20_000, 32, 0), clustered(200, 32, 1)
    paths = [f"g{i}" for i in range(len(gallery))]
    exact = Index.build(gallery, paths, "Flat", metric).search(queries, 10)
    Index.build(gallery, paths, factory, metric, train_size=5000).save(tmp_path / "index")
    approx = Index.load(tmp_path / "index")
    assert (approx.factory, approx.metric, len(approx)) == (factory, metric, 20_000)
    found = approx.search(queries, 10, **params)
    assert found.groupby("query").size().eq(10).all() and found["query"].nunique() == 200
    assert recall_at_10(found, exact) >= 0.9
    own = approx.search(gallery[:50], 1, paths[:50], **params)
    assert (own["path"] == own["query"]).mean() >= 0.9 and own["distance"].min() <= 1e-5


def test_ivf_pq_is_trained_on_a_sample(tmp_path: Path) -> None:
    gallery, queries = clustered(3000, 32, 0), clustered(50, 32, 1)
    paths = [f"g{i}" for i in range(len(gallery))]
    index = Index.build(gallery, paths, "IVF16,PQ8x4", "euclidean", train_size=1000)
    assert index.index.is_trained and len(index) == 3000
    exact = Index.build(gallery, paths, "Flat", "euclidean").search(queries, 10)
    assert recall_at_10(index.search(queries, 10, nprobe=16), exact) >= 0.3
    with pytest.raises(ConfigError, match="efSearch: not a parameter of 'IVF16,PQ8x4'"):
        index.search(queries, 10, ef_search=8)


def test_bad_input_is_one_line_naming_what(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["embed", "--ckpt_path", ckpt, "--out", str(tmp_path / "x.parquet")]) == 2
    assert capsys.readouterr().err == "embedlab: error: images, data_split: give one of them\n"
    with pytest.raises(ConfigError, match="checkpoint not found"):
        load_embedder(tmp_path / "none.ckpt")
    with pytest.raises(ConfigError, match="cannot build 'IVF8,PQ5' for 8-d"):
        Index.build(np.ones((20, 8), np.float32), [str(i) for i in range(20)], "IVF8,PQ5")
    with pytest.raises(ConfigError, match="training 'IVF64,Flat' on 20 vectors failed"):
        Index.build(np.ones((20, 8), np.float32), [str(i) for i in range(20)], "IVF64,Flat")
    index = Index.build(np.eye(4, dtype=np.float32), list("abcd"))
    with pytest.raises(ConfigError, match=r"queries: expected shape \(n, 4\), got \(1, 3\)"):
        index.search(np.ones((1, 3), np.float32))
    with pytest.raises(ConfigError, match="not an index folder"):
        Index.load(tmp_path)
    assert main(["search", "--index", str(tmp_path), "--out", str(tmp_path / "h.csv")]) == 2
    assert "images, embeddings: give one of them" in capsys.readouterr().err


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_export_matches_the_embedder(
    run: Path, tmp_path: Path, format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if format == "onnx":  # the export extra
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / f"model.{format}"
    assert main(["export", "--ckpt_path", ckpt, "--out", str(out), "--format", format]) == 0
    assert f"input images (N, 3, {SIZE}, {SIZE})" in capsys.readouterr().out
    embedder = load_embedder(ckpt, "cpu")
    files = photos(tmp_path / "photos", count=5)  # another batch size than the traced one
    batch = torch.stack([embedder.preprocess(f) for f in files])
    expected = embedder.embed_images(files)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (got,) = session.run(["embeddings"], {"images": batch.numpy()})
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(batch).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def readme_section() -> tuple[list[list[str]], list[str]]:
    """The `embedlab` commands and the Python blocks of the README's "Use the trained model"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use the trained model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README: the section needs a bash block"
    commands = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    return commands, re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_readme_section_runs(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands, snippets = readme_section()
    assert [c[:2] for c in commands] == [
        ["embedlab", "embed"],
        ["embedlab", "index"],
        ["embedlab", "search"],
    ]
    assert len(snippets) == 2
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, tmp_path / "runs" / "shop" / "version_0")
    photos(tmp_path / "photos", count=8)
    shutil.copytree(tmp_path / "photos" / "nested", tmp_path / "queries")
    for argv in commands:
        assert main(argv[1:]) == 0, argv
    hits = pd.read_csv("hits.csv")
    first = hits[hits["rank"] == 1]
    assert len(first) == 4 and first["distance"].max() <= 1e-5
    assert sorted(Path(p).name for p in first["path"]) == sorted(
        Path(q).name for q in first["query"]
    )
    # the Python API example, on two of the photos
    write_digit(tmp_path / "photos" / "a.jpg", 300)
    write_digit(tmp_path / "photos" / "b.png", 301)
    api: dict[str, object] = {}
    exec(snippets[0], api)
    found = api["hits"]
    assert isinstance(found, pd.DataFrame) and len(found) == 2 * 8
    # the ONNX example: the SmallCNN pools any size, so export it at the example's 256x128
    pytest.importorskip("onnx")  # the export extra
    pytest.importorskip("onnxruntime")
    ckpt = "runs/shop/version_0/checkpoints/last.ckpt"
    export = ["export", "--ckpt_path", ckpt, "--out", "model.onnx", "--input_shape", "[3,256,128]"]
    assert main(export) == 0
    onnx: dict[str, object] = {}
    exec(snippets[1], onnx)
    assert np.asarray(onnx["embeddings"]).shape == (1, 8)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``embedlab: error:`` line on stderr (other lines there are warnings)."""
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("embedlab: error:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_embed_names_a_dataset_class_that_cannot_be_imported(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    argv = [
        "embed",
        "--ckpt_path",
        ckpt,
        "--data_split",
        "test",
        "--out",
        str(tmp_path / "t.parquet"),
    ]
    assert main([*argv, "--data", "{dataset: no_such_userdata.LabelledFiles}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "data.dataset" in line and "No module named 'no_such_userdata'" in line
    evaluate = ["evaluate", "--ckpt_path", ckpt, "--out", str(tmp_path)]
    assert main([*evaluate, "--data", "{dataset: no_such_userdata.LabelledFiles}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "data.dataset" in line and "No module named 'no_such_userdata'" in line
    broken = tmp_path / "config.yaml"
    broken.write_text((run / "config.yaml").read_text() + "data: {p: [1\n")
    assert main([*argv, "--config", str(broken)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embedlab: error: config: {broken}:") and "YAML syntax error" in line


class BuggyDataset:
    """A user's dataset with a bug in ``__init__``: its traceback must reach the user."""

    def __init__(self, root: str = "x") -> None:
        self.scale = 1 / 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame()


def test_embed_keeps_the_traceback_of_a_bug_in_a_users_dataset(run: Path, tmp_path: Path) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    argv = [
        "embed",
        "--ckpt_path",
        ckpt,
        "--data_split",
        "test",
        "--out",
        str(tmp_path / "t.parquet"),
    ]
    with pytest.raises(ZeroDivisionError) as info:
        main([*argv, "--data", f"{{dataset: {__name__}.BuggyDataset}}"])
    assert info.traceback[-1].name == "__init__"


def test_export_without_onnx_says_which_extra_to_install(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["export", "--ckpt_path", ckpt, "--out", str(tmp_path / "m.onnx")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        line.startswith("embedlab: error: format: onnx")
        and "pip install 'embedlab[export]'" in line
    )
    assert not (tmp_path / "m.onnx").exists()


def test_a_file_suffix_that_names_another_format_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    embed = ["embed", "--ckpt_path", ckpt, "--data_split", "test", "--out", str(tmp_path / "e.csv")]
    assert main(embed) == 2
    assert f"out: {tmp_path / 'e.csv'} would hold Parquet embeddings" in error_line(capsys)
    assert not (tmp_path / "e.csv").exists()
    export = ["export", "--ckpt_path", ckpt, "--format", "torchscript"]
    assert main([*export, "--out", str(tmp_path / "model.onnx")]) == 2
    assert "would hold a torchscript model" in error_line(capsys)
    index = Index.build(np.eye(8, dtype=np.float32), list("abcdefgh"))
    index.save(tmp_path / "i.index")
    queries = tmp_path / "q.parquet"
    assert main([*embed[:-2], "--out", str(queries)]) == 0
    search = ["search", "--index", str(tmp_path / "i.index"), "--embeddings", str(queries)]
    assert main([*search, "--out", str(tmp_path / "hits.parquet")]) == 2
    assert "would hold CSV hits; give it the suffix .csv" in error_line(capsys)


def test_embeddings_that_are_not_parquet_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "embeddings.csv"
    table.write_text("path,embedding\na.png,0.1\n")
    build = ["index", "build", "--embeddings", str(table), "--out", str(tmp_path / "x.index")]
    assert main(build) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embedlab: error: embeddings: {table} is not a Parquet file")
    Index.build(np.eye(4, dtype=np.float32), list("abcd")).save(tmp_path / "i.index")
    search = ["search", "--index", str(tmp_path / "i.index"), "--embeddings", str(table)]
    assert main([*search, "--out", str(tmp_path / "h.csv")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embedlab: error: embeddings: {table} is not a Parquet file")


def test_search_skips_corrupt_query_images_and_stops_when_none_is_left(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    photos(tmp_path / "gallery", count=4)
    gallery = tmp_path / "gallery.parquet"
    argv = ["embed", "--ckpt_path", ckpt, "--images", str(tmp_path / "gallery")]
    assert main([*argv, "--out", str(gallery)]) == 0
    index = str(tmp_path / "g.index")
    assert main(["index", "build", "--embeddings", str(gallery), "--out", index]) == 0
    queries = tmp_path / "queries"
    write_digit(queries / "good.png", 300)
    (queries / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    hits = tmp_path / "hits.csv"
    search = ["search", "--index", index, "--ckpt_path", ckpt, "--k", "2", "--out", str(hits)]
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        assert main([*search, "--images", str(queries)]) == 0
    assert set(pd.read_csv(hits)["query"]) == {str(queries / "good.png")}
    err = capsys.readouterr().err
    assert "embedlab search: 1 unreadable image(s) skipped" in err and "broken.jpg" in err
    listed = pd.read_csv(tmp_path / "hits.skipped.tsv", sep="\t")
    assert listed["path"].tolist() == [str(queries / "broken.jpg")] and listed["reason"].all()
    (queries / "good.png").unlink()
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        assert main([*search, "--images", str(queries)]) == 2
    line = error_line(capsys)
    assert "images: none of the 1 query images can be read" in line and "broken.jpg" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_device_on_a_machine_without_one_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    argv = [
        "embed",
        "--ckpt_path",
        ckpt,
        "--data_split",
        "test",
        "--out",
        str(tmp_path / "t.parquet"),
    ]
    assert main([*argv, "--device", "cuda"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("embedlab: error: device: cuda asked for") and "--device cpu" in line
