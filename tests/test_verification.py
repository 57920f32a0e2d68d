"""Pair verification against a loop transcription of LFW's protocol; LFW's pairs.txt and
YouTube Faces' splits.txt on miniature trees; `embedlab evaluate --protocol verification` end
to end on both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from sklearn.metrics import roc_auc_score

from embedlab.cli import main
from embedlab.data import LFWPairs, YouTubeFacesPairs, open_pairs, read_lfw_pairs
from embedlab.data.formats import DatasetFormatError
from embedlab.errors import ConfigError
from embedlab.metrics import pair_distances, set_distances, verify, verify_distances
from embedlab.metrics.verification import frame_distance
from fake_datasets import tiny_recipe, write_image


def reference(d: list[float], same: list[bool], folds: int) -> tuple[list[float], list[float]]:
    """Per fold: the first threshold of best accuracy on the other folds, and the fold's
    accuracy with it; candidates are midpoints of consecutive distinct distances and ±inf."""
    n = len(d)
    size = n // folds
    accuracies, thresholds = [], []
    for k in range(folds):
        test = [i for i in range(n) if i // size == k]
        train = [i for i in range(n) if i // size != k]
        values = sorted({d[i] for i in train})
        candidates = [-math.inf]
        candidates += [(values[j] + values[j + 1]) / 2 for j in range(len(values) - 1)]
        candidates += [math.inf]
        best, best_t = -1.0, 0.0
        for t in candidates:
            acc = sum((d[i] < t) == same[i] for i in train) / len(train)
            if acc > best:
                best, best_t = acc, t
        thresholds.append(best_t)
        accuracies.append(sum((d[i] < best_t) == same[i] for i in test) / len(test))
    return accuracies, thresholds


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_verify_is_the_protocol(distance: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(60, 4, generator=g, dtype=torch.float64)
    same = torch.rand(60, generator=g) < 0.5
    b = torch.where(same[:, None], a + 0.6 * torch.randn(60, 4, generator=g), torch.randn(60, 4))
    b[7] = b[3] = a[3]  # exact ties (zero distance) and a repeated pair
    same[7] = same[3] = True
    results = verify(a, b, same, folds=5, distance=distance)  # type: ignore[arg-type]
    d = pair_distances(a, b, distance).tolist()  # type: ignore[arg-type]
    accuracies, thresholds = reference(d, same.tolist(), 5)
    assert results["fold_accuracy"] == pytest.approx(accuracies, abs=1e-12)
    assert results["fold_threshold"] == pytest.approx(thresholds, abs=1e-12)
    assert results["accuracy"] == pytest.approx(np.mean(accuracies))
    assert results["accuracy_std"] == pytest.approx(np.std(accuracies))  # population std
    assert results["auc"] == pytest.approx(roc_auc_score(same.numpy(), -np.array(d)))
    assert 0 <= results["eer"] <= 1
    assert results["tpr@fpr=0.001"] <= results["tpr@fpr=0.01"]  # the ROC only rises


def test_distances_by_hand() -> None:
    a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 4.0], [2.0, 2.0]])
    assert pair_distances(a, b).tolist() == [5.0, pytest.approx(math.sqrt(2))]
    assert pair_distances(a, b, "squared_euclidean").tolist() == [25.0, pytest.approx(2.0)]
    assert pair_distances(a, b, "cosine").tolist() == [1.0, pytest.approx(0.0)]


def test_separable_pairs_reach_full_accuracy_and_inf_thresholds_occur() -> None:
    a = torch.zeros(20, 2, dtype=torch.float64)
    same = torch.arange(20) % 2 == 0
    b = torch.where(same[:, None], torch.full((20, 2), 0.1), torch.full((20, 2), 5.0)).double()
    results = verify(a, b, same, folds=10)
    assert results["accuracy"] == 1.0 and results["accuracy_std"] == 0.0
    assert results["auc"] == 1.0 and results["eer"] == 0.0 and results["tpr@fpr=0.001"] == 1.0
    # every pair "different": the best threshold is -inf (predict nothing same)
    all_different = verify(a, b, torch.zeros(20, dtype=torch.bool), folds=2)
    assert all_different["fold_threshold"] == [-math.inf, -math.inf]
    assert all_different["accuracy"] == 1.0 and "auc" not in all_different


def test_bad_folds_and_shapes_are_one_line_errors() -> None:
    a = torch.zeros(10, 3)
    with pytest.raises(ConfigError, match="10 pairs do not split into equal folds"):
        verify(a, a, torch.ones(10, dtype=torch.bool), folds=3)
    with pytest.raises(ConfigError, match=r"embeddings1 \(10, 3\) and embeddings2 \(9, 3\)"):
        verify(a, a[:9], torch.ones(10, dtype=torch.bool), folds=2)


def test_set_distances_are_the_mean_over_frame_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    first = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (1, 4, 3)]
    second = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (2, 1, 5)]
    for distance in ("euclidean", "squared_euclidean", "cosine"):
        got = set_distances(first, second, distance)  # type: ignore[arg-type]
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            loop = [
                float(pair_distances(x[None], y[None], distance)[0])  # type: ignore[arg-type]
                for x in a
                for y in b
            ]
            assert float(got[i]) == pytest.approx(sum(loop) / len(loop), abs=1e-9)
            ma, mb = a.mean(0), b.mean(0)
            by_hand = {
                "euclidean": (ma - mb).norm(),
                "squared_euclidean": (ma - mb).square().sum(),
                "cosine": 1 - ma @ mb / (ma.norm() * mb.norm()),
            }[distance]
            mean = set_distances([a], [b], distance, "mean_embedding")  # type: ignore[arg-type]
            assert float(mean[0]) == pytest.approx(float(by_hand))
    d = set_distances(first, second)
    same = np.array([True, False, True, False, True, False])
    doubled = torch.cat([d, d])
    assert verify_distances(doubled, same, folds=2)["fold_threshold"] == pytest.approx(
        reference(doubled.tolist(), same.tolist(), 2)[1]
    )
    with pytest.raises(ConfigError, match=r"pair 0: sets \(0, 3\)"):
        set_distances([torch.zeros(0, 3)], [torch.zeros(2, 3)])


def test_set_distances_default_to_facenets_mean_squared_distance() -> None:
    g = torch.Generator().manual_seed(3)
    first = [torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (3, 1, 2)]
    second = [torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (2, 4, 2)]
    got = set_distances(first, second).tolist()
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        # FaceNet on YouTube Faces: (1 / n·m) Σ_j Σ_k ‖a_j − b_k‖², written out
        total, count = 0.0, 0
        for j in range(len(a)):
            for k in range(len(b)):
                total += sum((float(a[j, t]) - float(b[k, t])) ** 2 for t in range(a.shape[1]))
                count += 1
        assert got[i] == pytest.approx(total / count, abs=1e-12)
    # not the mean euclidean distance: one frame against two at distances 1 and 3
    one, two = torch.zeros(1, 1), torch.tensor([[1.0], [3.0]])
    assert set_distances([one], [two]).tolist() == [5.0]  # (1 + 9) / 2, not (1 + 3) / 2
    assert set_distances([one.numpy()], [two.numpy()], "euclidean").tolist() == [2.0]
    # the thresholds of verify_distances are then squared distances: pairs at distance
    # 1 (same) and 3 (different) split at the squared midpoint (1 + 9) / 2
    d = set_distances([one, one, one, one], [two[:1], two[1:], two[:1], two[1:]])
    assert d.tolist() == [1.0, 9.0, 1.0, 9.0]
    split = verify_distances(d, np.array([True, False, True, False]), folds=2)
    assert split["fold_threshold"] == [5.0, 5.0] and split["accuracy"] == 1.0


def test_frame_distance_of_a_run() -> None:
    assert frame_distance("euclidean") == "squared_euclidean"
    assert frame_distance("cosine") == "cosine"
    # cosine distance = ½ squared euclidean distance on the unit sphere: the same decisions
    g = torch.Generator().manual_seed(4)
    first = [F.normalize(torch.randn(3, 5, generator=g), dim=1) for _ in range(4)]
    second = [F.normalize(torch.randn(2, 5, generator=g), dim=1) for _ in range(4)]
    torch.testing.assert_close(
        2 * set_distances(first, second, "cosine"), set_distances(first, second)
    )
    with pytest.raises(ConfigError, match="expected euclidean or cosine"):
        frame_distance("manhattan")


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_verify_takes_numpy_arrays_and_tensors_alike(distance: str) -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    b = a + torch.randn(40, 6, generator=g, dtype=torch.float64)
    same = (torch.arange(40) % 2 == 0).numpy()
    b[1::2] = torch.randn(20, 6, generator=g, dtype=torch.float64)
    expected = verify(a, b, same, folds=4, distance=distance)  # type: ignore[arg-type]
    for x, y in ((a.numpy(), b.numpy()), (a.numpy(), b), (a, b.numpy())):
        got = verify(x, y, same, folds=4, distance=distance)  # type: ignore[arg-type]
        assert got["fold_threshold"] == expected["fold_threshold"]
        assert got["accuracy"] == expected["accuracy"] and got["auc"] == expected["auc"]
    as_float32 = verify(a.float().numpy(), b.float().numpy(), same, folds=4)
    assert as_float32["accuracy"] == verify(a.float(), b.float(), same, folds=4)["accuracy"]
    with pytest.raises(ConfigError, match="embeddings1: expected a torch.Tensor or numpy"):
        verify(a.tolist(), b, same, folds=4)  # type: ignore[arg-type]
    nan = a.numpy().copy()
    nan[0, 0] = np.nan
    with pytest.raises(ConfigError, match="embeddings1: contains NaN"):
        verify(nan, b, same, folds=4)


def make_lfw(root: Path, folds: int = 2, per_fold: int = 3) -> Path:
    """LFW: pairs.txt with ``folds`` × (``per_fold`` matched + ``per_fold`` mismatched) lines."""
    names = [f"Person_{c}" for c in "ABCDEF"]
    lines = [f"{folds}\t{per_fold}"]
    for fold in range(folds):
        for k in range(per_fold):
            lines.append(f"{names[k]}\t1\t{2 + fold}")
        for k in range(per_fold):
            lines.append(f"{names[k]}\t{1 + fold}\t{names[k + 3]}\t1")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    for label, name in enumerate(names):
        for i in range(1, folds + 2):
            write_image(root / "lfw" / name / f"{name}_{i:04d}.jpg", label, (16, 16), seed=i)
    return root


def test_lfw_pairs_are_read_exactly(tmp_path: Path) -> None:
    table = LFWPairs(make_lfw(tmp_path / "lfw_root")).pairs()
    assert list(table.columns) == ["path1", "path2", "same", "fold"]
    assert len(table) == 12 and table["same"].sum() == 6
    assert table["fold"].tolist() == [0] * 6 + [1] * 6
    assert table.iloc[0].tolist() == [
        "lfw/Person_A/Person_A_0001.jpg",
        "lfw/Person_A/Person_A_0002.jpg",
        True,
        0,
    ]
    assert table.iloc[9].tolist() == [
        "lfw/Person_A/Person_A_0002.jpg",
        "lfw/Person_D/Person_D_0001.jpg",
        False,
        1,
    ]
    assert all((tmp_path / "lfw_root" / p).is_file() for p in table["path1"])


def test_malformed_pairs_name_the_line(tmp_path: Path) -> None:
    root = make_lfw(tmp_path / "l")
    lines = (root / "pairs.txt").read_text().splitlines()
    lines[2] = "Person_B\t1"
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"pairs.txt:3: expected a matched"):
        read_lfw_pairs(root)
    (root / "pairs.txt").write_text("2\t3\nPerson_A\t1\t2\n")
    with pytest.raises(DatasetFormatError, match="need 12 pair lines"):
        read_lfw_pairs(root)


YTF_NAMES = ("Aaron_Eckhart", "Bob_Dole", "Cher")


def make_ytf(root: Path, splits: int = 2, images: str = "aligned_images_DB") -> Path:
    """YouTube Faces: 3 people × 2 videos × 12 frames; splits.txt with ``splits`` × 4 pairs
    (2 same, 2 different), written split by split in reverse order."""
    for label, name in enumerate(YTF_NAMES):
        for video in range(2):
            for frame in range(12):
                prefix = "aligned_detect_" if images == "aligned_images_DB" else ""
                stem = f"{prefix}{video}.{frame + 1}"
                path = root / images / name / str(video) / f"{stem}.jpg"
                write_image(path, label, (16, 16), seed=10 * video + frame)
    lines = ["split number, pair id, first name, second name, is physically the same, is the same"]
    pair = 0
    for split in range(splits, 0, -1):
        a, b = YTF_NAMES[split % 3], YTF_NAMES[(split + 1) % 3]
        for first, second, same in [
            (f"{a}/0", f"{a}/1", 1),
            (f"{b}/1", f"{b}/0", 1),
            (f"{a}/0", f"{b}/0", 0),
            (f"{b}/1", f"{a}/1", 0),
        ]:
            pair += 1
            lines.append(f"{split}, {pair}, {first}, {second}, {same}, {same}, ")
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    return root


def test_youtube_faces_splits_are_read_exactly(tmp_path: Path) -> None:
    root = make_ytf(tmp_path / "ytf", splits=3)
    source = open_pairs(root, frames=5)
    assert isinstance(source, YouTubeFacesPairs)
    table = source.pairs()
    assert list(table.columns) == ["path1", "path2", "same", "fold"]
    assert table["fold"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted by split
    assert table["same"].tolist() == [True, True, False, False] * 3
    # split 1 was written last: its pairs are those of Bob_Dole (1 % 3) and Cher
    assert table.iloc[0].tolist() == [
        "aligned_images_DB/Bob_Dole/0",
        "aligned_images_DB/Bob_Dole/1",
        True,
        0,
    ]
    frames = source.frames("aligned_images_DB/Cher/1")
    # frame order by number (1, 2, …, 10 — not "1", "10", "11", "12", "2"), first 5 kept
    expected = [f"aligned_images_DB/Cher/1/aligned_detect_1.{i}.jpg" for i in range(1, 6)]
    assert frames == expected
    assert len(YouTubeFacesPairs(root, frames=0).frames("aligned_images_DB/Cher/1")) == 12
    frames_db = make_ytf(tmp_path / "frames", images="frame_images_DB")
    other = open_pairs(frames_db)
    assert isinstance(other, YouTubeFacesPairs) and other.images == "frame_images_DB"
    assert other.frames("frame_images_DB/Cher/0")[1] == "frame_images_DB/Cher/0/0.2.jpg"
    assert isinstance(open_pairs(make_lfw(tmp_path / "lfw")), LFWPairs)


def test_malformed_splits_name_the_line(tmp_path: Path) -> None:
    root = make_ytf(tmp_path / "ytf")
    lines = (root / "splits.txt").read_text().splitlines()
    original = list(lines)
    lines[3] = "2, 3, Cher/0, Nobody/0, 0, 0"
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"splits.txt:4: video folder .*Nobody/0"):
        YouTubeFacesPairs(root).pairs()
    lines[3] = "2, 3, Cher/0, Cher/1, 0, yes"
    (root / "splits.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"splits.txt:4: expected 'split, pair id"):
        YouTubeFacesPairs(root).pairs()
    (root / "splits.txt").write_text("\n".join(original[:-1]) + "\n")
    with pytest.raises(
        DatasetFormatError, match=r"not numbered 1..n with equal sizes \(1: 3, 2: 4\)"
    ):
        YouTubeFacesPairs(root).pairs()


@pytest.mark.slow
def test_evaluate_verification_end_to_end(tmp_path: Path) -> None:
    root = make_lfw(tmp_path / "lfw_root")
    train = tmp_path / "faces"
    for label in range(3):
        for n in range(2):
            for split in ("train", "test"):
                write_image(train / split / f"{label}" / f"{n}.png", label, (16, 16), seed=n)
    recipe = tiny_recipe(
        {"class_path": "embedlab.data.ImageFolder", "init_args": {"root": str(train)}}, 16, 16
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fit = ["fit", "--config", str(tmp_path / "recipe.yaml"), f"--output_root={tmp_path}"]
    assert main([*fit, "--experiment=faces"]) in (0, None)
    ckpt = tmp_path / "faces" / "version_0" / "checkpoints" / "last.ckpt"
    out = tmp_path / "verification"
    argv = ["evaluate", f"--ckpt_path={ckpt}", "--protocol=verification", f"--pairs={root}"]
    assert main([*argv, f"--out={out}"]) == 0
    written = json.loads((out / "verification.json").read_text())
    from embedlab.inference import load_embedder

    embedder = load_embedder(ckpt, device="cpu")
    table = read_lfw_pairs(root)
    first = torch.from_numpy(embedder.embed_images([str(root / p) for p in table["path1"]]))
    second = torch.from_numpy(embedder.embed_images([str(root / p) for p in table["path2"]]))
    expected = verify(first, second, table["same"].to_numpy(), folds=2, distance="cosine")
    assert written["accuracy"] == pytest.approx(expected["accuracy"])
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"])
    assert (out / "roc.png").stat().st_size > 0 and (out / "roc.csv").is_file()
    assert main([*argv[:3], f"--out={out}"]) == 2  # verification without --pairs: one line

    # YouTube Faces with the same checkpoint: FaceNet's mean over all frame pairs
    ytf = make_ytf(tmp_path / "ytf")
    video_out = tmp_path / "ytf_out"
    ytf_argv = [*argv[:3], f"--pairs={ytf}", "--video_frames=4", f"--out={video_out}"]
    assert main(ytf_argv) == 0
    written = json.loads((video_out / "verification.json").read_text())
    source = YouTubeFacesPairs(ytf, frames=4)
    table = source.pairs()
    sets = {
        v: torch.from_numpy(embedder.embed_images([str(ytf / f) for f in source.frames(v)]))
        for v in set(table["path1"]) | set(table["path2"])
    }
    d = set_distances(
        [sets[v] for v in table["path1"]], [sets[v] for v in table["path2"]], "cosine"
    )
    expected = verify_distances(d, table["same"].to_numpy(), folds=2)
    assert written["accuracy"] == pytest.approx(expected["accuracy"])
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"])
    assert written["distance"] == "cosine"

    # a euclidean run: FaceNet's mean squared distance, its thresholds squared distances
    config = yaml.safe_load((tmp_path / "faces" / "version_0" / "config.yaml").read_text())
    config["model"]["distance"] = "euclidean"
    (tmp_path / "euclidean.yaml").write_text(yaml.safe_dump(config))
    squared_out = tmp_path / "ytf_squared"
    euclidean_argv = [*ytf_argv[:-1], f"--config={tmp_path / 'euclidean.yaml'}"]
    assert main([*euclidean_argv, f"--out={squared_out}"]) == 0
    written = json.loads((squared_out / "verification.json").read_text())
    d = set_distances([sets[v] for v in table["path1"]], [sets[v] for v in table["path2"]])
    expected = verify_distances(d, table["same"].to_numpy(), folds=2)
    assert written["distance"] == "squared_euclidean"
    assert written["fold_threshold"] == pytest.approx(expected["fold_threshold"])
    assert written["accuracy"] == pytest.approx(expected["accuracy"])
