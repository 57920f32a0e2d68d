"""Miniature dataset trees in the exact on-disk format of the real benchmarks.

Each ``make_<name>(root, ...)`` writes tiny but real image files (a few
pixels, coloured by identity so a model can separate them) and the list or
annotation files the real download has, then returns the path to give the
reader. Sizes are small by default (6 identities x 2 cameras x 2 images);
the docstrings give the resulting per-split counts.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SIZE = (8, 16)  # width, height: tall like a pedestrian crop


def identity_colour(label: int) -> tuple[int, int, int]:
    """A fixed colour per identity, far apart for neighbouring labels."""
    seed = zlib.crc32(str(label).encode())
    return (seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF)


def write_image(
    path: str | Path, label: int = 0, size: tuple[int, int] = IMAGE_SIZE, seed: int = 0
) -> Path:
    """Write a tiny image whose colour depends on ``label``; format from the suffix."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{file.name}-{seed}".encode()))
    base = np.array(identity_colour(label), dtype=np.int16)
    noise = rng.integers(-12, 13, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    suffix = file.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        image.save(file, format="JPEG", quality=90)
    else:
        image.save(file, format="PNG" if suffix == ".png" else None)
    return file


def truncate_file(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its length (a download that stopped midway)."""
    file = Path(path)
    data = file.read_bytes()
    file.write_bytes(data[: max(1, int(len(data) * keep))])
    return file


def write_truncated_jpeg(path: str | Path) -> Path:
    """A JPEG large enough that cutting it in half leaves a valid header but missing data."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(
        file, format="JPEG", quality=95
    )
    return truncate_file(file, 0.5)


# --------------------------------------------------------------------------- ReID folders


def make_market1501(
    root: str | Path,
    *,
    num_train_ids: int = 6,
    num_test_ids: int = 6,
    num_cameras: int = 2,
    images_per_camera: int = 2,
    num_junk: int = 2,
    num_distractors: int = 2,
    train_junk: int = 1,
) -> Path:
    """Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

    Train identities are 0002, 0004, ...; test identities 0001, 0003, ....
    Names follow ``0002_c1s1_000451_03.jpg``. Per split with the defaults:

    * train: ``num_train_ids * num_cameras * images_per_camera`` = 24 images
      (plus ``train_junk`` ``-1_...`` files on disk, which the reader drops);
    * query: one image per test identity and camera = 12 images;
    * gallery: ``num_test_ids * num_cameras * images_per_camera`` = 24 images
      + ``num_junk`` junk (``-1_c1s1_...``) + ``num_distractors``
      distractors (``0000_c...``) = 28 images.

    A ``Thumbs.db`` file in the gallery folder, as in some copies, must be ignored.
    """
    base = Path(root)
    frame = iter(range(151, 10**6, 25))

    def name(pid: int, cam: int, bbox: int = 1) -> str:
        pid_text = "-1" if pid == -1 else f"{pid:04d}"
        return f"{pid_text}_c{cam}s1_{next(frame):06d}_{bbox:02d}.jpg"

    train, query, gallery = (
        base / "bounding_box_train",
        base / "query",
        base / "bounding_box_test",
    )
    for folder in (train, query, gallery):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_train_ids):
        pid = 2 + 2 * i
        for cam in range(1, num_cameras + 1):
            for _ in range(images_per_camera):
                write_image(train / name(pid, cam), pid)
    for j in range(train_junk):
        write_image(train / name(-1, 1 + j % num_cameras), -1)
    for i in range(num_test_ids):
        pid = 1 + 2 * i
        for cam in range(1, num_cameras + 1):
            write_image(query / name(pid, cam, 0), pid)
            for _ in range(images_per_camera):
                write_image(gallery / name(pid, cam), pid)
    for j in range(num_junk):
        write_image(gallery / name(-1, 1 + j % num_cameras, 3), -1)
    for j in range(num_distractors):
        write_image(gallery / name(0, 1 + j % num_cameras), 0)
    (gallery / "Thumbs.db").write_bytes(b"\x00" * 16)
    return base


