"""``embedlab export``: a checkpoint's embedding model as ONNX or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def export(
    ckpt_path: Path,
    out: Path,
    format: Literal["onnx", "torchscript"] = "onnx",
    input_shape: list[int] | None = None,
    config: Path | None = None,
    trust_checkpoint: bool = False,
) -> int:
    """Export a checkpoint's embedding model to ONNX or TorchScript.

    Input ``images``: a preprocessed float batch ``(N, C, H, W)`` (dynamic N: the run's
    evaluation transform applied to each image); output ``embeddings`` ``(N, D)``, normalised
    as at evaluation.

    Args:
        ckpt_path: checkpoint, e.g. ``runs/X/version_N/checkpoints/last.ckpt``.
        out: the file written, e.g. ``model.onnx`` or ``model.pt``.
        format: ``onnx`` (onnxruntime, TensorRT) or ``torchscript`` (``torch.jit.load``).
        input_shape: ``[C, H, W]`` of one input (default: what the evaluation transform gives).
        config: run configuration (default: ``config.yaml`` of the checkpoint's run folder).
        trust_checkpoint: load a checkpoint that a safe (``weights_only``) load refuses, with
            full unpickling, which can run code: only for a file from a trusted source.
    """
    from embedlab.inference import load_embedder
    from embedlab.inference.export import example_input, export_embedder

    embedder = load_embedder(ckpt_path, "cpu", config, trust_checkpoint=trust_checkpoint)
    target = export_embedder(embedder, out, format, input_shape)
    shape = tuple(example_input(embedder, input_shape).shape[1:])
    print(f"wrote {target}: {format}, input images (N, {', '.join(map(str, shape))}), ", end="")
    print(f"output embeddings (N, {embedder.embedding_dim}); preprocessing: {embedder.transform}")
    return 0
