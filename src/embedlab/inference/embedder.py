"""A trained run's embedding model and evaluation transform, rebuilt from its checkpoint.

The run folder's ``config.yaml`` (next to ``checkpoints/``) describes the model and the data
module; the checkpoint provides the weights. Nothing reads the training dataset: the data
module is only constructed, for its ``transforms.eval`` (and, on demand, its splits).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentError, ArgumentParser
from PIL import Image
from torch import Tensor, nn

from embedlab.checkpoint_io import load_checkpoint
from embedlab.data.datamodule import RetrievalDataModule
from embedlab.data.image_dataset import load_image, to_rgb
from embedlab.errors import ConfigError, one_line, read_yaml
from embedlab.models import EmbeddingModel

__all__ = [
    "Embedder",
    "RunFiles",
    "build_run",
    "check_same_model",
    "load_embedder",
    "merge_data",
    "run_files",
]

#: Image file suffixes ``embedlab embed --images`` reads (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class RunFiles:
    """A checkpoint, its run folder and the run configuration."""

    checkpoint: Path
    run_dir: Path
    config: Path

    def recipe(self) -> dict[str, Any]:
        """``config.yaml`` as a dict (empty when the file is empty)."""
        loaded = read_yaml(self.config, "config")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config: {self.config} is not a mapping of settings")
        return loaded or {}


def run_files(ckpt_path: str | Path, config: str | Path | None = None) -> RunFiles:
    """The run of ``ckpt_path``: ``runs/X/version_N/checkpoints/last.ckpt`` → ``runs/X/version_N``.

    ``config`` defaults to the run folder's ``config.yaml``; either missing is a ConfigError.
    """
    ckpt = Path(ckpt_path)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    config_file = Path(config) if config else run_dir / "config.yaml"
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path: checkpoint not found: {ckpt}")
    if not config_file.is_file():
        raise ConfigError(f"config: no run configuration at {config_file}; pass --config")
    return RunFiles(ckpt, run_dir, config_file)


def merge_data(recipe: dict[str, Any], data: dict[str, Any] | None) -> dict[str, Any]:
    """The run's ``data`` section with ``data`` replacing its keys (mappings merged at every
    depth: ``{dataset: {init_args: {seed: 3}}}`` keeps the dataset's other arguments)."""
    return _merged(dict(recipe.get("data") or {}), data or {})


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for key, value in new.items():
        before = out.get(key)
        both = isinstance(before, dict) and isinstance(value, dict)
        out[key] = _merged(before, value) if both else value  # type: ignore[arg-type]
    return out


def build_run(recipe: dict[str, Any]) -> tuple[EmbeddingModel, RetrievalDataModule]:
    """The embedding network (``model.model``) and the data module of a run configuration.

    Unlike the whole ``MetricLearningModule``, neither needs the number of training classes,
    so the dataset is not read.
    """
    net = (recipe.get("model") or {}).get("model")
    if net is None:
        raise ConfigError("config: the run configuration has no model.model section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model.model", type=EmbeddingModel)
    parser.add_class_arguments(RetrievalDataModule, "data")
    try:
        parsed = parser.parse_object({"model": {"model": net}, "data": recipe.get("data") or {}})
    except ArgumentError as err:  # jsonargparse's errors name the key at fault
        raise ConfigError(one_line(str(err))) from err
    objects = parser.instantiate(parsed)  # a bug in a user's class keeps its traceback
    return objects["model.model"], objects["data"]


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
    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> np.ndarray:
        """Embeddings ``(len(images), embedding_dim)``, float32; an unreadable file raises
        :class:`~embedlab.data.image_dataset.BadImageError` naming it."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        chunks: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(x) for x in images[start : start + batch_size]])
            chunks.append(self(batch.to(self.device)).float().cpu().numpy())
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
