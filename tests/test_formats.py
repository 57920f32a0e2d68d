"""On-disk dataset formats, the image dataset, transforms and the data checker.

Every reader is run on a miniature tree written by :mod:`fake_datasets` in the
exact layout of the real download.
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedlab.cli import main
from embedlab.data.check import check_dataset, format_report
from embedlab.data.formats import (
    COLUMNS,
    DatasetFormatError,
    DatasetLayoutError,
    read_cars196,
    read_cub200,
    read_cuhk03np,
    read_dukemtmc,
    read_imagefolder,
    read_inshop,
    read_market1501,
    read_msmt17,
    read_sop,
    read_table,
    read_vehicleid,
)
from embedlab.data.image_dataset import BadImageError, ImageDataset, load_image
from embedlab.data.transforms import (
    IMAGENET_MEAN,
    DMLTransforms,
    PlainTransforms,
    ReIDTransforms,
    Transforms,
)
from fake_datasets import (
    make_cars196,
    make_cub200,
    make_cuhk03np,
    make_dukemtmc,
    make_imagefolder,
    make_inshop,
    make_market1501,
    make_msmt17,
    make_sop,
    make_table,
    make_vehicleid,
    source,
    truncate_file,
    write_image,
    write_truncated_jpeg,
)

# ----------------------------------------------------------------------------- helpers


def summary(frame: pd.DataFrame) -> dict[str, tuple[int, int, int]]:
    """split -> (images, identities excluding -1, cameras excluding -1)."""
    out = {}
    for split, part in frame.groupby("split", sort=False):
        labels, cams = part["label"], part["camera"]
        out[str(split)] = (
            len(part),
            int(labels[labels != -1].nunique()),
            int(cams[cams != -1].nunique()),
        )
    return out


def row(frame: pd.DataFrame, path: str) -> tuple[int, int, str]:
    match = frame[frame["path"] == path]
    assert len(match) == 1, f"{path} found {len(match)} times"
    first = match.iloc[0]
    return int(first["label"]), int(first["camera"]), str(first["split"])


def assert_common_schema(frame: pd.DataFrame, root: Path) -> None:
    assert list(frame.columns) == list(COLUMNS)
    assert frame["label"].dtype == np.int64
    assert frame["camera"].dtype == np.int64
    assert set(frame["split"]) <= {"train", "val", "query", "gallery", "test"}
    assert (frame["camera"] >= -1).all()
    for path in frame["path"].iloc[:: max(1, len(frame) // 5)]:
        assert isinstance(path, str) and not Path(path).is_absolute()
        assert (root / path).is_file(), path


# ----------------------------------------------------------------------------- Market-1501


def test_market1501_counts_junk_and_distractors(tmp_path: Path) -> None:
    root = make_market1501(tmp_path)
    write_image(root / "bounding_box_test" / "1501_c6s4_001902_01.jpg", 1501)
    frame = read_market1501(root)
    assert_common_schema(frame, root)
    # 6 test ids + distractor 0 in the gallery; junk is not an identity
    assert summary(frame) == {"train": (24, 6, 2), "query": (12, 6, 2), "gallery": (29, 8, 3)}
    train = frame[frame["split"] == "train"]
    assert (train["label"] > 0).all(), "junk and distractors must not reach train"
    gallery = frame[frame["split"] == "gallery"]
    assert (gallery["label"] == -1).sum() == 2
    assert (gallery["label"] == 0).sum() == 2
    assert row(frame, "bounding_box_test/1501_c6s4_001902_01.jpg") == (1501, 5, "gallery")
    assert row(frame, "bounding_box_train/0002_c1s1_000151_01.jpg") == (2, 0, "train")
    junk = gallery[gallery["label"] == -1]["path"].iloc[0]
    assert junk.startswith("bounding_box_test/-1_c")
    assert not frame["path"].str.endswith("Thumbs.db").any()


def test_market1501_accepts_parent_of_versioned_folder(tmp_path: Path) -> None:
    make_market1501(tmp_path / "Market-1501-v15.09.15")
    frame = read_market1501(tmp_path)
    assert len(frame) == 64
    assert frame["path"].str.startswith("Market-1501-v15.09.15/").all()
    assert_common_schema(frame, tmp_path)


def test_market1501_missing_folder_names_it_and_shows_layout(tmp_path: Path) -> None:
    root = make_market1501(tmp_path)
    shutil.rmtree(root / "query")
    with pytest.raises(DatasetLayoutError) as info:
        read_market1501(root)
    message = str(info.value)
    assert str(root / "query") in message
    assert "Expected layout" in message and "bounding_box_test/" in message


def test_market1501_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does-not-exist"):
        read_market1501(tmp_path / "does-not-exist")


def test_market1501_bad_file_name_is_named(tmp_path: Path) -> None:
    root = make_market1501(tmp_path)
    write_image(root / "query" / "holiday_photo.jpg")
    with pytest.raises(DatasetFormatError, match="holiday_photo.jpg"):
        read_market1501(root)


# ----------------------------------------------------------------------------- DukeMTMC / CUHK03-NP


def test_dukemtmc_eight_cameras(tmp_path: Path) -> None:
    root = make_dukemtmc(tmp_path, num_train_ids=2, num_test_ids=2, num_cameras=8)
    write_image(root / "bounding_box_train" / "0001_c2_f0046182.jpg", 1)
    frame = read_dukemtmc(root)
    assert_common_schema(frame, root)
    # train 2*8*2 + 1 added; query 2*8; gallery 2*8*2 + gallery-only id 8*2
    assert summary(frame) == {"train": (33, 2, 8), "query": (16, 2, 8), "gallery": (48, 3, 8)}
    assert sorted(frame["camera"].unique()) == list(range(8))
    assert row(frame, "bounding_box_train/0001_c2_f0046182.jpg") == (1, 1, "train")


def test_dukemtmc_defaults(tmp_path: Path) -> None:
    frame = read_dukemtmc(make_dukemtmc(tmp_path))
    assert summary(frame) == {"train": (24, 6, 2), "query": (12, 6, 2), "gallery": (28, 7, 2)}


@pytest.mark.parametrize("variant", ["detected", "labeled"])
def test_cuhk03np_variants(tmp_path: Path, variant: str) -> None:
    root = make_cuhk03np(tmp_path)
    frame = read_cuhk03np(root, variant=variant)  # type: ignore[arg-type]
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (24, 6, 2), "query": (12, 6, 2), "gallery": (12, 6, 2)}
    assert frame["path"].str.startswith(f"{variant}/").all()
    assert row(frame, f"{variant}/bounding_box_train/0001_c1_1.png") == (1, 0, "train")
    assert row(frame, f"{variant}/query/0007_c2_3.png") == (7, 1, "query")
    assert row(frame, f"{variant}/bounding_box_test/0007_c2_4.png") == (7, 1, "gallery")


def test_cuhk03np_missing_variant_and_bad_variant(tmp_path: Path) -> None:
    root = make_cuhk03np(tmp_path / "cuhk03-np", variants=("detected",))
    assert len(read_cuhk03np(tmp_path)) == 48  # parent of cuhk03-np/ works too
    with pytest.raises(DatasetLayoutError, match="labeled"):
        read_cuhk03np(root, variant="labeled")
    with pytest.raises(ValueError, match="variant"):
        read_cuhk03np(root, variant="both")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MSMT17


@pytest.mark.parametrize(
    ("version", "train_dir", "test_dir"),
    [
        ("V1", "train", "test"),
        ("V2", "mask_train_v2", "mask_test_v2"),
    ],
)
def test_msmt17_versions(tmp_path: Path, version: str, train_dir: str, test_dir: str) -> None:
    root = make_msmt17(tmp_path, version=version)
    frame = read_msmt17(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {
        "train": (18, 6, 2),
        "val": (6, 6, 1),
        "query": (12, 6, 2),
        "gallery": (24, 6, 2),
    }
    first = f"{train_dir}/0000/0000_000_01_0302morning_0015_0.jpg"
    assert row(frame, first) == (0, 0, "train")
    assert row(frame, f"{test_dir}/0005/0005_003_02_0302morning_0036_1.jpg") == (5, 1, "query")
    # the official validation images (last of each train identity) are the val split
    val_lines = (root / "list_val.txt").read_text().split()
    assert row(frame, f"{train_dir}/{val_lines[0]}")[2] == "val"


def test_msmt17_include_val_and_camera_15(tmp_path: Path) -> None:
    root = make_msmt17(tmp_path / "MSMT17_V1")
    name = "0100/0100_000_15_0113afternoon_0020_0.jpg"
    write_image(root / "train" / name, 100)
    with open(root / "list_train.txt", "a") as handle:
        handle.write(f"{name} 100\n")
    frame = read_msmt17(tmp_path, include_val=True)
    assert summary(frame)["train"] == (25, 7, 3)
    assert row(frame, f"MSMT17_V1/train/{name}") == (100, 14, "train")


def test_msmt17_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    root = make_msmt17(tmp_path)
    lines = (root / "list_query.txt").read_text().splitlines()
    lines[2] = "0002/0002_000_01_0302morning_0015_0.jpg"  # pid missing
    (root / "list_query.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"list_query\.txt:3"):
        read_msmt17(root)
    lines[2] = "0002/0002_000_01_0302morning_0015_0.jpg two"
    (root / "list_query.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"list_query\.txt:3: pid 'two'"):
        read_msmt17(root)
    lines[2] = "0002/0002-000-xx.jpg 2"
    (root / "list_query.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"list_query\.txt:3: .*camera"):
        read_msmt17(root)


def test_msmt17_missing_pieces(tmp_path: Path) -> None:
    root = make_msmt17(tmp_path)
    (root / "list_gallery.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_gallery.txt"):
        read_msmt17(root)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetLayoutError, match="mask_test_v2"):
        read_msmt17(root)


# ----------------------------------------------------------------------------- CUB / Cars / SOP


def test_cub200_split_and_labels(tmp_path: Path) -> None:
    root = make_cub200(tmp_path / "CUB_200_2011")
    frame = read_cub200(tmp_path)
    assert_common_schema(frame, tmp_path)
    assert summary(frame) == {"train": (6, 3, 0), "test": (6, 3, 0)}
    assert (frame["camera"] == -1).all()
    path = "CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_1.jpg"
    assert row(frame, path) == (1, -1, "train")
    assert set(frame[frame["split"] == "test"]["label"]) == {101, 102, 103}
    assert len(read_cub200(root)) == 12


def test_cub200_errors(tmp_path: Path) -> None:
    root = make_cub200(tmp_path)
    labels = (root / "image_class_labels.txt").read_text().splitlines()
    (root / "image_class_labels.txt").write_text("\n".join([*labels[:3], "4", *labels[4:]]))
    with pytest.raises(DatasetFormatError, match=r"image_class_labels\.txt:4"):
        read_cub200(root)
    (root / "image_class_labels.txt").write_text("\n".join(labels[:-1]))
    with pytest.raises(DatasetFormatError, match="no class for image id 12"):
        read_cub200(root)
    (root / "images.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="images.txt"):
        read_cub200(root)


def test_cars196_from_mat(tmp_path: Path) -> None:
    root = make_cars196(tmp_path)
    frame = read_cars196(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (6, 3, 0), "test": (6, 3, 0)}
    assert row(frame, "car_ims/000001.jpg") == (1, -1, "train")
    assert row(frame, "car_ims/000012.jpg") == (101, -1, "test")
    assert set(frame[frame["split"] == "test"]["label"]) == {99, 100, 101}


def test_cars196_errors(tmp_path: Path) -> None:
    root = make_cars196(tmp_path)
    shutil.rmtree(root / "car_ims")
    with pytest.raises(DatasetLayoutError, match="car_ims"):
        read_cars196(root)
    (root / "cars_annos.mat").write_bytes(b"this is not a MATLAB file at all" * 8)
    with pytest.raises(DatasetFormatError, match="cars_annos.mat"):
        read_cars196(root)
    from scipy.io import savemat

    savemat(root / "cars_annos.mat", {"something_else": np.zeros(3)})
    with pytest.raises(DatasetFormatError, match="annotations"):
        read_cars196(root)
    (root / "cars_annos.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="cars_annos.mat"):
        read_cars196(root)


def test_sop(tmp_path: Path) -> None:
    root = make_sop(tmp_path)
    frame = read_sop(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (6, 3, 0), "test": (6, 3, 0)}
    assert row(frame, "cabinet_final/111085123871_0.JPG") == (1, -1, "train")
    assert set(frame[frame["split"] == "test"]["label"]) == {11319, 11320, 11321}


def test_sop_errors(tmp_path: Path) -> None:
    root = make_sop(tmp_path)
    lines = (root / "Ebay_test.txt").read_text().splitlines()
    (root / "Ebay_test.txt").write_text("\n".join([*lines[:3], "9 11320 x mug_final/a.JPG"]))
    with pytest.raises(DatasetFormatError, match=r"Ebay_test\.txt:4: super_class_id 'x'"):
        read_sop(root)
    (root / "Ebay_test.txt").write_text("\n".join(lines[1:]))
    with pytest.raises(DatasetFormatError, match=r"Ebay_test\.txt:1: .*header"):
        read_sop(root)
    (root / "Ebay_train.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="Ebay_train.txt"):
        read_sop(root)


# ----------------------------------------------------------------------------- VehicleID


def test_vehicleid_one_gallery_image_per_test_vehicle(tmp_path: Path) -> None:
    root = make_vehicleid(tmp_path / "VehicleID_V1.0", test_sizes=(3, 5))
    frame = read_vehicleid(tmp_path, test_size=5)  # the parent folder works too
    assert_common_schema(frame, tmp_path)
    assert summary(frame) == {"train": (12, 4, 0), "query": (10, 5, 0), "gallery": (5, 5, 0)}
    assert row(frame, "VehicleID_V1.0/image/0000001.jpg") == (1, -1, "train")
    gallery = frame[frame["split"] == "gallery"]
    assert sorted(gallery["label"]) == [1001, 1002, 1003, 1004, 1005]
    # the draw is seeded: the same seed gives the same gallery, others differ somewhere
    again = read_vehicleid(root, test_size=5)
    assert again.equals(read_vehicleid(tmp_path, test_size=5).assign(path=again["path"]))
    draws = {tuple(read_vehicleid(root, test_size=5, seed=s)["split"]) for s in range(6)}
    assert len(draws) > 1
    small = read_vehicleid(root, test_size=3)
    assert summary(small)["gallery"] == (3, 3, 0)


def test_vehicleid_errors(tmp_path: Path) -> None:
    root = make_vehicleid(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"test_list_800\.txt.*present: 3"):
        read_vehicleid(root)
    lists = root / "train_test_split"
    lines = (lists / "train_list.txt").read_text().splitlines()
    (lists / "train_list.txt").write_text("\n".join([*lines[:2], "0000003 x"]))
    with pytest.raises(DatasetFormatError, match=r"train_list\.txt:3: vehicle id 'x'"):
        read_vehicleid(root, test_size=3)
    (lists / "train_list.txt").write_text("\n".join([*lines[:2], "0000003"]))
    with pytest.raises(DatasetFormatError, match=r"train_list\.txt:3: expected"):
        read_vehicleid(root, test_size=3)
    (lists / "train_list.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="train_list.txt"):
        read_vehicleid(root, test_size=3)
    with pytest.raises(DatasetLayoutError, match="train_test_split"):
        read_vehicleid(tmp_path / "image")


# ----------------------------------------------------------------------------- In-shop


def test_inshop(tmp_path: Path) -> None:
    root = make_inshop(tmp_path)
    frame = read_inshop(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (9, 3, 0), "query": (3, 3, 0), "gallery": (6, 3, 0)}
    assert row(frame, "img/MEN/Denim/id_00000001/01_1_front.jpg") == (1, -1, "train")
    query_ids = set(frame[frame["split"] == "query"]["label"])
    assert query_ids == set(frame[frame["split"] == "gallery"]["label"]) == {4, 5, 6}


def test_inshop_deepfashion_folders(tmp_path: Path) -> None:
    make_inshop(tmp_path / "Img")
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Img" / "list_eval_partition.txt").rename(
        tmp_path / "Eval" / "list_eval_partition.txt"
    )
    frame = read_inshop(tmp_path)
    assert len(frame) == 18
    assert frame["path"].str.startswith("Img/img/").all()
    assert_common_schema(frame, tmp_path)


def test_inshop_errors(tmp_path: Path) -> None:
    root = make_inshop(tmp_path)
    partition = root / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    bad = lines[4].replace("train", "validation")
    partition.write_text("\n".join([*lines[:4], bad, *lines[5:]]))
    with pytest.raises(DatasetFormatError, match=r"list_eval_partition\.txt:5: .*'validation'"):
        read_inshop(root)
    partition.write_text("\n".join([*lines[:4], lines[4].replace("id_", "item_"), *lines[5:]]))
    with pytest.raises(DatasetFormatError, match=r"list_eval_partition\.txt:5: item id"):
        read_inshop(root)
    partition.write_text("\n".join(["17", *lines[1:]]))
    with pytest.raises(DatasetFormatError, match="announces 17 images but 18"):
        read_inshop(root)
    shutil.rmtree(root / "img")
    with pytest.raises(DatasetLayoutError, match="img"):
        read_inshop(root)


# ----------------------------------------------------------------------------- table / ImageFolder


@pytest.mark.parametrize("file_name", ["dataset.csv", "dataset.tsv"])
def test_table_text(tmp_path: Path, file_name: str) -> None:
    root = make_table(tmp_path, file_name=file_name)
    frame = read_table(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (6, 2, 0), "query": (2, 2, 1), "gallery": (4, 2, 1)}
    assert row(frame, "images/002_0.png") == (2, 0, "query")
    assert row(frame, "images/003_2.png") == (3, 1, "gallery")


def test_table_parquet(tmp_path: Path) -> None:
    if (
        importlib.util.find_spec("pyarrow") is None
        and importlib.util.find_spec("fastparquet") is None
    ):
        pytest.skip("no Parquet engine installed")
    root = make_table(tmp_path, file_name="dataset.parquet")
    assert summary(read_table(root))["gallery"] == (4, 2, 1)


def test_table_parquet_without_engine_says_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet"):
        pytest.skip("a Parquet engine is installed")
    (tmp_path / "dataset.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match=r"dataset\.parquet.*pyarrow"):
        read_table(tmp_path)


def test_table_flags_and_defaults(tmp_path: Path) -> None:
    for k in range(4):
        write_image(tmp_path / f"{k}.png", k % 2)
    (tmp_path / "a.csv").write_text(
        "path,label,is_query,is_gallery\n0.png,0,true,true\n1.png,1,1,0\n2.png,0,no,yes\n3.png,1,,\n"
    )
    (tmp_path / "b.csv").write_text("path,label\n0.png,7\n1.png,8\n")
    flagged = read_table(tmp_path, table="a.csv")
    assert list(flagged["split"]) == ["test", "query", "gallery", "train"]
    assert (flagged["camera"] == -1).all()
    plain = read_table(tmp_path, table=tmp_path / "b.csv")
    assert list(plain["split"]) == ["train", "train"] and list(plain["label"]) == [7, 8]
    with pytest.raises(ValueError, match="several tables"):
        read_table(tmp_path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("file,label\nx.png,1\n", r"bad\.csv: missing required column\(s\) \['path'\]"),
        ("path,label\nx.png,1\ny.png,one\n", r"bad\.csv: line 3: label 'one' is not an integer"),
        ("path,label\nx.png,1\ny.png,2.5\n", r"line 3: label '2.5'"),
        ("path,label,split\nx.png,1,train\ny.png,1,dev\n", r"line 3: split 'dev'"),
        ("path,label,camera\nx.png,1,-3\n", r"line 2: camera -3"),
        ("path,label,is_query\nx.png,1,maybe\n", r"line 2: is_query 'maybe'"),
        ("path,label,split,is_query\nx.png,1,train,true\n", r"line 2: split 'train' disagrees"),
        ("path,label\n,1\n", r"line 2: empty path"),
    ],
)
def test_table_errors_name_file_and_line(tmp_path: Path, content: str, pattern: str) -> None:
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DatasetFormatError, match=pattern):
        read_table(tmp_path)


def test_table_missing_table(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="dataset.csv"):
        read_table(tmp_path)
    with pytest.raises(DatasetLayoutError, match="other.csv"):
        read_table(tmp_path, table="other.csv")


def test_imagefolder(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path)
    frame = read_imagefolder(root)
    assert_common_schema(frame, root)
    assert summary(frame) == {"train": (6, 3, 0), "test": (6, 3, 0)}
    assert row(frame, "test/owl/1.jpg") == (2, -1, "test")
    numbered = make_imagefolder(tmp_path / "n", splits=("query", "gallery"), classes=("0007", "12"))
    frame = read_imagefolder(numbered)
    assert row(frame, "query/0007/0.jpg") == (7, -1, "query")
    assert row(frame, "gallery/12/1.jpg") == (12, -1, "gallery")
    with pytest.raises(DatasetLayoutError, match="train"):
        read_imagefolder(tmp_path / "n" / "query")


def test_every_format_has_its_dataset_class(tmp_path: Path) -> None:
    """Each reader is reachable as an ``embedlab.data`` class whose frame() is the reader's."""
    import embedlab.data as data

    root = make_cub200(tmp_path)
    assert data.CUB200(root).frame().equals(read_cub200(root))
    assert data.CUB200(root, train_classes=2).frame().equals(read_cub200(root, train_classes=2))
    for cls in (data.Market1501, data.DukeMTMC, data.MSMT17, data.CUHK03NP, data.Cars196):
        assert isinstance(cls(), data.DataSource) and isinstance(cls(), data.FrameSource)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("EMBEDLAB_DATA_ROOT", str(tmp_path / "env"))
    assert data.Market1501().root == tmp_path / "env" / "market1501"
    assert data.CUHK03NP().root == tmp_path / "env" / "cuhk03np"
    monkeypatch.undo()


