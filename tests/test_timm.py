"""timm backbones: CNN feature maps and ViT tokens, token pooling, local weights, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from embedlab import losses as L
from embedlab.errors import ConfigError
from embedlab.models import (
    AvgPool,
    ClsToken,
    EmbeddingModel,
    GeM,
    GeMTokens,
    MeanTokens,
    TimmBackbone,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = {
    "img_size": 8,
    "patch_size": 2,
    "in_chans": 1,
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
}


def tiny_vit() -> TimmBackbone:
    return TimmBackbone("vit_tiny_patch16_224", model_kwargs=TINY_VIT)


def test_vit_gives_tokens_and_a_cnn_a_feature_map() -> None:
    vit = tiny_vit()
    assert vit.out_channels == 32 and vit.num_prefix_tokens == 1
    assert vit(torch.randn(2, 1, 8, 8)).shape == (2, 1 + 16, 32)  # cls + 4×4 patches
    cnn = TimmBackbone("resnet18")
    assert cnn.num_prefix_tokens == 0
    assert cnn(torch.randn(2, 3, 64, 64)).shape == (2, 512, 2, 2)


def test_token_pooling() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 5, 4, generator=g)
    assert torch.equal(ClsToken()(tokens), tokens[:, 0])
    torch.testing.assert_close(MeanTokens()(tokens), tokens[:, 1:].mean(1))
    torch.testing.assert_close(MeanTokens(prefix_tokens=2)(tokens), tokens[:, 2:].mean(1))
    gem = GeMTokens(p=3.0, learnable=False)(tokens)
    want = tokens[:, 1:].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
    torch.testing.assert_close(gem, want)
    with pytest.raises(ValueError, match="ClsToken, MeanTokens or GeMTokens"):
        AvgPool()(tokens)
    with pytest.raises(ValueError, match="AvgPool or GeM"):
        ClsToken()(torch.randn(2, 3, 4, 4))
    assert GeM()(torch.rand(2, 3, 4, 4)).shape == (2, 3)


@pytest.mark.parametrize("pooling", [ClsToken(), MeanTokens(), GeMTokens()], ids=repr)
def test_one_vit_training_step_has_finite_gradients(pooling: torch.nn.Module) -> None:
    model = EmbeddingModel(tiny_vit(), pooling=pooling, embedding_dim=16, bnneck=True)
    images = torch.randn(12, 1, 8, 8)
    labels = torch.arange(3).repeat_interleave(4)
    out = model.forward_train(images)
    assert out.features.shape == (12, 16)
    L.TripletLoss()(out.features, labels).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_pretrained_may_be_a_local_file(tmp_path: Path) -> None:
    source = tiny_vit()
    path = tmp_path / "vit.pth"
    torch.save(source.net.state_dict(), path)
    loaded = TimmBackbone("vit_tiny_patch16_224", pretrained=str(path), model_kwargs=TINY_VIT)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))


def test_unknown_model_and_unreachable_hub_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone("no_such_net")

    def offline(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="local weights file"):
        TimmBackbone("resnet18", pretrained=True)


@pytest.mark.slow
def test_embedlab_fit_trains_a_vit_on_digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedlab.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("EMBEDLAB_OUTPUT_ROOT", str(tmp_path))
    backbone = (
        '{"class_path": "embedlab.models.TimmBackbone", "init_args": {"name": '
        '"vit_tiny_patch16_224", "model_kwargs": {"img_size": 8, "patch_size": 2, '
        '"in_chans": 1, "depth": 2, "embed_dim": 32, "num_heads": 2}}}'
    )
    code = main(
        [
            "fit",
            "--config=experiments/digits.yaml",
            f"--model.model.init_args.backbone={backbone}",
            "--model.model.init_args.pooling=embedlab.models.ClsToken",
            "--trainer.max_epochs=1",
            "--data.batches_per_epoch=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
        ]
    )
    assert code in (0, None)
    (csv,) = tmp_path.rglob("metrics.csv")
    import pandas as pd

    frame = pd.read_csv(csv)
    losses = frame["train/loss"].dropna()
    assert len(losses) == 2 and losses.map(math.isfinite).all()
    assert "test/map@r" in frame and frame["test/map@r"].notna().sum() == 1
