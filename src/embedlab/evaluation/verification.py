"""``embedlab evaluate --protocol verification``: LFW / YouTube Faces pairs with a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedlab.data.pairs import LFWPairs, YouTubeFacesPairs
from embedlab.inference.embedder import Embedder, load_weights
from embedlab.metrics.verification import (
    frame_distance,
    pair_distances,
    set_distances,
    verify_distances,
)
from embedlab.options import SetDistance
from embedlab.report import print_summary, write_json
from embedlab.runs import RunFiles, build_run

__all__ = ["evaluate_verification"]


def evaluate_verification(
    files: RunFiles,
    recipe: dict[str, Any],
    folder: Path,
    source: LFWPairs | YouTubeFacesPairs,
    video_distance: SetDistance = "mean_pairwise",
    trust_checkpoint: bool = False,
) -> int:
    """``evaluate --protocol verification``: embed every image of the pairs once with the
    checkpoint and run the verification protocol over the folds of the pairs file (for
    YouTube Faces, each video's frames, compared by ``video_distance``)."""
    from embedlab.analysis.pictures import save_figure

    table = source.pairs()
    model, datamodule = build_run(recipe)
    load_weights(model, files.checkpoint, trust_checkpoint=trust_checkpoint)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    embedder = Embedder(model, datamodule.transforms.eval, files, datamodule).to(device)
    unique = pd.unique(pd.concat([table["path1"], table["path2"]]))
    videos = isinstance(source, YouTubeFacesPairs)
    members = [[p] for p in unique]  # LFW: each side one image
    if isinstance(source, YouTubeFacesPairs):
        members = [source.frames(p) for p in unique]
    embedded = torch.from_numpy(
        embedder.embed_images(
            [str(source.root / f) for m in members for f in m], num_workers=datamodule.num_workers
        )
    )
    ends = np.cumsum([len(m) for m in members])
    sets = dict(zip(unique, torch.tensor_split(embedded, ends[:-1].tolist()), strict=True))
    distance = (recipe.get("model") or {}).get("distance", "cosine")
    first = [sets[p] for p in table["path1"]]
    second = [sets[p] for p in table["path2"]]
    folds = int(table["fold"].max()) + 1
    if videos:  # FaceNet's squared euclidean frame distance for a euclidean run
        distance = frame_distance(distance)
        d = set_distances(first, second, distance, video_distance)
    else:
        d = pair_distances(torch.cat(first), torch.cat(second), distance)
    results = verify_distances(d, table["same"].to_numpy(), folds=folds)
    scalars = {k: v for k, v in results.items() if isinstance(v, float)}
    print_summary({"pairs": scalars}, f"verification, {folds} folds, {len(table)} pairs")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "verification.json",
        {"checkpoint": str(files.checkpoint), "distance": distance, **results},
    )
    roc = pd.DataFrame({"fpr": results.get("fpr", []), "tpr": results.get("tpr", [])})
    roc.to_csv(folder / "roc.csv", index=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot(roc["fpr"], roc["tpr"])
    ax.set(xscale="log", xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    save_figure(fig, folder / "roc.png")
    print(f"wrote {folder / 'verification.json'}, {folder / 'roc.csv'} and {folder / 'roc.png'}")
    return 0