def make_dukemtmc(
    root: str | Path,
    *,
    num_train_ids: int = 6,
    num_test_ids: int = 6,
    num_gallery_only_ids: int = 1,
    num_cameras: int = 2,
    images_per_camera: int = 2,
) -> Path:
    """DukeMTMC-reID: the Market folders with names like ``0001_c2_f0046182.jpg``.

    Train identities 0001..; test identities follow. Defaults give train 24,
    query 12 (one per test identity and camera), gallery 24 + 4 images of one
    gallery-only identity = 28; ``num_cameras`` may go up to 8.
    """
    base = Path(root)
    frame = iter(range(46182, 10**8, 97))

    def name(pid: int, cam: int) -> str:
        return f"{pid:04d}_c{cam}_f{next(frame):07d}.jpg"

    train, query, gallery = (
        base / "bounding_box_train",
        base / "query",
        base / "bounding_box_test",
    )
    for folder in (train, query, gallery):
        folder.mkdir(parents=True, exist_ok=True)
    pid = 0
    for _ in range(num_train_ids):
        pid += 1
        for cam in range(1, num_cameras + 1):
            for _ in range(images_per_camera):
                write_image(train / name(pid, cam), pid)
    for _ in range(num_test_ids):
        pid += 1
        for cam in range(1, num_cameras + 1):
            write_image(query / name(pid, cam), pid)
            for _ in range(images_per_camera):
                write_image(gallery / name(pid, cam), pid)
    for _ in range(num_gallery_only_ids):
        pid += 1
        for cam in range(1, num_cameras + 1):
            for _ in range(images_per_camera):
                write_image(gallery / name(pid, cam), pid)
    return base


def make_cuhk03np(
    root: str | Path,
    *,
    variants: Sequence[str] = ("detected", "labeled"),
    num_train_ids: int = 6,
    num_test_ids: int = 6,
    images_per_camera: int = 2,
) -> Path:
    """CUHK03-NP: ``detected/`` and ``labeled/``, each in the Market layout, ``.png`` files.

    Names ``0001_c1_1.png`` (identity, camera 1 or 2, image number). Per
    variant with the defaults: train 24, query 12 (one per test identity and
    camera), gallery 12 (the other image of each identity and camera).
    """
    base = Path(root)
    for variant in variants:
        top = base / variant
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            (top / folder).mkdir(parents=True, exist_ok=True)
        for pid in range(1, num_train_ids + 1):
            for cam in (1, 2):
                for k in range(images_per_camera):
                    number = (cam - 1) * images_per_camera + k + 1
                    write_image(top / "bounding_box_train" / f"{pid:04d}_c{cam}_{number}.png", pid)
        for pid in range(num_train_ids + 1, num_train_ids + num_test_ids + 1):
            for cam in (1, 2):
                for k in range(images_per_camera):
                    number = (cam - 1) * images_per_camera + k + 1
                    folder = "query" if k == 0 else "bounding_box_test"
                    write_image(top / folder / f"{pid:04d}_c{cam}_{number}.png", pid)
    return base


def make_msmt17(
    root: str | Path,
    *,
    version: str = "V1",
    num_train_ids: int = 6,
    num_test_ids: int = 6,
    num_cameras: int = 2,
    images_per_camera: int = 2,
    val_per_id: int = 1,
) -> Path:
    """MSMT17 V1 (``train/``, ``test/``) or V2 (``mask_train_v2/``, ``mask_test_v2/``).

    Images ``<pid>/<pid>_<idx>_<cam>_0303morning_<frame>_<k>.jpg``; list files
    ``list_{train,val,query,gallery}.txt`` with lines ``<path> <pid>``. Train
    and test pids both count from 0. Defaults: each train identity has 4
    images, the last ``val_per_id`` of which go to ``list_val.txt``: train 18,
    val 6; query 12 (one per test identity and camera), gallery 24.
    """
    if version not in ("V1", "V2"):
        raise ValueError("version must be 'V1' or 'V2'")
    base = Path(root)
    train_dir = base / ("train" if version == "V1" else "mask_train_v2")
    test_dir = base / ("test" if version == "V1" else "mask_test_v2")
    times = ("0302morning", "0303noon", "0113afternoon")

    def name(pid: int, idx: int, cam: int) -> str:
        return f"{pid:04d}/{pid:04d}_{idx:03d}_{cam:02d}_{times[idx % 3]}_{15 + 7 * idx:04d}_{idx % 2}.jpg"

    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    for pid in range(num_train_ids):
        names = [
            name(pid, idx, cam)
            for idx, cam in enumerate(
                c for c in range(1, num_cameras + 1) for _ in range(images_per_camera)
            )
        ]
        for n in names:
            write_image(train_dir / n, pid)
        cut = len(names) - val_per_id
        lists["train"] += [f"{n} {pid}" for n in names[:cut]]
        lists["val"] += [f"{n} {pid}" for n in names[cut:]]
    for pid in range(num_test_ids):
        idx = 0
        for cam in range(1, num_cameras + 1):
            n = name(pid, idx, cam)
            write_image(test_dir / n, 5000 + pid)
            lists["query"].append(f"{n} {pid}")
            idx += 1
            for _ in range(images_per_camera):
                n = name(pid, idx, cam)
                write_image(test_dir / n, 5000 + pid)
                lists["gallery"].append(f"{n} {pid}")
                idx += 1
    for key, lines in lists.items():
        (base / f"list_{key}.txt").write_text("".join(line + "\n" for line in lines))
    return base


