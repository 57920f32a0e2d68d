"""Backbones: torchvision models (ResNets with last stride, or any CNN), timm models when
installed, and a small CNN for tiny inputs.

Every backbone is an ``nn.Module`` returning a feature map ``[B, C, H, W]`` and exposing
``out_channels``. Pretrained weights are opt-in: ``pretrained=True`` asks torchvision's hub,
``pretrained="/path/to/weights.pth"`` loads a local state dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.error import URLError

import torch
import torchvision
from torch import Tensor, nn

from embedlab.errors import ConfigError

#: Classifier heads of torchvision models, dropped by the backbones (their weights may be absent).
HEAD_PREFIXES = ("fc.", "classifier.", "heads.", "head.", "aux1.", "aux2.", "AuxLogits.")


def _offline_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (URLError, ConnectionError, TimeoutError)
    try:  # timm downloads through the Hugging Face hub
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return errors
    return (*errors, LocalEntryNotFoundError)


def _from_hub(build: Callable[..., Any], model: str, **kwargs: Any) -> Any:
    """Build a model with its hub weights; an unreachable hub is a ``ConfigError``."""
    try:
        return build(**kwargs)
    except _offline_errors() as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            f"pretrained: true: cannot download the ImageNet weights of {model} ({reason}); "
            f"give a local weights file instead, e.g. pretrained: /path/to/{model}.pth"
        ) from err


def _load_local_weights(module: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    ignored = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if ignored:
        raise ValueError(f"{path}: weights lack {len(ignored)} backbone keys, e.g. {ignored[:3]}")


class ResNet(nn.Module):
    """torchvision ResNet-18/34/50/101 trunk without its classifier.

    ``last_stride=1`` removes the down-sampling of the last stage (the ReID
    "last stride" trick, doubling the final feature map resolution).
    """

    def __init__(
        self,
        depth: Literal[18, 34, 50, 101] = 50,
        last_stride: Literal[1, 2] = 2,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        builders = {
            18: (torchvision.models.resnet18, "IMAGENET1K_V1"),
            34: (torchvision.models.resnet34, "IMAGENET1K_V1"),
            50: (torchvision.models.resnet50, "IMAGENET1K_V2"),
            101: (torchvision.models.resnet101, "IMAGENET1K_V2"),
        }
        if depth not in builders:
            raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
        build, hub_weights = builders[depth]
        net = _from_hub(
            build, f"resnet{depth}", weights=hub_weights if pretrained is True else None
        )
        if isinstance(pretrained, str) and pretrained:
            _load_local_weights(net, pretrained)
        if last_stride == 1:
            block = net.layer4[0]
            conv = block.conv2 if depth >= 50 else block.conv1
            conv.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        self.out_channels = net.fc.in_features
        self.trunk = nn.Sequential(*list(net.children())[:-2])

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x)


class TorchvisionBackbone(nn.Module):
    """Any torchvision CNN classifier cut before its global pooling (``get_model(name)``).

    The feature map is taken with torchvision's feature extraction at the node that feeds
    the model's global average pooling (e.g. ``inception5b`` of ``googlenet``, the last
    ``features`` block of ``efficientnet_b0`` or ``convnext_tiny``).

    Args:
        name: a torchvision model name (``torchvision.models.list_models()``), e.g.
            ``googlenet``, ``inception_v3``, ``densenet121``, ``efficientnet_b0``.
        pretrained: ``True`` for torchvision's default ImageNet weights (downloaded),
            or the path of a local state dict of the full classifier.
    """

    def __init__(self, name: str, pretrained: bool | str = False) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )

        if name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"unknown torchvision classification model {name!r}")
        extra = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
        net = _from_hub(
            torchvision.models.get_model,
            name,
            name=name,
            weights="DEFAULT" if pretrained is True else None,
            **extra,
        )
        if isinstance(pretrained, str) and pretrained:
            _load_local_weights(net, pretrained)
        with warnings.catch_warnings():  # models with auxiliary heads trace two graphs
            warnings.simplefilter("ignore", UserWarning)
            nodes = get_graph_node_names(net)[1]
        pools = [i for i, n in enumerate(nodes) if "avgpool" in n or "adaptive_avg_pool" in n]
        if not pools or pools[0] == 0:
            raise ValueError(f"{name}: no global pooling found; use TimmBackbone for this model")
        self.node = nodes[pools[0] - 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.trunk = create_feature_extractor(net.eval(), return_nodes={self.node: "map"})
        with torch.no_grad():
            self.out_channels = int(self.trunk(torch.zeros(1, 3, 96, 96))["map"].shape[1])

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.trunk(x)["map"]
        return out


class TimmBackbone(nn.Module):
    """Any ``timm`` model without its classifier: a CNN's feature map ``[B, C, H, W]``, or a
    vision transformer's tokens ``[B, N, C]`` (pool them with ``ClsToken``, ``MeanTokens`` or
    ``GeMTokens``).

    Args:
        name: a ``timm.list_models()`` name, e.g. ``vit_base_patch16_224``, ``resnet50``.
        pretrained: ``True`` for timm's pretrained weights (downloaded from the hub), or the
            path of a local state dict (e.g. a ``.pth`` / ``.safetensors`` file saved by timm).
        model_kwargs: passed to ``timm.create_model``, e.g. ``{"img_size": [256, 128]}`` for
            a ViT at ReID resolution (position embeddings are resized when loading weights).

    ``out_channels`` is the feature size; ``num_prefix_tokens`` the transformer's class /
    register tokens (0 for a CNN).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool | str = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        if not timm.list_models(name):
            raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
        kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "", **(model_kwargs or {})}
        if isinstance(pretrained, str) and pretrained:
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained)}
        self.net = _from_hub(
            timm.create_model, name, model_name=name, pretrained=bool(pretrained), **kwargs
        )
        self.out_channels = int(self.net.num_features)
        self.num_prefix_tokens = int(getattr(self.net, "num_prefix_tokens", 0))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net.forward_features(x)
        return out


class SmallCNN(nn.Module):
    """A small convolutional network for tiny images (8×8 digits up to 64×64).

    ``batch_norm=False`` gives a network whose output for a sample does not depend on the
    rest of the batch (used to check that DDP training equals one process exactly).
    """

    def __init__(
        self, in_channels: int = 1, width: int = 32, depth: int = 3, batch_norm: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm),
                nn.BatchNorm2d(out) if batch_norm else nn.Identity(),
                nn.ReLU(inplace=True),
            ]
            if i < depth - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out
        self.out_channels = channels
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
