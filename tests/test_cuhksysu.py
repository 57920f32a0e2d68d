"""CUHK-SYSU: a miniature official release (scene jpgs and .mat files in the release's nested
struct layout) -> ``embedlab data prepare cuhksysu`` -> crops, ``CUHKSYSU.frame()`` and the
per-query-gallery person-search protocol against references written from the protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import loadmat, savemat
from sklearn.metrics import average_precision_score

from embedlab.cli import main
from embedlab.data import CUHKSYSU
from embedlab.data.formats import DatasetFormatError, DatasetLayoutError
from embedlab.data.prepare import prepare_cuhksysu
from embedlab.metrics.person_search import PersonSearchProtocol, person_search
from fake_datasets import tiny_recipe

Box = tuple[int, int, int, int]

# scene -> its annotated person boxes [x, y, w, h] (Images.mat); (5, 5, 0, 9) is invalid (w = 0)
SCENES: dict[str, list[Box]] = {
    "s1.jpg": [(2, 3, 10, 20), (20, 5, 12, 22)],
    "s2.jpg": [(4, 4, 11, 21)],
    "s3.jpg": [(30, 10, 9, 18), (6, 8, 10, 19)],
    "s4.jpg": [(3, 2, 10, 24), (25, 6, 11, 20), (45, 5, 9, 17)],
    "s5.jpg": [(40, 20, 10, 22), (8, 6, 12, 25), (5, 5, 0, 9)],
    "s6.jpg": [(12, 10, 10, 20), (30, 4, 9, 21)],
    "s7.jpg": [(50, 30, 8, 16)],
}
# training persons (Train.mat and Person.mat): idname -> [(scene, box)]
TRAIN = {
    "p2": [("s1.jpg", SCENES["s1.jpg"][0]), ("s2.jpg", SCENES["s2.jpg"][0])],
    "p10": [("s1.jpg", SCENES["s1.jpg"][1]), ("s3.jpg", SCENES["s3.jpg"][0])],
}
# test persons (Person.mat only); p31's gallery box in s6 differs by a pixel from Images.mat's
TEST = {
    "p30": [("s4.jpg", SCENES["s4.jpg"][0]), ("s5.jpg", SCENES["s5.jpg"][1])],
    "p31": [("s5.jpg", SCENES["s5.jpg"][0]), ("s6.jpg", (13, 10, 10, 20))],
    "p40": [("s7.jpg", SCENES["s7.jpg"][0])],  # one appearance: in no protocol
}
# TestG<size>: queries (idname, scene, box) and each query's gallery [(scene, gt box or None)]
QUERIES = [("p30", "s4.jpg", SCENES["s4.jpg"][0]), ("p31", "s5.jpg", SCENES["s5.jpg"][0])]
GALLERIES = {
    2: [
        [("s5.jpg", SCENES["s5.jpg"][1]), ("s6.jpg", None)],
        [("s6.jpg", (13, 10, 10, 20)), ("s4.jpg", None)],
    ],
    3: [
        [("s5.jpg", SCENES["s5.jpg"][1]), ("s6.jpg", None), ("s1.jpg", None)],
        [("s6.jpg", (13, 10, 10, 20)), ("s4.jpg", None), ("s7.jpg", None)],
    ],
}


def _struct(fields: list[str], rows: list[list[object]], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB struct array (``savemat`` writes a structured object array as one)."""
    out = np.zeros(shape, dtype=[(f, object) for f in fields])
    for flat, row in zip(out.reshape(-1), rows, strict=True):
        for f, v in zip(fields, row, strict=True):
            flat[f] = v
    return out


def _box(box: Box | None, empty: tuple[int, int] = (1, 0)) -> np.ndarray:
    return np.zeros(empty) if box is None else np.asarray([box], dtype=np.float64)


def _scene_structs(appearances: list[tuple[str, Box]]) -> np.ndarray:
    rows: list[list[object]] = [[s, _box(b), np.array([[0.0]])] for s, b in appearances]
    return _struct(["imname", "idlocate", "ishard"], rows, (1, len(rows)))


