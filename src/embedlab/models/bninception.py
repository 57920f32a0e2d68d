"""BN-Inception (Inception-v2 with batch normalisation; Ioffe & Szegedy 2015), the backbone of
the deep-metric-learning papers (ranked list, multi-similarity, proxy-anchor, Musgrave et al.'s
reality check) and of MSML's Inception-v2 runs.

The layer names are those of the Caffe model converted to PyTorch by Remi Cadene's
``pretrainedmodels`` package (``bn_inception-52deb4733.pth``, the checkpoint the DML code bases
load): ``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``conv2_3x3_reduce``, ``inception_3a_1x1``,
``inception_3a_double_3x3_2_bn``, …, ``inception_5b_pool_proj_bn`` and the classifier
``last_linear`` (dropped here). That checkpoint expects **BGR images in 0–255 minus the mean
[104, 117, 128]** (no division by a standard deviation), not embedlab's normalised RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from embedlab.options import IMAGENET_MEAN, IMAGENET_STD

#: The mean (B, G, R order, 0–255 scale) the Caffe-converted checkpoint subtracts.
CAFFE_MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 128.0)

Pool = Literal["avg", "max"]

# (name, in, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool proj, stride)
# A stride-2 block ("3c", "4e") has no 1x1 branch and no pool projection (its max pool
# passes the input channels through).
_BLOCKS: tuple[tuple[str, int, int, int, int, int, int, Pool, int, int], ...] = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128, 1),
)


class _ConvBN(nn.Module):
    """A convolution (with bias, as in the Caffe model), batch norm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, pad: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _Inception(nn.Module):
    def __init__(
        self,
        cin: int,
        c1: int,
        r3: int,
        c3: int,
        rd: int,
        cd: int,
        pool: Pool,
        proj: int,
        stride: int,
    ) -> None:
        super().__init__()
        self.branch_1x1 = _ConvBN(cin, c1, 1) if c1 else None
        self.reduce_3x3 = _ConvBN(cin, r3, 1)
        self.conv_3x3 = _ConvBN(r3, c3, 3, stride, 1)
        self.reduce_double = _ConvBN(cin, rd, 1)
        self.double_1 = _ConvBN(rd, cd, 3, 1, 1)
        self.double_2 = _ConvBN(cd, cd, 3, stride, 1)
        if stride == 2:
            self.pool: nn.Module = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        elif pool == "max":
            self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        else:
            self.pool = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
        self.pool_proj = _ConvBN(cin, proj, 1) if proj else None
        self.out_channels = c1 + c3 + cd + (proj if proj else cin)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x)
        parts = [
            self.conv_3x3(self.reduce_3x3(x)),
            self.double_2(self.double_1(self.reduce_double(x))),
            self.pool_proj(pooled) if self.pool_proj is not None else pooled,
        ]
        if self.branch_1x1 is not None:
            parts.insert(0, self.branch_1x1(x))
        return torch.cat(parts, 1)


def _caffe_names() -> dict[str, str]:
    """embedlab's module paths → the checkpoint's layer names (without ``.weight`` etc.)."""
    names = {
        "stem.0.conv": "conv1_7x7_s2",
        "stem.0.bn": "conv1_7x7_s2_bn",
        "stem.2.conv": "conv2_3x3_reduce",
        "stem.2.bn": "conv2_3x3_reduce_bn",
        "stem.3.conv": "conv2_3x3",
        "stem.3.bn": "conv2_3x3_bn",
    }
    parts = {
        "branch_1x1": "1x1",
        "reduce_3x3": "3x3_reduce",
        "conv_3x3": "3x3",
        "reduce_double": "double_3x3_reduce",
        "double_1": "double_3x3_1",
        "double_2": "double_3x3_2",
        "pool_proj": "pool_proj",
    }
    for block, *_ in _BLOCKS:
        for ours, theirs in parts.items():
            names[f"blocks.{block}.{ours}.conv"] = f"inception_{block}_{theirs}"
            names[f"blocks.{block}.{ours}.bn"] = f"inception_{block}_{theirs}_bn"
    return names