# --------------------------------------------------------------------------- metric learning

CUB_NAMES = {
    1: "Black_footed_Albatross",
    2: "Laysan_Albatross",
    3: "Sooty_Albatross",
    101: "White_Pelican",
    102: "Western_Wood_Pewee",
    103: "Sayornis",
}


def make_cub200(
    root: str | Path,
    *,
    classes: Sequence[int] = (1, 2, 3, 101, 102, 103),
    images_per_class: int = 2,
) -> Path:
    """CUB-200-2011: ``images/``, ``images.txt``, ``image_class_labels.txt`` (+ the other lists).

    Folders ``001.Black_footed_Albatross/`` with files
    ``Black_Footed_Albatross_0001_1.jpg``. Defaults: classes 1-3 (train, 6
    images) and 101-103 (test, 6 images).
    """
    base = Path(root)
    image_lines, label_lines, split_lines, class_lines = [], [], [], []
    image_id = 0
    for label in classes:
        species = CUB_NAMES.get(label, f"Bird_{label}")
        folder = f"{label:03d}.{species}"
        class_lines.append(f"{label} {folder}")
        for k in range(images_per_class):
            image_id += 1
            file_name = f"{species.title()}_{k + 1:04d}_{image_id}.jpg"
            write_image(base / "images" / folder / file_name, label)
            image_lines.append(f"{image_id} {folder}/{file_name}")
            label_lines.append(f"{image_id} {label}")
            split_lines.append(f"{image_id} {k % 2}")
    for file_name, lines in (
        ("images.txt", image_lines),
        ("image_class_labels.txt", label_lines),
        ("train_test_split.txt", split_lines),
        ("classes.txt", class_lines),
    ):
        (base / file_name).write_text("".join(line + "\n" for line in lines))
    return base