def _person(idname: str, appearances: list[tuple[str, Box]]) -> list[object]:
    return [idname, np.array([[float(len(appearances))]]), _scene_structs(appearances)]


def make_release(root: Path, sizes: tuple[int, ...] = (2, 3)) -> Path:
    """Scene images (each box a flat colour) and the annotation files in the release's layout."""
    rng = np.random.default_rng(0)
    (root / "Image" / "SSM").mkdir(parents=True)
    for name, boxes in SCENES.items():
        pixels = np.full((50, 64, 3), 128, dtype=np.uint8)
        for x, y, w, h in boxes:
            pixels[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(root / "Image" / "SSM" / name, quality=95)
    ann = root / "annotation"
    (ann / "test" / "train_test").mkdir(parents=True)
    people = {**TRAIN, **TEST}
    rows = [_person(p, a) for p, a in people.items()]
    savemat(
        ann / "Person.mat",
        {"Person": _struct(["idname", "nAppear", "scene"], rows, (1, len(rows)))},
    )
    cells = np.empty((len(TRAIN), 1), dtype=object)  # Train is a cell array of 1x1 structs
    for i, (p, a) in enumerate(TRAIN.items()):
        cells[i, 0] = _struct(["idname", "nAppear", "scene"], [_person(p, a)], (1, 1))
    savemat(ann / "test" / "train_test" / "Train.mat", {"Train": cells})
    img_rows: list[list[object]] = []
    for name, boxes in SCENES.items():
        box_structs = _struct(["idlocate"], [[_box(b)] for b in boxes], (1, len(boxes)))
        img_rows.append([name, np.array([[float(len(boxes))]]), box_structs])
    savemat(
        ann / "Images.mat",
        {"Img": _struct(["imname", "nAppear", "box"], img_rows, (1, len(img_rows)))},
    )
    pool = np.empty((4, 1), dtype=object)
    pool[:, 0] = ["s4.jpg", "s5.jpg", "s6.jpg", "s7.jpg"]
    savemat(ann / "pool.mat", {"pool": pool})
    for size in sizes:
        protocol_rows: list[list[object]] = []
        for (idname, scene, box), gallery in zip(QUERIES, GALLERIES[size], strict=True):
            query = _struct(
                ["imname", "idlocate", "ishard", "idname"],
                [[scene, _box(box), np.array([[0.0]]), idname]],
                (1, 1),
            )
            g_rows: list[list[object]] = [
                [s, _box(b, empty=(0, 0) if k % 2 else (1, 0)), np.array([[0.0]])]
                for k, (s, b) in enumerate(gallery)
            ]
            protocol_rows.append(
                [query, _struct(["imname", "idlocate", "ishard"], g_rows, (1, len(g_rows)))]
            )
        var = f"TestG{size}"
        table = _struct(["Query", "Gallery"], protocol_rows, (1, len(protocol_rows)))
        savemat(ann / "test" / "train_test" / f"{var}.mat", {var: table})
    return root


def test_miniature_has_the_layout_public_code_indexes(tmp_path: Path) -> None:
    """The access patterns of public person-search readers work on the miniature files."""
    ann = make_release(tmp_path / "src") / "annotation"
    train = loadmat(ann / "test/train_test/Train.mat")["Train"].squeeze()
    scenes = train[0][0, 0][2].squeeze()
    assert [(str(n[0]), b.squeeze().tolist()) for n, b, _ in scenes] == [
        ("s1.jpg", [2, 3, 10, 20]),
        ("s2.jpg", [4, 4, 11, 21]),
    ]
    protoc = loadmat(ann / "test/train_test/TestG2.mat")["TestG2"].squeeze()
    assert str(protoc["Query"][1]["imname"][0, 0][0]) == "s5.jpg"
    assert protoc["Query"][1]["idlocate"][0, 0][0].tolist() == [40, 20, 10, 22]
    gallery = protoc["Gallery"][0].squeeze()
    assert [str(item[0][0]) for item in gallery] == ["s5.jpg", "s6.jpg"]
    assert [item[1].size for item in gallery] == [4, 0]
    imgs = loadmat(ann / "Images.mat")["Img"].squeeze()
    name, _, boxes = imgs[4]
    assert str(name[0]) == "s5.jpg"
    assert np.asarray([b[0] for b in boxes[0]]).reshape(-1, 4).shape == (3, 4)
    person = loadmat(ann / "Person.mat")["Person"].squeeze()
    assert str(person[4]["idname"][0]) == "p40" and int(person[4]["nAppear"][0, 0]) == 1
    assert [str(a[0]) for a in loadmat(ann / "pool.mat")["pool"].squeeze()][0] == "s4.jpg"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, int]]:
    base = tmp_path_factory.mktemp("cuhksysu")
    source = make_release(base / "release")
    counts = prepare_cuhksysu(source, base / "cuhksysu")
    return source, base / "cuhksysu", counts


