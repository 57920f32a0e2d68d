"""BN-Inception: shapes, the Caffe-named checkpoint round trip, frozen BN; Xception via timm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from embedlab.cli import main
from embedlab.models import BNInception, EmbeddingModel, TimmBackbone


@pytest.fixture(scope="module")
def net() -> BNInception:
    torch.manual_seed(0)
    return BNInception().eval()


def test_output_shapes(net: BNInception) -> None:
    assert net.out_channels == 1024
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1024, 2, 2)
    model = EmbeddingModel(backbone=net, embedding_dim=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 16)


def _caffe_checkpoint(tmp_path: Path, net: BNInception) -> tuple[Path, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    state = {
        key: torch.rand(value.shape, generator=generator) + 0.5
        for key, value in net.caffe_state_dict().items()
    }
    state["last_linear.weight"] = torch.randn(1000, 1024)
    state["last_linear.bias"] = torch.randn(1000)
    path = tmp_path / "bn_inception.pth"
    torch.save(state, path)
    return path, state


def test_caffe_key_names(net: BNInception) -> None:
    keys = set(net.caffe_state_dict())
    for key in (
        "conv1_7x7_s2.weight",
        "conv1_7x7_s2_bn.running_var",
        "conv2_3x3_reduce.bias",
        "conv2_3x3_bn.weight",
        "inception_3a_1x1.weight",
        "inception_3a_double_3x3_2_bn.running_mean",
        "inception_3c_3x3.weight",
        "inception_4e_double_3x3_reduce_bn.bias",
        "inception_5b_pool_proj.weight",
    ):
        assert key in keys
    assert not any(k.startswith(("inception_3c_1x1", "inception_3c_pool_proj")) for k in keys)
    assert net.caffe_state_dict()["inception_3a_3x3.weight"].shape == (64, 64, 3, 3)
    assert net.caffe_state_dict()["inception_5a_1x1.weight"].shape == (352, 1056, 1, 1)


def test_round_trip_through_caffe_names(tmp_path: Path, net: BNInception) -> None:
    path, state = _caffe_checkpoint(tmp_path, net)
    loaded = BNInception(pretrained=path)
    for key, value in loaded.caffe_state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert not torch.equal(
        loaded.caffe_state_dict()["conv1_7x7_s2.weight"],
        net.caffe_state_dict()["conv1_7x7_s2.weight"],
    )


def test_bad_checkpoint_names_the_key(tmp_path: Path, net: BNInception) -> None:
    path, state = _caffe_checkpoint(tmp_path, net)
    del state["inception_4b_3x3_bn.running_mean"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing key 'inception_4b_3x3_bn.running_mean'"):
        BNInception(pretrained=path)
    state["inception_4b_3x3_bn.running_mean"] = torch.zeros(128)
    state["inception_9z_1x1.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"unexpected key 'inception_9z_1x1.weight'"):
        BNInception(pretrained=path)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        BNInception(pretrained=tmp_path / "nowhere.pth")


def test_frozen_bn_stays_frozen() -> None:
    torch.manual_seed(0)
    net = BNInception(frozen_bn=True)
    net.train()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    assert all(p.requires_grad for n, p in net.named_parameters() if n.endswith("conv.weight"))
    assert norms[0].running_mean is not None
    before = norms[0].running_mean.clone()
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    torch.testing.assert_close(norms[0].running_mean, before)
    trained = BNInception(frozen_bn=False).train()
    assert all(m.training for m in trained.modules() if isinstance(m, nn.BatchNorm2d))


def test_imagenet_input_is_converted_to_caffe_space(net: BNInception) -> None:
    raw = BNInception(imagenet_input=False).eval()
    raw.load_state_dict(net.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = torch.rand(1, 3, 32, 32)
    caffe = rgb.flip(1) * 255 - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net((rgb - mean) / std), raw(caffe), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(net(caffe), raw(caffe))


def test_xception_through_timm() -> None:
    backbone = TimmBackbone(name="legacy_xception", pretrained=False)
    assert backbone.out_channels == 2048
    with torch.no_grad():
        assert backbone.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 2, 2)


def test_selectable_by_class_path(capsys: pytest.CaptureFixture[str]) -> None:
    digits = str(Path(__file__).resolve().parents[1] / "experiments" / "digits.yaml")
    backbone = "--model.model.init_args.backbone=embedlab.models.BNInception"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", digits, backbone, "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    chosen = printed["model"]["model"]["init_args"]["backbone"]
    assert chosen["class_path"] == "embedlab.models.BNInception"
    assert chosen["init_args"]["frozen_bn"] is False


def test_frozen_bn_survives_sync_batchnorm() -> None:
    net = nn.SyncBatchNorm.convert_sync_batchnorm(BNInception(frozen_bn=True))
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, nn.SyncBatchNorm))
