from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from embedlab.models import EmbeddingModel, GeM, ResNet, SmallCNN, TorchvisionBackbone


@pytest.mark.parametrize("depth,channels", [(18, 512), (50, 2048)])
@pytest.mark.parametrize("last_stride,grid", [(1, (8, 4)), (2, (4, 2))])
def test_resnet_feature_map(
    depth: int, channels: int, last_stride: int, grid: tuple[int, int]
) -> None:
    net = ResNet(depth, last_stride=last_stride).eval()
    out = net(torch.randn(1, 3, 128, 64))
    assert out.shape == (1, channels, *grid)
    assert net.out_channels == channels


def test_embedding_model_shapes_bnneck_and_normalisation() -> None:
    model = EmbeddingModel(ResNet(18), pooling=GeM(), embedding_dim=32, bnneck=True, normalize=True)
    out = model.forward_train(torch.randn(4, 3, 64, 32))
    assert out.features.shape == out.embedding.shape == (4, 32)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(out.features.norm(dim=1), torch.ones(4), atol=1e-3)
    assert model.embedding_dim == 32


@pytest.mark.parametrize("normalize", [False, True])
def test_flip_test_averages_image_and_mirror_in_eval_only(normalize: bool) -> None:
    torch.manual_seed(0)
    model = EmbeddingModel(SmallCNN(in_channels=1), embedding_dim=6, normalize=normalize)
    flipped = EmbeddingModel(SmallCNN(in_channels=1), embedding_dim=6, normalize=normalize)
    flipped.load_state_dict(model.state_dict())
    flipped.flip_test = True
    x = torch.randn(3, 1, 8, 8)
    model.eval(), flipped.eval()
    want = 0.5 * (model(x) + model(x.flip(-1)))
    if normalize:
        want = torch.nn.functional.normalize(want, dim=-1)
    torch.testing.assert_close(flipped(x), want)
    assert not torch.allclose(flipped(x), model(x))
    # a mirrored image gets the same embedding
    torch.testing.assert_close(flipped(x.flip(-1)), flipped(x))
    model.train(), flipped.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(flipped(x), a)


def test_small_cnn_on_digits_sized_input() -> None:
    model = EmbeddingModel(SmallCNN(in_channels=1), normalize=False)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 128)
    assert model.embedding_dim == 128


def test_gem_with_p_one_is_average_pooling() -> None:
    x = torch.rand(2, 3, 4, 4) + 0.1
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(-2, -1)), atol=1e-6)


def test_missing_pretrained_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ResNet(18, pretrained=str(missing))


def test_local_pretrained_weights_are_loaded(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    loaded = ResNet(18, pretrained=str(path))
    assert torch.equal(loaded.trunk[0].weight, reference.conv1.weight)
    assert torch.equal(loaded.trunk[-1][-1].bn2.running_var, reference.layer4[-1].bn2.running_var)


@pytest.mark.parametrize("name", ["googlenet", "mobilenet_v3_small", "densenet121"])
def test_torchvision_backbone_feature_map_in_train_and_eval(name: str) -> None:
    backbone = TorchvisionBackbone(name)
    model = EmbeddingModel(backbone, pooling=GeM(), embedding_dim=8)
    x = torch.randn(2, 3, 80, 80)
    out = model.forward_train(x)  # train mode: googlenet's auxiliary heads stay out
    assert out.features.shape == (2, 8)
    out.features.sum().backward()
    assert all(p.grad is not None for p in model.projection.parameters())
    fmap = backbone(x)
    assert fmap.dim() == 4 and fmap.shape[1] == backbone.out_channels
    model.eval()
    assert model(x).shape == (2, 8)


def test_torchvision_backbone_local_weights_match_resnet(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    ours, reference = TorchvisionBackbone("resnet18", str(path)), ResNet(18, pretrained=str(path))
    assert ours.node == "layer4.1.relu_1" and ours.out_channels == reference.out_channels == 512
    x = torch.randn(2, 3, 64, 64)
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x), reference(x))


def test_torchvision_backbone_errors() -> None:
    with pytest.raises(ValueError, match="unknown torchvision classification model 'resnet7'"):
        TorchvisionBackbone("resnet7")
    with pytest.raises(ValueError, match="vit_b_16: no global pooling"):
        TorchvisionBackbone("vit_b_16")