def test_prepare_writes_the_training_crops(prepared: tuple[Path, Path, dict[str, int]]) -> None:
    source, root, counts = prepared
    names = sorted(p.name for p in (root / "cropped_images").iterdir())
    assert names == ["p10_s1_1.jpg", "p10_s3_2.jpg", "p2_s1_1.jpg", "p2_s2_2.jpg"]
    assert counts == {"train": 4, "queries": 2, "boxes": 10, "unmatched": 0, "protocols": 2}
    x, y, w, h = TRAIN["p10"][1][1]
    with Image.open(source / "Image" / "SSM" / "s3.jpg") as scene:
        expected = np.asarray(scene.convert("RGB"), dtype=np.float64)[y : y + h, x : x + w]
    with Image.open(root / "cropped_images" / "p10_s3_2.jpg") as crop:
        got = np.asarray(crop.convert("RGB"), dtype=np.float64)
    assert got.shape == (h, w, 3)
    assert np.abs(got - expected).mean() < 3  # one more JPEG encoding of the same pixels


def test_prepare_writes_the_test_protocol(prepared: tuple[Path, Path, dict[str, int]]) -> None:
    _, root, _ = prepared
    queries = pd.read_csv(root / "test" / "queries.csv")
    assert queries.to_dict("list") == {
        "query": [0, 1],
        "path": ["test/query/00001_p30_s4.jpg", "test/query/00002_p31_s5.jpg"],
        "label": [30, 31],
        "scene": ["s4", "s5"],
    }
    boxes = pd.read_csv(root / "test" / "boxes.csv")
    # the scenes of the protocols (s1, s4-s7), each box once; s5's third box (w = 0) dropped
    assert boxes["path"].tolist() == [
        "test/boxes/s1_1.jpg", "test/boxes/s1_2.jpg",
        "test/boxes/s4_1.jpg", "test/boxes/s4_2.jpg", "test/boxes/s4_3.jpg",
        "test/boxes/s5_1.jpg", "test/boxes/s5_2.jpg",
        "test/boxes/s6_1.jpg", "test/boxes/s6_2.jpg",
        "test/boxes/s7_1.jpg",
    ]  # fmt: skip
    assert all((root / p).is_file() for p in boxes["path"])
    assert boxes.loc[6, ["box", "x", "y", "w", "h"]].tolist() == [2, 8, 6, 12, 25]
    labelled = dict(zip(boxes["path"], boxes["label"], strict=True))
    # p30's gt in s5 is s5's 2nd box; p31's gt in s6 is off by a pixel: matched by IoU to s6_1
    assert {p: v for p, v in labelled.items() if v} == {
        "test/boxes/s5_2.jpg": 30,
        "test/boxes/s6_1.jpg": 31,
    }
    g2 = pd.read_csv(root / "test" / "TestG2.csv", keep_default_na=False)
    assert g2.to_dict("list") == {
        "query": [0, 0, 1, 1],
        "scene": ["s5", "s6", "s6", "s4"],
        "has_gt": [True, False, True, False],
        "positive": ["test/boxes/s5_2.jpg", "", "test/boxes/s6_1.jpg", ""],
    }
    with Image.open(root / "test" / "query" / "00002_p31_s5.jpg") as crop:
        assert crop.size == (10, 22)