def make_cars196(
    root: str | Path,
    *,
    classes: Sequence[int] = (1, 2, 3, 99, 100, 101),
    images_per_class: int = 2,
) -> Path:
    """Cars196: ``car_ims/000001.jpg ...`` and ``cars_annos.mat`` written with scipy.

    The ``.mat`` holds the 1xN struct array ``annotations`` (fields
    ``relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test``)
    and the 1x196 cell array ``class_names``, as in the real file. Defaults:
    classes 1-3 (train, 6 images) and 99-101 (test, 6 images).
    """
    from scipy.io import savemat

    base = Path(root)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    entries = []
    number = 0
    for label in classes:
        for k in range(images_per_class):
            number += 1
            relative = f"car_ims/{number:06d}.jpg"
            write_image(base / relative, label, size=(16, 8))
            entries.append(
                (
                    np.array([relative]),
                    np.array([[1]], dtype=np.uint16),
                    np.array([[1]], dtype=np.uint16),
                    np.array([[15]], dtype=np.uint16),
                    np.array([[7]], dtype=np.uint16),
                    np.array([[label]], dtype=np.uint8),
                    np.array([[k % 2]], dtype=np.uint8),
                )
            )
    annotations = np.empty((1, len(entries)), dtype=[(f, object) for f in fields])
    for column, entry in enumerate(entries):
        annotations[0, column] = entry
    class_names = np.empty((1, 196), dtype=object)
    for label in range(196):
        class_names[0, label] = np.array([f"Car Model {label + 1} 2012"])
    savemat(base / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return base


SOP_SUPER = (
    "bicycle",
    "cabinet",
    "chair",
    "coffee_maker",
    "fan",
    "kettle",
    "lamp",
    "mug",
    "sofa",
    "stapler",
    "table",
    "toaster",
)


def make_sop(
    root: str | Path,
    *,
    train_classes: int = 3,
    test_classes: int = 3,
    images_per_class: int = 2,
) -> Path:
    """Stanford Online Products: ``Ebay_train.txt``, ``Ebay_test.txt``, ``<super>_final/``.

    Lines ``image_id class_id super_class_id path`` under that header; train
    classes are 1.., test classes 11319.. as in the real split. Defaults:
    train 6 images of 3 classes, test 6 images of 3 classes.
    """
    base = Path(root)
    image_id = 0
    info = ["image_id class_id super_class_id path"]
    for list_name, first_class, count in (
        ("Ebay_train.txt", 1, train_classes),
        ("Ebay_test.txt", 11319, test_classes),
    ):
        lines = ["image_id class_id super_class_id path"]
        for offset in range(count):
            label = first_class + offset
            super_id = label % len(SOP_SUPER) + 1
            product = 111085122871 + 1000 * label
            for k in range(images_per_class):
                image_id += 1
                path = f"{SOP_SUPER[super_id - 1]}_final/{product}_{k}.JPG"
                write_image(base / path, label)
                lines.append(f"{image_id} {label} {super_id} {path}")
        info += lines[1:]
        (base / list_name).write_text("".join(line + "\n" for line in lines))
    (base / "Ebay_info.txt").write_text("".join(line + "\n" for line in info))
    return base


def make_inshop(
    root: str | Path,
    *,
    train_items: int = 3,
    test_items: int = 3,
    images_per_item: int = 3,
) -> Path:
    """In-Shop Clothes: ``img/<gender>/<category>/id_XXXXXXXX/`` and ``list_eval_partition.txt``.

    The partition file has the image count, the header ``image_name item_id
    evaluation_status`` and space-aligned rows. Train items have
    ``images_per_item`` train images; each test item has one query image and
    ``images_per_item - 1`` gallery images. Defaults: train 9, query 3,
    gallery 6.
    """
    base = Path(root)
    views = ("1_front", "2_side", "3_back", "4_full", "7_additional")
    categories = (("WOMEN", "Dresses"), ("MEN", "Denim"), ("WOMEN", "Blouses_Shirts"))
    rows: list[tuple[str, str, str]] = []
    item = 1
    for kind, count in (("train", train_items), ("test", test_items)):
        for _ in range(count):
            item_id = f"id_{item:08d}"
            gender, category = categories[item % len(categories)]
            for k in range(images_per_item):
                name = f"img/{gender}/{category}/{item_id}/{k + 1:02d}_{views[k % len(views)]}.jpg"
                write_image(base / name, item, size=(12, 16))
                status = "train" if kind == "train" else ("query" if k == 0 else "gallery")
                rows.append((name, item_id, status))
            item += 1
    lines = [str(len(rows)), "image_name item_id evaluation_status"]
    lines += [f"{name:<66} {item_id} {status}" for name, item_id, status in rows]
    (base / "list_eval_partition.txt").write_text("".join(line + "\n" for line in lines))
    return base


# --------------------------------------------------------------------------- custom data


def make_table(
    root: str | Path,
    *,
    file_name: str = "dataset.csv",
    num_ids: int = 4,
    images_per_id: int = 3,
) -> Path:
    """A custom dataset: ``images/<id>_<k>.png`` and a table with path,label,camera,split.

    Identities 0..num_ids/2-1 are train; the rest have image 0 in query
    (camera 0) and the others in gallery (camera 1). Defaults: train 6,
    query 2, gallery 4. The suffix of ``file_name`` picks CSV, TSV or Parquet.
    """
    import pandas as pd

    base = Path(root)
    records = []
    for label in range(num_ids):
        for k in range(images_per_id):
            path = f"images/{label:03d}_{k}.png"
            write_image(base / path, label)
            if label < num_ids // 2:
                records.append((path, label, -1, "train"))
            else:
                records.append((path, label, 0 if k == 0 else 1, "query" if k == 0 else "gallery"))
    frame = pd.DataFrame(records, columns=["path", "label", "camera", "split"])
    target = base / file_name
    if target.suffix == ".parquet":
        frame.to_parquet(target)
    else:
        frame.to_csv(target, sep="\t" if target.suffix == ".tsv" else ",", index=False)
    return base


def make_imagefolder(
    root: str | Path,
    *,
    splits: Sequence[str] = ("train", "test"),
    classes: Sequence[str] = ("cat", "dog", "owl"),
    images_per_class: int = 2,
) -> Path:
    """An ImageFolder tree ``<split>/<class>/<k>.jpg``; defaults give 6 train and 6 test images."""
    base = Path(root)
    for split in splits:
        for index, name in enumerate(classes):
            for k in range(images_per_class):
                write_image(base / split / name / f"{k}.jpg", index)
    return base


def make_vehicleid(
    root: str | Path,
    *,
    num_train_ids: int = 4,
    test_sizes: Sequence[int] = (3,),
    images_per_id: int = 3,
) -> Path:
    """PKU VehicleID: ``image/<7-digit name>.jpg`` and ``train_test_split/`` lists.

    List lines are ``<name without .jpg> <vehicle id>``. Train vehicles 1..num_train_ids;
    ``test_list_<n>.txt`` holds the first n test vehicles (ids from 1001), as the real
    nested lists do. Defaults: train 12 images; test_list_3.txt 9 images (3 gallery, 6
    query).
    """
    base = Path(root)
    split = base / "train_test_split"
    split.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 10**7))

    def images(vid: int) -> list[str]:
        names = [f"{next(counter):07d}" for _ in range(images_per_id)]
        for name in names:
            write_image(base / "image" / f"{name}.jpg", vid)
        return [f"{name} {vid}" for name in names]

    train = [line for vid in range(1, num_train_ids + 1) for line in images(vid)]
    (split / "train_list.txt").write_text("\n".join(train) + "\n")
    test = [images(1000 + i) for i in range(1, max(test_sizes) + 1)]
    for size in test_sizes:
        lines = [line for vehicle in test[:size] for line in vehicle]
        (split / f"test_list_{size}.txt").write_text("\n".join(lines) + "\n")
    return base


