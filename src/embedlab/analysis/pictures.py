"""Pictures of retrieval: ranked lists for chosen queries and a 2-D map of the embeddings.

* :func:`ranked_lists` ranks the gallery for some queries the way the metrics do, marking each
  result ``correct``, ``wrong`` or ``excluded`` (the query's identity seen by the query's own
  camera, and junk images, which the ReID protocol ignores);
* :func:`ranked_list_figure` draws them: the query, then its top-k results with green (correct),
  red (wrong) or grey (excluded) borders;
* :func:`projection_figure` draws a PCA or t-SNE projection of the embeddings coloured by identity;
* :class:`RetrievalPictures` is a Lightning callback drawing both after validation, saving PNGs in
  the run directory and logging them to wandb when a ``WandbLogger`` is attached. Enable it in a
  config::

      trainer:
        callbacks:
          - class_path: embedlab.analysis.RetrievalPictures
            init_args: {every_n_epochs: 10, num_queries: 6, top_k: 8}

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state, no GUI backend), so
they are safe inside training processes and display inline in notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from embedlab.analysis.runs import Embeddings
from embedlab.distances import pairwise_distance
from embedlab.metrics import RetrievalEvaluator
from embedlab.metrics.retrieval import excluded

Status = Literal["correct", "wrong", "excluded"]
COLOURS: dict[str, str] = {"correct": "#1a9850", "wrong": "#d73027", "excluded": "#9e9e9e"}


@dataclass
class RankedList:
    """The ranking of one query: positions in the evaluation set, best first."""

    query: int
    results: list[int] = field(default_factory=list)
    status: list[Status] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)  # 1-based rank; None when excluded


def distances(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """``(Q, G)`` distances (``cosine``: 1 − cos, ``euclidean``: L2), by embedlab's one distance."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    q = torch.as_tensor(np.asarray(query), dtype=torch.float64)
    g = torch.as_tensor(np.asarray(gallery), dtype=torch.float64)
    return pairwise_distance(q, g, distance=metric).numpy()  # type: ignore[arg-type]


def choose_queries(is_query: np.ndarray, num: int, seed: int = 0) -> list[int]:
    """``num`` query positions drawn without replacement by a seeded generator (sorted)."""
    candidates = np.flatnonzero(np.asarray(is_query, dtype=bool))
    if len(candidates) == 0:
        return []
    rng = np.random.default_rng(seed)
    picked = rng.choice(candidates, size=min(num, len(candidates)), replace=False)
    return sorted(int(i) for i in picked)


def ranked_lists(
    embeddings: Embeddings,
    queries: Sequence[int],
    top_k: int = 8,
    metric: str = "cosine",
    junk_label: int | None = -1,
    max_excluded: int | None = None,
) -> list[RankedList]:
    """Rank the gallery for each query in ``queries`` (positions in the evaluation set).

    Results are collected until ``top_k`` ranked (non-excluded) items are found; excluded items
    met on the way (at most ``max_excluded``, default ``top_k``) are kept in place so a picture
    shows them. The query itself is never listed. Cameras equal to ``-1`` everywhere mean no
    camera filtering, as in the metrics.
    """
    labels, cameras = embeddings.labels, embeddings.cameras
    gallery = np.flatnonzero(embeddings.is_gallery)
    use_cameras = not bool((cameras == -1).all())
    max_excluded = top_k if max_excluded is None else max_excluded
    queries = [int(q) for q in queries]
    if not queries:
        return []
    dist = distances(embeddings.embeddings[queries], embeddings.embeddings[gallery], metric)
    out: list[RankedList] = []
    for row, query in enumerate(queries):
        order = gallery[np.argsort(dist[row], kind="stable")]
        skip = excluded(
            labels[query],
            cameras[query],
            labels[order],
            cameras[order] if use_cameras else None,
            junk_label,
        )
        ranked = RankedList(query)
        rank = n_excluded = 0
        for item, is_excluded in zip(order, skip, strict=True):
            if item == query:
                continue
            same_id = labels[item] == labels[query]
            if is_excluded:
                if n_excluded < max_excluded:
                    ranked.results.append(int(item))
                    ranked.status.append("excluded")
                    ranked.ranks.append(None)
                    n_excluded += 1
                continue
            rank += 1
            ranked.results.append(int(item))
            ranked.status.append("correct" if same_id else "wrong")
            ranked.ranks.append(rank)
            if rank >= top_k:
                break
        out.append(ranked)
    return out