def test_frame(prepared: tuple[Path, Path, dict[str, int]]) -> None:
    _, root, _ = prepared
    frame = CUHKSYSU(root).frame()
    assert list(frame.columns) == ["path", "label", "camera", "split", "scene"]
    assert frame.to_dict("list") == {
        "path": [
            "cropped_images/p10_s1_1.jpg",
            "cropped_images/p10_s3_2.jpg",
            "cropped_images/p2_s1_1.jpg",
            "cropped_images/p2_s2_2.jpg",
        ],
        "label": [10, 10, 2, 2],
        "camera": [-1, -1, -1, -1],
        "split": ["train"] * 4,
        "scene": ["s1", "s3", "s1", "s2"],
    }
    full = CUHKSYSU(root, test=True).frame()
    assert full["split"].value_counts().to_dict() == {"gallery": 10, "train": 4, "query": 2}
    query = full[full["split"] == "query"]
    assert query["label"].tolist() == [30, 31] and query["camera"].tolist() == [4, 5]
    gallery = full[full["split"] == "gallery"]
    assert sorted(gallery["label"].unique().tolist()) == [0, 30, 31]
    assert (gallery["camera"] == gallery["scene"].str[1:].astype(int)).all()


def test_persons_all_adds_the_test_identities(tmp_path: Path) -> None:
    source = make_release(tmp_path / "release")
    counts = prepare_cuhksysu(source, tmp_path / "out", persons="all", test=False)
    frame = CUHKSYSU(tmp_path / "out").frame()
    assert counts["train"] == len(frame) == 9
    assert frame.groupby("label").size().to_dict() == {2: 2, 10: 2, 30: 2, 31: 2, 40: 1}
    assert not (tmp_path / "out" / "test").exists()