def source(name: str, root: str | Path, **options: Any) -> Any:
    """The embedlab dataset object of format ``name`` (``market1501``, ...) at ``root``."""
    import embedlab.data as data

    classes = {
        "market1501": data.Market1501,
        "dukemtmc": data.DukeMTMC,
        "msmt17": data.MSMT17,
        "cuhk03np": data.CUHK03NP,
        "cub200": data.CUB200,
        "cars196": data.Cars196,
        "sop": data.SOP,
        "inshop": data.InShop,
        "vehicleid": data.VehicleID,
        "imagefolder": data.ImageFolder,
    }
    if name == "table":
        return data.Table(root=root, **options)
    return classes[name](root, **options)


# (pid, camera 1-based, frames) per tracklet
MARS_TRAIN = [(p, c, 3 + (p + c) % 3) for p in (1, 2, 3, 4, 5) for c in (1, 2)]
MARS_TEST = [(p, c, 3 + (p * c) % 2) for p in (6, 7, 8) for c in (1, 2)] + [(-1, 1, 2), (0, 2, 3)]
MARS_QUERY = [1, 3, 5]  # 1-based rows of track_test_info: pids 6, 7, 8 on camera 1


def make_mars(root: Path) -> Path:
    """MARS: bbox_train/, bbox_test/ (junk 00-1), info/*.txt and the three .mat files."""
    from scipy.io import savemat

    (root / "info").mkdir(parents=True)
    for folder, tracks, info, key in (
        ("bbox_train", MARS_TRAIN, "tracks_train_info.mat", "track_train_info"),
        ("bbox_test", MARS_TEST, "tracks_test_info.mat", "track_test_info"),
    ):
        names, rows, counter = [], [], {}
        for pid, cam, frames in tracks:
            tag = "00-1" if pid == -1 else f"{pid:04d}"
            counter[pid] = counter.get(pid, 0) + 1
            start = len(names) + 1
            for f in range(1, frames + 1):
                name = f"{tag}C{cam}T{counter[pid]:04d}F{f:03d}.jpg"
                names.append(name)
                write_image(root / folder / tag / name, max(pid, 0), (8, 16), seed=f)
            rows.append([start, len(names), pid, cam])
        split = "train" if folder == "bbox_train" else "test"
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        savemat(root / "info" / info, {key: np.array(rows, dtype=np.float64)})
    savemat(
        root / "info" / "query_IDX.mat", {"query_IDX": np.array([MARS_QUERY], dtype=np.float64)}
    )
    return root


def tiny_recipe(dataset: dict[str, Any], height: int = 16, width: int = 8) -> dict[str, Any]:
    """A one-epoch CPU run configuration: an 8-d SmallCNN embedding, batch-hard triplet,
    P=2 × K=2, one batch, no validation split, on ``dataset`` (a ``class_path`` mapping)."""
    return {
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False},
        "model": {
            "model": {
                "class_path": "embedlab.models.EmbeddingModel",
                "init_args": {
                    "backbone": {
                        "class_path": "embedlab.models.SmallCNN",
                        "init_args": {"in_channels": 3, "width": 8, "depth": 2},
                    },
                    "embedding_dim": 8,
                },
            },
            "loss": {"class_path": "embedlab.losses.TripletLoss"},
        },
        "data": {
            "dataset": dataset,
            "val": "none",
            "p": 2,
            "k": 2,
            "batches_per_epoch": 1,
            "transforms": {
                "class_path": "embedlab.data.PlainTransforms",
                "init_args": {"height": height, "width": width},
            },
        },
    }
