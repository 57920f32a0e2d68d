"""``embedlab evaluate --protocol cuhksysu``: person search, each query against its own gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from embedlab.errors import ConfigError
from embedlab.inference.embedder import Embedder, load_weights
from embedlab.report import print_summary, write_json
from embedlab.runs import RunFiles, build_run

__all__ = ["evaluate_person_search"]


def evaluate_person_search(
    files: RunFiles,
    recipe: dict[str, Any],
    folder: Path,
    gallery_size: int,
    trust_checkpoint: bool = False,
) -> int:
    """``evaluate --protocol cuhksysu``: embed the protocol's query and gallery crops with the
    checkpoint and score each query against its own gallery (``TestG<gallery_size>``)."""
    from embedlab.data.formats.cuhksysu import CUHKSYSU
    from embedlab.metrics.person_search import person_search

    model, datamodule = build_run(recipe)
    load_weights(model, files.checkpoint, trust_checkpoint=trust_checkpoint)
    sources = [s for s in datamodule.sources if isinstance(s, CUHKSYSU)]
    if not sources:
        raise ConfigError(
            "protocol: cuhksysu needs an embedlab.data.CUHKSYSU dataset in the run's data "
            "(or give one with --data '{dataset: {class_path: embedlab.data.CUHKSYSU, "
            "init_args: {root: …}}}')"
        )
    source = sources[0]
    protocol = source.protocol(gallery_size)
    assert protocol.queries is not None and protocol.gallery is not None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    embedder = Embedder(model, datamodule.transforms.eval, files, datamodule).to(device)
    workers = datamodule.num_workers
    query = embedder.embed_images(
        [str(source.root / p) for p in protocol.queries["path"]], num_workers=workers
    )
    gallery = embedder.embed_images(
        [str(source.root / p) for p in protocol.gallery["path"]], num_workers=workers
    )
    distance = (recipe.get("model") or {}).get("distance", "cosine")
    results = person_search(query, gallery, protocol, distance=distance)
    scalars = {k: float(v) for k, v in results.items() if np.ndim(v) == 0}
    print_summary({f"TestG{gallery_size}": scalars}, "person search, each query's own gallery")
    name = f"evaluation_cuhksysu{gallery_size}"
    write_json(folder / f"{name}.json", {"checkpoint": str(files.checkpoint), "metrics": results})
    pd.DataFrame([results]).to_csv(folder / f"{name}.csv", index=False)
    print(f"wrote {folder / (name + '.json')} and {folder / (name + '.csv')}")
    return 0