# -- images --------------------------------------------------------------------------------
def to_display(image: Any) -> np.ndarray:
    """An image (tensor ``C×H×W``, array ``H×W[×C]`` or PIL image) as ``H×W×3`` floats in [0, 1].

    Tensors are min–max scaled per image, which undoes any normalisation for viewing.
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().float().cpu().numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)
    else:
        array = np.asarray(image, dtype=np.float64)
        if array.size and array.max() > 1.0:
            array = array / 255.0
    array = np.asarray(array, dtype=np.float64)
    if isinstance(image, torch.Tensor):
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array[..., :3], 0.0, 1.0)


def dataset_image(dataset: Any, index: int) -> np.ndarray:
    """Item ``index`` of an evaluation set for display: the original file when the dataset
    knows it (image folders), else the tensor it yields (e.g. digits)."""
    part, local = dataset, index
    parts = getattr(dataset, "parts", None)
    if parts is not None:
        offset = int(getattr(dataset, "offset", len(parts[0])))
        part, local = (parts[0], index) if index < offset else (parts[1], index - offset)
    if hasattr(part, "path"):
        from embedlab.data.image_dataset import load_image

        return to_display(load_image(part.path(local)))
    return to_display(part[local][0])


def _frame(ax: Any, colour: str, width: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def ranked_list_figure(
    lists: Sequence[RankedList],
    dataset: Any,
    labels: np.ndarray | None = None,
    title: str | None = None,
    tile: float = 1.3,
    cameras: np.ndarray | None = None,
) -> Figure:
    """A grid: one row per query — the query (black border), then its results with green
    (correct), red (wrong) or grey (excluded: same identity and camera, or junk) borders.

    Tiles are captioned with the rank, the identity (``labels``) and, when known, the camera."""
    if not lists:
        raise ValueError("no ranked lists to draw")
    ncols = 1 + max(len(r.results) for r in lists)
    nrows = len(lists)
    aspect = 1.0
    first = dataset_image(dataset, lists[0].query)
    aspect = first.shape[0] / max(1, first.shape[1])
    fig = Figure(figsize=(tile * ncols + 0.3, tile * aspect * nrows + 0.9), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))

    show_cameras = cameras is not None and not bool((np.asarray(cameras) == -1).all())

    def label_of(i: int) -> str:
        text = "" if labels is None else f"id {labels[i]}"
        if show_cameras and cameras is not None:
            text += f" · cam {cameras[i]}"
        return text

    for row, ranked in enumerate(lists):
        ax = axes[row, 0]
        ax.imshow(dataset_image(dataset, ranked.query), interpolation="nearest")
        _frame(ax, "black")
        ax.set_title(f"query\n{label_of(ranked.query)}", fontsize=7)
        for col in range(1, ncols):
            ax = axes[row, col]
            if col - 1 >= len(ranked.results):
                ax.set_visible(False)
                continue
            item, status, rank = (
                ranked.results[col - 1],
                ranked.status[col - 1],
                ranked.ranks[col - 1],
            )
            ax.imshow(dataset_image(dataset, item), interpolation="nearest")
            _frame(ax, COLOURS[status])
            head = "excluded" if rank is None else f"#{rank}"
            ax.set_title(
                f"{head}\n{label_of(item)}",
                fontsize=7,
                color=COLOURS[status] if rank is None else "black",
            )
    handles = [
        Patch(facecolor="none", edgecolor=c, linewidth=2, label=s) for s, c in COLOURS.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def project_2d(
    embeddings: np.ndarray, method: Literal["pca", "tsne"] = "pca", seed: int = 0
) -> np.ndarray:
    """``(N, 2)`` coordinates by PCA or t-SNE (scikit-learn)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 3:
        raise ValueError("need at least 3 points to project")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def projection_figure(
    embeddings: np.ndarray,
    labels: np.ndarray,
    method: Literal["pca", "tsne"] = "pca",
    max_identities: int = 20,
    max_points: int = 3000,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """A scatter plot of the 2-D projection coloured by identity.

    At most ``max_identities`` identities (drawn with a seeded generator) and ``max_points``
    points are shown; junk (``-1``) is left out.
    """
    x = np.asarray(embeddings)
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    ids = np.unique(y[y != -1])
    if len(ids) > max_identities:
        ids = np.sort(rng.choice(ids, size=max_identities, replace=False))
    keep = np.flatnonzero(np.isin(y, ids))
    if len(keep) > max_points:
        keep = np.sort(rng.choice(keep, size=max_points, replace=False))
    points = project_2d(x[keep], method, seed)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    palette = "tab10" if len(ids) <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[palette]
    for i, identity in enumerate(ids):
        mask = y[keep] == identity
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=9,
            color=cmap(i % cmap.N),
            label=str(identity),
            alpha=0.8,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{method.upper()} of the embeddings, coloured by identity", fontsize=10)
    if len(ids) <= 20:
        ax.legend(
            title="identity",
            fontsize=7,
            title_fontsize=8,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
        )
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def run_pictures(
    run_dir: str | Path,
    num_queries: int = 6,
    top_k: int = 8,
    projection: Literal["pca", "tsne"] | None = "pca",
    checkpoint: str = "best",
    seed: int = 0,
    data_overrides: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> dict[str, Figure]:
    """Ranked lists and the projection for a finished run, from its checkpoint (read with a
    safe load unless ``trust_checkpoint``: see :func:`embedlab.analysis.runs.load_module`)."""
    from embedlab.analysis.runs import run_embeddings

    emb, dataset, metric = run_embeddings(run_dir, checkpoint, data_overrides, trust_checkpoint)
    lists = ranked_lists(emb, choose_queries(emb.is_query, num_queries, seed), top_k, metric)
    name = f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
    figures = {
        "ranked_lists": ranked_list_figure(
            lists, dataset, emb.labels, title=f"{name}: ranked lists", cameras=emb.cameras
        )
    }
    if projection is not None:
        figures["projection"] = projection_figure(
            emb.embeddings, emb.labels, projection, seed=seed, title=f"{name}: {projection.upper()}"
        )
    return figures


# -- the callback --------------------------------------------------------------------------
def metric_embeddings(metric: RetrievalEvaluator) -> Embeddings | None:
    """The embeddings a :class:`embedlab.metrics.RetrievalEvaluator` accumulated, in dataset
    order (duplicates from a padded distributed sampler dropped); ``None`` when it holds none."""
    emb, labels, cameras, indices, flags = metric.gathered()
    if indices.numel() == 0:
        return None
    flags = flags.cpu()
    return Embeddings(
        embeddings=emb.detach().cpu().numpy().astype(np.float32),
        labels=labels.cpu().numpy(),
        cameras=cameras.cpu().numpy(),
        is_query=((flags & 1) != 0).numpy(),
        is_gallery=((flags & 2) != 0).numpy(),
    )


class RetrievalPictures(pl.Callback):
    """After validation, draw ranked lists and a 2-D projection of the embeddings.

    PNGs go to ``<run dir>/pictures/{ranked_lists,projection}_epochNNN.png``; with a
    ``WandbLogger`` they are also logged as images (keys ``pictures/ranked_lists`` and
    ``pictures/projection``). The same queries are shown every time, so the pictures of
    successive epochs can be compared.

    Args:
        every_n_epochs: draw when the number of trained epochs is a multiple of it (and after
            the last epoch); validation must run on those epochs.
        num_queries: rows of the ranked-list grid.
        top_k: ranked results per query.
        projection: ``pca``, ``tsne`` or ``none``.
        max_identities: identities shown in the projection.
        seed: picks the queries and the projected identities.
        on_test: draw after ``embedlab test`` too.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_queries: int = 6,
        top_k: int = 8,
        projection: Literal["pca", "tsne", "none"] = "pca",
        max_identities: int = 20,
        seed: int = 0,
        on_test: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError("every_n_epochs must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.num_queries = num_queries
        self.top_k = top_k
        self.projection = projection
        self.max_identities = max_identities
        self.seed = seed
        self.on_test = on_test
        self.saved: list[Path] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        epochs = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epochs >= trainer.max_epochs
        return epochs % self.every_n_epochs == 0 or last

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        self._draw(trainer, pl_module, "val", f"epoch{trainer.current_epoch + 1:03d}")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_test:
            self._draw(trainer, pl_module, "test", "test")

    def _draw(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, tag: str
    ) -> None:
        metric = getattr(pl_module, f"{stage}_metric", None)
        if metric is None:
            return
        # Runs before the module's epoch-end hook computes and resets the metric; every rank
        # takes part in the gather, only rank 0 draws.
        with metric.sync_context(should_sync=trainer.world_size > 1, should_unsync=True):
            emb = metric_embeddings(metric)
        if emb is None or trainer.global_rank != 0:
            return
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            return
        distance = str(pl_module.hparams.get("distance", "cosine"))
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "pictures"
        title = f"{stage} after {trainer.current_epoch + 1} epochs" if stage == "val" else "test"
        figures: dict[str, Figure] = {}
        lists = ranked_lists(
            emb, choose_queries(emb.is_query, self.num_queries, self.seed), self.top_k, distance
        )
        if lists:
            figures["ranked_lists"] = ranked_list_figure(
                lists, dataset, emb.labels, title=f"ranked lists, {title}", cameras=emb.cameras
            )
        if self.projection != "none" and len(emb.labels) >= 3:
            figures["projection"] = projection_figure(
                emb.embeddings,
                emb.labels,
                self.projection,
                self.max_identities,
                seed=self.seed,
                title=f"{self.projection.upper()} of the {stage} embeddings, {title}",
            )
        for name, fig in figures.items():
            path = save_figure(fig, out_dir / f"{name}_{tag}.png")
            self.saved.append(path)
            self._log_wandb(trainer, f"pictures/{name}", path)

    @staticmethod
    def _log_wandb(trainer: pl.Trainer, key: str, path: Path) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
