"""A trained embedder as a file other runtimes load: ONNX (onnxruntime, TensorRT) or TorchScript.

The exported graph takes a preprocessed float batch ``images`` ``(N, C, H, W)`` (dynamic
``N``; the run's evaluation transform applied to each image) and returns ``embeddings``
``(N, D)``, normalised as at evaluation (BNNeck, L2 and flip test as configured).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from embedlab.errors import ConfigError, expect_suffix
from embedlab.inference.embedder import Embedder

__all__ = ["ExportFormat", "example_input", "export_embedder"]

ExportFormat = Literal["onnx", "torchscript"]
#: The file suffixes of each format.
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}
#: How to install what ``format: onnx`` needs.
ONNX_EXTRA = "pip install 'embedlab[export]'"


def example_input(embedder: Embedder, input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """A batch of two inputs ``(2, C, H, W)``: of ``input_shape`` ``(C, H, W)``, or the shape the
    run's evaluation transform gives an image."""
    if input_shape is not None:
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"input_shape: expected [C, H, W], got {list(input_shape)}")
        return torch.zeros(2, *(int(s) for s in input_shape))
    if embedder.transform is None:
        raise ConfigError("input_shape: this run has no image transform; give [C, H, W]")
    image = embedder.transform(Image.new("RGB", (256, 256), (128, 128, 128)))
    return torch.stack([image, image])


def export_embedder(
    embedder: Embedder,
    out: str | Path,
    format: ExportFormat = "onnx",
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
) -> Path:
    """Write ``embedder``'s model to ``out`` as ONNX (input ``images``, output ``embeddings``,
    dynamic batch) or TorchScript (``torch.jit.trace``); returns ``out``."""
    if format not in ("onnx", "torchscript"):
        raise ConfigError(f"format must be onnx or torchscript, got {format!r}")
    expect_suffix(out, "out", SUFFIXES[format], f"a {format} model")
    if format == "onnx":
        try:
            import onnx  # noqa: F401 (torch.onnx.export writes the model with it)
        except ImportError as err:
            raise ConfigError(
                f"format: onnx needs the onnx package, which is not installed: {ONNX_EXTRA}"
            ) from err
    model = copy.deepcopy(embedder.model).cpu().eval()
    example = example_input(embedder, input_shape)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        if format == "torchscript":
            torch.jit.trace(model, example).save(str(target))
        else:
            torch.onnx.export(
                model,
                (example,),
                str(target),
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    return target
