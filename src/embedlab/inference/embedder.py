"""A trained run's embedding model and evaluation transform, rebuilt from its checkpoint.

The run folder's ``config.yaml`` (next to ``checkpoints/``) describes the model and the data
module; the checkpoint provides the weights. Nothing reads the training dataset: the data
module is only constructed, for its ``transforms.eval`` (and, on demand, its splits).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from embedlab.checkpoint_io import load_checkpoint
from embedlab.data.datamodule import RetrievalDataModule
from embedlab.data.image_dataset import BadImageError, load_image, to_rgb
from embedlab.errors import ConfigError
from embedlab.runs import RunFiles, build_run, merge_data, run_files

__all__ = ["Embedder", "check_same_model", "load_embedder"]

#: Image file suffixes ``embedlab embed --images`` reads (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

ImageInput = str | Path | Image.Image
Item = tuple[Tensor | None, int, str]


class ImageFiles(Dataset[Item]):
    """Image files (or PIL images) through a transform: ``(tensor, index, "")``, or
    ``(None, index, reason)`` for a file that cannot be read."""

    def __init__(self, paths: Sequence[ImageInput], transform: Any) -> None:
        self.paths = [p if isinstance(p, Image.Image) else Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        try:
            image = self.paths[index]
            picture = to_rgb(image) if isinstance(image, Image.Image) else load_image(image)
            return self.transform(picture), index, ""
        except BadImageError as err:
            return None, index, err.reason


class Batch(NamedTuple):
    """The readable images of a batch, their dataset positions, and the unreadable ones."""

    images: Tensor
    indices: Tensor
    bad: list[tuple[int, str]]


def collate(items: list[Item]) -> Batch:
    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, reason) for x, i, reason in items if x is None]
    images = torch.stack([x for x, _ in good]) if good else torch.zeros(0)
    return Batch(images, torch.tensor([i for _, i in good], dtype=torch.long), bad)


class Embedder(nn.Module):
    """A trained embedding model in eval mode and the transform its evaluation used.

    ``embedder(batch)`` embeds a preprocessed float batch ``(N, C, H, W)``;
    :meth:`embed_images` embeds image files or PIL images. BNNeck, normalisation and the
    flip test are those of the run's configuration.

    Args:
        model: the embedding network.
        transform: PIL image → float tensor ``(C, H, W)`` (``data.transforms``'s ``eval``);
            ``None`` for runs on arrays (digits), which embed only batches.
        files: the checkpoint and configuration it was loaded from, if any.
        datamodule: the run's data module (not set up), for its splits.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: Callable[[Image.Image], Tensor] | None = None,
        files: RunFiles | None = None,
        datamodule: RetrievalDataModule | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.files = files
        self.datamodule = datamodule
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return int(getattr(self.model, "embedding_dim"))  # noqa: B009 (any nn.Module)

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights and the evaluation transform: two embedders with the
        same fingerprint give the same embeddings, wherever their checkpoint files lie."""
        digest = hashlib.sha256(repr(self.transform).encode())
        for name, value in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def preprocess(self, image: ImageInput) -> Tensor:
        """An image file or PIL image as the model's input tensor (the evaluation transform)."""
        if self.transform is None:
            raise ConfigError(
                "this embedder has no image transform: "
                "embed a dataset split or preprocessed batches instead"
            )
        picture = to_rgb(image) if isinstance(image, Image.Image) else load_image(image)
        return self.transform(picture)

    @torch.no_grad()
    def embed_images(
        self, images: Sequence[ImageInput], batch_size: int = 64, num_workers: int = 0
    ) -> np.ndarray:
        """Embeddings ``(len(images), embedding_dim)``, float32, decoded by ``num_workers``
        loader processes (the dataset and batches of ``embedlab embed``); an unreadable file
        raises :class:`~embedlab.data.image_dataset.BadImageError` naming it."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if self.transform is None and len(images):
            self.preprocess(images[0])  # raises the error that says what to do instead
        dataset = ImageFiles(images, self.transform)
        loader = DataLoader(dataset, batch_size, num_workers=num_workers, collate_fn=collate)
        chunks: list[np.ndarray] = []
        for batch in loader:
            if batch.bad:  # the first unreadable image, named
                index, reason = batch.bad[0]
                raise BadImageError(str(images[index]), reason)
            chunks.append(self(batch.images.to(self.device)).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


def load_weights(
    model: nn.Module, checkpoint: Path, prefix: str = "model.", trust_checkpoint: bool = False
) -> None:
    """Load the ``prefix`` part of a Lightning checkpoint's ``state_dict`` into ``model``.

    The file is read by :func:`~embedlab.checkpoint_io.load_checkpoint`: a safe
    (``weights_only``) load unless ``trust_checkpoint``.
    """
    try:
        state = load_checkpoint(checkpoint, trust_checkpoint)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"ckpt_path: cannot read checkpoint {checkpoint}: {err}") from err
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"ckpt_path: {checkpoint} is not a Lightning checkpoint (no state_dict)")
    own = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"ckpt_path: {checkpoint} does not match the run configuration's model "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def torch_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` (default: CUDA if available, else the CPU); a ConfigError naming ``device``
    when it is not a device name or names a GPU this machine does not have."""
    try:
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ConfigError(
            f"device: {device!r} is no torch device (cpu, cuda, cuda:1, ...)"
        ) from err
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        found = torch.cuda.device_count()
        raise ConfigError(
            f"device: {target} asked for, but torch finds {found} CUDA GPU(s) on this machine; "
            "use --device cpu"
        )
    return target


def load_embedder(
    ckpt_path: str | Path,
    device: str | torch.device | None = None,
    config: str | Path | None = None,
    data: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
) -> Embedder:
    """The :class:`Embedder` of a checkpoint, in eval mode on ``device`` (default: CUDA if
    available, else the CPU).

    Args:
        ckpt_path: e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        device: where the model runs.
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        data: data module arguments replacing the run's (e.g. ``{root: /data/market}``).
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
    """
    target = torch_device(device)
    files = run_files(ckpt_path, config)
    recipe = files.recipe()
    model, datamodule = build_run({**recipe, "data": merge_data(recipe, data)})
    load_weights(model, files.checkpoint, trust_checkpoint=trust_checkpoint)
    transform = datamodule.transforms.eval
    return Embedder(model, transform, files, datamodule).to(target)


def check_same_model(index: dict[str, Any], queries: dict[str, Any], what: str) -> None:
    """Refuse to mix embeddings of two models (their ``model`` fingerprints differ) in one
    index or one search: their distances mean nothing. Files without a fingerprint (written
    before embedlab recorded one) are compared by checkpoint path, with a warning."""
    if index.get("model") and queries.get("model"):
        if index["model"] != queries["model"]:
            raise ConfigError(
                f"{what} embeds with model {queries['model']} ({queries.get('checkpoint')}), "
                f"the index holds model {index['model']} ({index.get('checkpoint')}): "
                "rebuild the index with this model, or query it with the index's"
            )
    elif index.get("checkpoint") != queries.get("checkpoint"):
        print(
            f"embedlab: warning: {what} comes from {queries.get('checkpoint')}, "
            f"the index from {index.get('checkpoint')}",
            file=sys.stderr,
        )