# ----------------------------------------------------------------------------- ImageDataset


def _frame(paths: list[str], labels: list[int], cameras: list[int] | None = None) -> pd.DataFrame:
    cameras = cameras if cameras is not None else [-1] * len(paths)
    return pd.DataFrame(
        {"path": paths, "label": labels, "camera": cameras, "split": ["train"] * len(paths)}
    )


def test_image_dataset_items_and_arrays(tmp_path: Path) -> None:
    root = make_market1501(tmp_path)
    frame = read_market1501(root)
    query = frame[frame["split"] == "query"]
    dataset = ImageDataset(query, root)
    assert len(dataset) == 12
    assert isinstance(dataset.labels, np.ndarray) and dataset.labels.dtype == np.int64
    assert list(dataset.labels) == list(query["label"])
    assert list(dataset.cameras) == list(query["camera"])
    image, label, camera, index = dataset[3]
    assert image.shape == (3, 16, 8) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert (label, camera, index) == (int(query["label"].iloc[3]), int(query["camera"].iloc[3]), 3)
    assert dataset[-1][3] == 11
    with pytest.raises(IndexError):
        dataset[12]
    transformed = ImageDataset(query, root, transform=ReIDTransforms().eval)
    assert transformed[0][0].shape == (3, 256, 128)


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (4, 6), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (4, 6), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("1", (4, 6), 1).save(tmp_path / "bits.png")
    palette = Image.new("P", (4, 6), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    deep = np.full((6, 4), 65535, dtype=np.uint16)
    deep[:, :2] = 32896  # 128 * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.new("CMYK", (4, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")

    expected = {
        "gray.png": (77, 77, 77),
        "rgba.png": (10, 20, 30),
        "bits.png": (255, 255, 255),
        "palette.png": (200, 100, 50),
        "cmyk.jpg": None,
    }
    for name, colour in expected.items():
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (4, 6), name
        if colour is not None:
            assert image.getpixel((0, 0)) == colour, name
    deep_rgb = np.asarray(load_image(tmp_path / "deep.png"))
    assert deep_rgb[0, 0].tolist() == [128, 128, 128]
    assert deep_rgb[0, 3].tolist() == [255, 255, 255]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = ImageDataset(_frame(list(expected) + ["deep.png"], [0] * 6), tmp_path)
        shapes = {tuple(dataset[i][0].shape) for i in range(len(dataset))}
    assert shapes == {(3, 6, 4)}


@pytest.fixture
def broken_tree(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Six images of two labels; positions 1 (truncated JPEG) and 2 (0 bytes) are bad."""
    write_image(tmp_path / "a0.jpg", 0)
    write_truncated_jpeg(tmp_path / "a1.jpg")
    write_image(tmp_path / "a2.jpg", 0)
    (tmp_path / "a2.jpg").write_bytes(b"")
    write_image(tmp_path / "b0.jpg", 1)
    write_image(tmp_path / "a3.jpg", 0)
    write_image(tmp_path / "b1.jpg", 1)
    frame = _frame(["a0.jpg", "a1.jpg", "a2.jpg", "b0.jpg", "a3.jpg", "b1.jpg"], [0, 0, 0, 1, 0, 1])
    return tmp_path, frame


def test_bad_images_raise_naming_the_file(broken_tree: tuple[Path, pd.DataFrame]) -> None:
    root, frame = broken_tree
    dataset = ImageDataset(frame, root)
    assert dataset[0][1] == 0
    with pytest.raises(BadImageError, match=r"a1\.jpg: .*truncated"):
        dataset[1]
    with pytest.raises(BadImageError, match=r"a2\.jpg: file is empty"):
        dataset[2]
    missing = ImageDataset(_frame(["nowhere.jpg"], [0]), root)
    with pytest.raises(BadImageError, match=r"nowhere\.jpg: file not found"):
        missing[0]
    (root / "text.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match=r"text\.jpg"):
        load_image(root / "text.jpg")
    with pytest.raises(ValueError, match="bad_data"):
        ImageDataset(frame, root, bad_data="ignore")  # type: ignore[arg-type]


def test_skip_substitutes_same_label_then_any(broken_tree: tuple[Path, pd.DataFrame]) -> None:
    root, frame = broken_tree
    dataset = ImageDataset(frame, root, bad_data="skip")
    with pytest.warns(RuntimeWarning) as record:
        image, label, camera, index = dataset[1]
    assert [str(w.message) for w in record] == [
        f"cannot read image {root / name}: {reason}; using another image instead (bad_data='skip')"
        for name, reason in dataset.skipped
    ]
    # a2 (same label, next) is also bad, so a3 at position 4 is used
    assert (label, index) == (0, 4) and image.shape == (3, 16, 8)
    assert [path for path, _ in dataset.skipped] == ["a1.jpg", "a2.jpg"]
    assert "truncated" in dataset.skipped[0][1] and "empty" in dataset.skipped[1][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for a known bad file
        assert dataset[2][3] == 4
    assert len(dataset.skipped) == 2

    loader = torch.utils.data.DataLoader(dataset, batch_size=6)
    images, labels, _, indices = next(iter(loader))
    assert images.shape == (6, 3, 16, 8)
    assert labels.tolist() == [0, 0, 0, 1, 0, 1] and indices.tolist() == [0, 4, 4, 3, 4, 5]

    only_bad_label = ImageDataset(frame.iloc[[1, 2, 3]], root, bad_data="skip")
    with pytest.warns(RuntimeWarning):
        assert only_bad_label[0][1:] == (1, -1, 2)
    all_bad = ImageDataset(frame.iloc[[1, 2]], root, bad_data="skip")
    with pytest.warns(RuntimeWarning), pytest.raises(BadImageError, match="no readable image"):
        all_bad[0]


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    ("preset", "train", "kwargs", "shape"),
    [
        (ReIDTransforms, True, {}, (3, 256, 128)),
        (ReIDTransforms, False, {}, (3, 256, 128)),
        (ReIDTransforms, True, {"height": 384, "width": 192}, (3, 384, 192)),
        (DMLTransforms, True, {}, (3, 224, 224)),
        (DMLTransforms, False, {}, (3, 224, 224)),
        (DMLTransforms, False, {"crop_size": 227}, (3, 227, 227)),
        (PlainTransforms, True, {}, (3, 256, 128)),
    ],
)
def test_transform_shapes(
    preset: type[Transforms], train: bool, kwargs: dict, shape: tuple[int, ...]
) -> None:
    transforms = preset(**kwargs)
    transform = transforms.train if train else transforms.eval
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 170, 3), np.uint8))
    out = transform(image)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == shape
    assert tuple(transform(torch.zeros(3, 60, 40, dtype=torch.uint8)).shape) == shape


def test_transform_normalisation_and_erasing() -> None:
    grey = Image.new("RGB", (64, 128), tuple(int(255 * m) for m in IMAGENET_MEAN))
    test = ReIDTransforms().eval(grey)
    assert float(test.abs().max()) < 0.03  # the mean colour normalises to ~0
    assert float(PlainTransforms().eval(grey).max()) <= 1.0
    torch.manual_seed(0)
    erasing_only = ReIDTransforms(flip_p=0.0, pad=0, erasing_p=1.0).train
    white = Image.new("RGB", (128, 256), (255, 255, 255))
    out = erasing_only(white)
    assert (out == 0).any() and (out > 1).any()  # a mean-coloured box on a white image


# ----------------------------------------------------------------------------- data checker


def test_check_clean_market(tmp_path: Path) -> None:
    report = check_dataset(source("market1501", make_market1501(tmp_path)))
    assert report.ok and not report.problems
    stats = report.splits
    assert (stats["train"].images, stats["train"].identities, stats["train"].cameras) == (24, 6, 2)
    assert (stats["gallery"].images, stats["gallery"].junk) == (28, 2)
    text = format_report(report)
    assert "No problems found." in text and "gallery" in text


def test_check_names_corrupt_and_missing_images(tmp_path: Path) -> None:
    root = make_msmt17(tmp_path)
    query = (root / "list_query.txt").read_text().split()
    truncate_file(root / "test" / query[0], 0.3)
    (root / "test" / query[2]).write_bytes(b"")
    gallery = (root / "list_gallery.txt").read_text().split()
    (root / "test" / gallery[0]).unlink()
    report = check_dataset(source("msmt17", root))
    kinds = {p.kind: p for p in report.problems}
    assert not report.ok
    assert kinds["missing-image"].items == [f"test/{gallery[0]}"]
    unreadable = kinds["unreadable-image"].items
    assert len(unreadable) == 2
    assert unreadable[0].startswith(f"test/{query[0]}: ") and "empty" in unreadable[1]
    quick = check_dataset(source("msmt17", root), verify_images=False)
    assert {p.kind for p in quick.problems} == {"missing-image"}


def test_check_missing_folder_and_malformed_list(tmp_path: Path) -> None:
    root = make_market1501(tmp_path / "m")
    shutil.rmtree(root / "bounding_box_test")
    report = check_dataset(source("market1501", root))
    assert [p.kind for p in report.problems] == ["missing-path"]
    assert "bounding_box_test" in report.problems[0].message
    assert "Expected layout" in format_report(report)
    sop = make_sop(tmp_path / "s")
    with open(sop / "Ebay_train.txt", "a") as handle:
        handle.write("7 1 1\n")
    report = check_dataset(source("sop", sop))
    assert [p.kind for p in report.problems] == ["malformed"]
    assert "Ebay_train.txt:8" in report.problems[0].message
    two = make_table(tmp_path / "two")
    (two / "other.csv").write_text((two / "dataset.csv").read_text())
    assert check_dataset(source("table", two)).problems[0].kind == "cannot-read"  # two tables


def test_check_identity_problems(tmp_path: Path) -> None:
    root = tmp_path
    rows = []
    # train: label 0 has two images, label 1 only one
    for name, label in (("t0a.png", 0), ("t0b.png", 0), ("t1.png", 1)):
        write_image(root / name, label)
        rows.append(f"{name},{label},0,train")
    # id 5: fine (query cam 0, gallery cams 0 and 1); id 6: query and gallery only on cam 2;
    # id 7: query only, never in the gallery
    for name, label, camera, split in (
        ("q5.png", 5, 0, "query"),
        ("g5a.png", 5, 0, "gallery"),
        ("g5b.png", 5, 1, "gallery"),
        ("q6.png", 6, 2, "query"),
        ("g6.png", 6, 2, "gallery"),
        ("q7.png", 7, 0, "query"),
    ):
        write_image(root / name, label)
        rows.append(f"{name},{label},{camera},{split}")
    rows.append("t0a.png,0,0,train")  # listed twice
    (root / "data.csv").write_text("path,label,camera,split\n" + "\n".join(rows) + "\n")
    report = check_dataset(source("table", root))
    kinds = {p.kind: p for p in report.problems}
    assert set(kinds) == {
        "duplicate-image",
        "single-image-identity",
        "query-not-in-gallery",
        "no-cross-camera-match",
    }
    assert report.ok  # only warnings
    assert kinds["single-image-identity"].items == ["label 1: t1.png"]
    assert kinds["query-not-in-gallery"].items == ["label 7 (1 query image)"]
    assert kinds["no-cross-camera-match"].items[0].startswith("label 6:")
    assert "camera 2" in kinds["no-cross-camera-match"].items[0]
    assert kinds["duplicate-image"].items == ["train: t0a.png"]
    assert main(["data", "check", "--dataset", "Table", "--dataset.root", str(root)]) == 0
    assert (
        main(["data", "check", "--dataset", "Table", "--dataset.root", str(root), "--strict"]) == 1
    )


def test_check_single_image_identities_and_no_valid_query(tmp_path: Path) -> None:
    root = tmp_path
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_image(root / name)
    (root / "data.csv").write_text(
        "path,label,camera,split\n"
        "a.png,1,0,train\nb.png,2,0,train\nb.png,2,0,query\nc.png,2,0,gallery\nd.png,3,0,test\n"
    )
    report = check_dataset(source("table", root))
    kinds = {p.kind: p for p in report.problems}
    assert kinds["single-image-identity"].severity == "warning"
    singles = [p for p in report.problems if p.kind == "single-image-identity"]
    assert [p.items for p in singles] == [["label 1: a.png", "label 2: b.png"], ["label 3: d.png"]]
    assert kinds["no-valid-query"].severity == "error" and not report.ok


def test_check_main_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_cuhk03np(tmp_path, variants=("labeled",))
    for k in range(15):
        write_image(root / "labeled" / "query" / f"{900 + k:04d}_c1_1.png")  # no gallery match
    assert (
        main(["data", "check", "--dataset", "CUHK03NP", "--dataset.root", str(root)]) == 1
    )  # no 'detected' folder
    assert "detected" in capsys.readouterr().out
    code = main(
        ["data", "check", "--dataset", "CUHK03NP", f"--dataset.root={root}"]
        + ["--dataset.variant=labeled", "--max_items=3"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "query-not-in-gallery" in out and "... and 12 more" in out
    assert (
        main(
            [
                "data",
                "check",
                "--dataset",
                "CUHK03NP",
                "--dataset.root",
                str(root),
                "--dataset.variant=x",
            ]
        )
        == 2
    )
    assert main(["data", "check", "--dataset", "nope", "--dataset.root", str(root)]) == 2
    data_root = tmp_path / "env"
    data_root.mkdir()
    (data_root / "cuhk03np").symlink_to(root, target_is_directory=True)
    monkeypatch.setenv("EMBEDLAB_DATA_ROOT", str(data_root))
    assert (
        main(["data", "check", "--dataset", "CUHK03NP", "--dataset.variant=labeled", "--no_images"])
        == 0
    )
    assert f"at {data_root / 'cuhk03np'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["data", "check", "--help"])
    assert stop.value.code == 0 and "--no_images" in capsys.readouterr().out


def test_transforms_by_class_path(capsys: pytest.CaptureFixture[str]) -> None:
    """A preset with its arguments, and any pair of torchvision callables."""
    import yaml

    digits = str(Path(__file__).resolve().parents[1] / "experiments" / "digits.yaml")
    resize = {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [8, 4]}}
    pair = {
        "class_path": "embedlab.data.Transforms",
        "init_args": {"train": resize, "eval": resize},
    }
    for value in ("{class_path: DMLTransforms, init_args: {crop_size: 227}}", str(pair)):
        with pytest.raises(SystemExit):
            main(["fit", "--config", digits, f"--data.transforms={value}", "--print_config"])
        printed = yaml.safe_load(capsys.readouterr().out)["data"]["transforms"]
        assert printed["class_path"].startswith("embedlab.data")
    assert printed["init_args"]["train"]["init_args"]["size"] == [8, 4]