def test_prepare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command, on the miniature release; ``--gallery_sizes`` picks protocols."""
    source = make_release(tmp_path / "release")
    out = tmp_path / "cuhksysu"
    status = main(["data", "prepare", "cuhksysu", "--source", str(source), "--out", str(out)])
    assert status == 0
    assert "train 4, queries 2, boxes 10, unmatched 0, protocols 2" in capsys.readouterr().out
    assert len(list((out / "cropped_images").iterdir())) == 4
    assert (out / "test" / "TestG2.csv").is_file() and (out / "test" / "TestG3.csv").is_file()
    argv = ["data", "prepare", "cuhksysu", "--source", str(source), "--out", str(tmp_path / "g2")]
    assert main([*argv, "--gallery_sizes", "[2]", "--persons", "all"]) == 0
    assert "train 9, queries 2, boxes 7, unmatched 0, protocols 1" in capsys.readouterr().out
    assert not (tmp_path / "g2" / "test" / "TestG3.csv").exists()
    assert main(["data", "prepare", "market1501", "--source", str(source), "--out", "x"]) == 2
    assert "'market1501' has no prepare step" in capsys.readouterr().err


def test_missing_and_malformed_annotations(tmp_path: Path) -> None:
    source = make_release(tmp_path / "release", sizes=(2,))
    train = source / "annotation" / "test" / "train_test" / "Train.mat"
    train.rename(tmp_path / "Train.mat")
    with pytest.raises(DatasetLayoutError, match="Train.mat' but it does not exist"):
        prepare_cuhksysu(source, tmp_path / "a")
    bad = np.empty((1, 1), dtype=object)
    bad[0, 0] = _struct(["name", "scene"], [["p1", _scene_structs(TRAIN["p2"])]], (1, 1))
    savemat(train, {"Train": bad})
    with pytest.raises(DatasetFormatError) as err:
        prepare_cuhksysu(source, tmp_path / "b")
    assert str(err.value) == f"{train}: Train[0]: no field 'idname' (fields: name, scene)"
    savemat(train, {"Training": bad})
    with pytest.raises(
        DatasetFormatError, match=r"Train.mat: no variable 'Train' \(found: \['Training'\]\)"
    ):
        prepare_cuhksysu(source, tmp_path / "c")
    rows = [_person("x7", TRAIN["p2"])]
    savemat(train, {"Train": _struct(["idname", "nAppear", "scene"], rows, (1, 1))})
    with pytest.raises(DatasetFormatError, match=r"Train\[0\].idname: 'x7' is not 'p<number>'"):
        prepare_cuhksysu(source, tmp_path / "d")
    (root := tmp_path / "e" / "cropped_images").mkdir(parents=True)
    (root / "p1_x.jpg").write_bytes(b"")
    with pytest.raises(
        DatasetFormatError, match="p1_x.jpg: file name is not 'p<pid>_s<scene>_<n>.jpg'"
    ):
        CUHKSYSU(tmp_path / "e").frame()
    (root / "p1_x.jpg").rename(root / "p1_s2_1.jpg")
    with pytest.raises(DatasetLayoutError, match="queries.csv"):
        CUHKSYSU(tmp_path / "e", test=True).frame()


def _reference(
    query: np.ndarray, gallery: np.ndarray, protocol: PersonSearchProtocol
) -> tuple[list[float], list[float], list[float]]:
    """Per query, from the protocol: (AP from ranks, AP as the official code computes it, top-1)."""
    aps, official, top1 = [], [], []
    for q in range(protocol.num_queries):
        items = list(protocol.galleries[q])
        sims = [float(query[q] @ gallery[i]) for i in items]
        order = sorted(range(len(items)), key=lambda j: (-sims[j], items[j]))
        hits = [items[j] in set(protocol.positives[q]) for j in order]
        num_gt = int(protocol.num_gt[q])
        ranks = [r + 1 for r, hit in enumerate(hits) if hit]
        aps.append(sum((j + 1) / r for j, r in enumerate(ranks)) / num_gt)
        truth = [i in set(protocol.positives[q]) for i in items]
        recall = len(ranks) / num_gt
        official.append(average_precision_score(truth, sims) * recall if ranks else 0.0)
        top1.append(float(bool(hits) and hits[0]))
    return aps, official, top1


def test_person_search_against_the_protocol_loop() -> None:
    rng = np.random.default_rng(3)
    num_q, num_g = 40, 300
    galleries, positives, num_gt = [], [], []
    for q in range(num_q):
        items = rng.choice(num_g, size=int(rng.integers(20, 60)), replace=False)
        pos = items[: int(rng.integers(1, 4))]
        galleries.append(items)
        positives.append(pos if q % 7 else pos[:0])  # some queries find none of their gt
        num_gt.append(len(pos) + int(q % 5 == 0))  # some gt boxes have no gallery box
    positives[1] = positives[2][:1].copy()  # a box positive for two queries
    galleries[1] = np.union1d(galleries[1], positives[1])
    num_gt[1] = max(num_gt[1], 1)
    protocol = PersonSearchProtocol(galleries, positives, np.asarray(num_gt))
    query = rng.normal(size=(num_q, 8)).astype(np.float32)
    gallery = rng.normal(size=(num_g, 8)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    got = person_search(query, gallery, protocol, chunk_size=7, return_per_query=True)
    aps, official, top1 = _reference(query, gallery, protocol)
    np.testing.assert_allclose(got["per_query"]["map"], aps, rtol=1e-9)
    np.testing.assert_allclose(got["per_query"]["map"], official, rtol=1e-6)  # no ties here
    np.testing.assert_allclose(got["per_query"]["recall@1"], top1)
    assert got["map"] == pytest.approx(np.mean(aps)) and got["num_valid_queries"] == num_q
    assert 0 < got["map"] < 1 and 0 < got["recall@1"] < got["recall@10"]


def test_person_search_on_the_prepared_protocol(
    prepared: tuple[Path, Path, dict[str, int]],
) -> None:
    _, root, _ = prepared
    protocol = CUHKSYSU(root).protocol(3)
    assert protocol.queries is not None and protocol.gallery is not None
    assert protocol.queries["label"].tolist() == [30, 31]
    paths = protocol.gallery["path"].tolist()
    # query 0's gallery: the boxes of s5, s6 and s1; query 1's: s6, s4, s7
    assert [paths[i] for i in protocol.galleries[0]] == [
        "test/boxes/s5_1.jpg", "test/boxes/s5_2.jpg", "test/boxes/s6_1.jpg",
        "test/boxes/s6_2.jpg", "test/boxes/s1_1.jpg", "test/boxes/s1_2.jpg",
    ]  # fmt: skip
    assert [paths[i] for i in protocol.positives[1]] == ["test/boxes/s6_1.jpg"]
    assert protocol.num_gt.tolist() == [1, 1]

    # embeddings: one-hot of the label (unlabelled boxes: a shared other direction)
    def embed(labels: list[int]) -> np.ndarray:
        return np.stack([np.eye(3)[{30: 0, 31: 1}.get(v, 2)] for v in labels]).astype(np.float32)

    got = person_search(
        embed(protocol.queries["label"].tolist()),
        embed(protocol.gallery["label"].tolist()),
        protocol,
    )
    assert got["map"] == 1.0 and got["recall@1"] == 1.0


def test_evaluate_protocol_cuhksysu(
    prepared: tuple[Path, Path, dict[str, int]], tmp_path: Path
) -> None:
    """``embedlab evaluate --protocol cuhksysu`` scores the checkpoint's embeddings of the crops."""
    import json

    import yaml

    from embedlab.inference import load_embedder

    _, root, _ = prepared
    recipe = tiny_recipe(
        {"class_path": "embedlab.data.CUHKSYSU", "init_args": {"root": str(root), "test": True}}
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fit = ["fit", "--config", str(tmp_path / "recipe.yaml"), "--output_root", str(tmp_path)]
    assert main([*fit, "--experiment", "cs"]) in (0, None)
    ckpt = tmp_path / "cs" / "version_0" / "checkpoints" / "last.ckpt"
    argv = ["evaluate", "--ckpt_path", str(ckpt), "--protocol", "cuhksysu", "--gallery_size", "3"]
    assert main(argv) == 0
    written = json.loads((tmp_path / "cs" / "version_0" / "evaluation_cuhksysu3.json").read_text())
    protocol = CUHKSYSU(root).protocol(3)
    assert protocol.queries is not None and protocol.gallery is not None
    embedder = load_embedder(ckpt, device="cpu")
    query = embedder.embed_images([str(root / p) for p in protocol.queries["path"]])
    gallery = embedder.embed_images([str(root / p) for p in protocol.gallery["path"]])
    expected = person_search(query, gallery, protocol)
    assert written["metrics"]["map"] == pytest.approx(expected["map"])
    assert written["metrics"]["recall@1"] == expected["recall@1"]
    assert written["metrics"]["num_valid_queries"] == 2


def test_malformed_protocol_table(
    prepared: tuple[Path, Path, dict[str, int]], tmp_path: Path
) -> None:
    import shutil

    _, root, _ = prepared
    shutil.copytree(root / "test", tmp_path / "test")
    file = tmp_path / "test" / "TestG2.csv"
    lines = file.read_text().splitlines()
    file.write_text("\n".join([*lines[:2], "7,s6,False,", *lines[2:]]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"TestG2.csv:3: query 7 is not in queries.csv"):
        CUHKSYSU(tmp_path).protocol(2)
    file.write_text("\n".join([*lines, "1,s7,True,test/boxes/s9_1.jpg"]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"TestG2.csv:6: positive 'test/boxes/s9_1.jpg'"):
        CUHKSYSU(tmp_path).protocol(2)
    with pytest.raises(DatasetLayoutError, match="TestG50.csv"):
        CUHKSYSU(tmp_path).protocol(50)