class BNInception(nn.Module):
    """BN-Inception trunk: ``[B, 3, 224, 224] → [B, 1024, 7, 7]`` (global pooling is the
    ``EmbeddingModel``'s ``pooling``, so ``AvgPool`` gives the 1024-d pool of the DML papers).

    Args:
        pretrained: a local weights file with the key names of Cadene's ``pretrainedmodels``
            Caffe-converted checkpoint ``bn_inception-52deb4733.pth`` (``conv1_7x7_s2.weight``,
            ``conv1_7x7_s2_bn.running_mean``, ``inception_3a_1x1.weight``, …; ``last_linear.*``
            and ``num_batches_tracked`` are ignored). ``None``: random initialisation.
        frozen_bn: keep every batch norm in eval mode (running statistics not updated, even
            after ``train()``) with its affine parameters frozen, as the DML papers train
            BN-Inception with small batches.
        imagenet_input: the input is embedlab's usual RGB in [0, 1] normalised with the
            ImageNet mean and std (``ReIDTransforms`` / ``DMLTransforms`` defaults); the
            backbone converts it to what the Caffe checkpoint expects (BGR, 0–255, minus
            [104, 117, 128]) before the first convolution. ``False``: the input is already in
            the Caffe space (a transform of your own), passed through unchanged.

    Checkpoint key errors are one line naming the first missing or unexpected key.
    """

    input_scale: Tensor
    input_shift: Tensor

    def __init__(
        self,
        pretrained: str | Path | None = None,
        frozen_bn: bool = False,
        imagenet_input: bool = True,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _ConvBN(3, 64, 7, 2, 3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            _ConvBN(64, 64, 1),
            _ConvBN(64, 192, 3, 1, 1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        blocks: dict[str, nn.Module] = {}
        for name, *spec in _BLOCKS:
            blocks[name] = _Inception(*spec)  # type: ignore[arg-type]
        self.blocks = nn.Sequential()
        for name, block in blocks.items():
            self.blocks.add_module(name, block)
        self.out_channels = 1024
        self.frozen_bn = frozen_bn
        self.imagenet_input = imagenet_input
        # x_caffe = scale · x_rgb[::-1] + shift, per BGR channel
        mean = torch.tensor(IMAGENET_MEAN[::-1]).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD[::-1]).view(1, 3, 1, 1)
        caffe = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
        self.register_buffer("input_scale", 255.0 * std, persistent=False)
        self.register_buffer("input_shift", 255.0 * mean - caffe, persistent=False)
        if pretrained is not None and str(pretrained):
            self.load_caffe_weights(pretrained)
        if frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> BNInception:
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def caffe_state_dict(self) -> dict[str, Tensor]:
        """This network's weights under the checkpoint's key names (for tests and export)."""
        names = _caffe_names()
        out: dict[str, Tensor] = {}
        for key, value in self.state_dict().items():
            module, _, leaf = key.rpartition(".")
            if leaf != "num_batches_tracked":
                out[f"{names[module]}.{leaf}"] = value
        return out

    def load_caffe_weights(self, path: str | Path) -> None:
        """Load a state dict saved with the Caffe-converted checkpoint's key names."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BNInception: pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict (got {type(state).__name__})")
        by_caffe = {theirs: ours for ours, theirs in _caffe_names().items()}
        ours_state = self.state_dict()
        mapped: dict[str, Tensor] = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            layer, _, leaf = key.rpartition(".")
            if layer == "last_linear" or leaf == "num_batches_tracked":
                continue
            if layer not in by_caffe or f"{by_caffe[layer]}.{leaf}" not in ours_state:
                raise ValueError(f"{path}: unexpected key {key!r} for BNInception")
            target = f"{by_caffe[layer]}.{leaf}"
            if tuple(value.shape) != tuple(ours_state[target].shape):
                raise ValueError(
                    f"{path}: key {key!r} has shape {tuple(value.shape)}, "
                    f"BNInception expects {tuple(ours_state[target].shape)}"
                )
            mapped[target] = value
        for target in ours_state:
            if target not in mapped and not target.endswith("num_batches_tracked"):
                module, _, leaf = target.rpartition(".")
                key = f"{_caffe_names()[module]}.{leaf}"
                raise ValueError(f"{path}: missing key {key!r} for BNInception")
        self.load_state_dict(mapped, strict=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.imagenet_input:
            x = x.flip(1) * self.input_scale + self.input_shift
        out: Tensor = self.blocks(self.stem(x))
        return out
