"""Backbones, the multi-modal encoder and the decoder: shapes and the availability contract."""

import pytest
import torch

from benchmark.errors import UserError
from benchmark.models import STRIDES, AllMLPDecoder, MultiModalEncoder, create_backbone
from benchmark.models.backbones import WeightsUnavailableError

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}


def _inputs(b=3, size=64):
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def test_tiny_backbone_strides():
    net = create_backbone("tiny")
    feats = net(torch.randn(2, net.in_channels, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 96 // s) for c, s in zip(net.channels, STRIDES)]


@pytest.mark.parametrize("name", ["resnet18", "pvt_v2_b0"])
def test_timm_backbone_strides(name):
    pytest.importorskip("timm")
    net = create_backbone(name, pretrained=False)
    feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [64 // s for s in STRIDES]
    assert [f.shape[1] for f in feats] == net.channels


def test_unknown_backbone_and_pretrained_tiny_are_clear_errors():
    with pytest.raises(ValueError, match="not_a_model"):
        create_backbone("not_a_model")
    with pytest.raises(ValueError, match="pretrained"):
        create_backbone("tiny", pretrained=True)


def test_encoder_shapes_and_missing_features_are_zero():
    enc = MultiModalEncoder(CHANNELS).eval()
    available = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    feats = enc(_inputs(), available)
    assert len(feats) == 4
    for f, c, s in zip(feats, enc.channels, STRIDES):
        assert f.shape == (3, 3, c, 64 // s, 64 // s)
        assert torch.equal(f[~available], torch.zeros_like(f[~available]))
        assert bool((f[available].abs().sum(dim=(1, 2, 3)) > 0).all())


def test_encoder_per_sample_independent_of_other_modalities_and_garbage():
    enc = MultiModalEncoder(CHANNELS).eval()
    x = _inputs()
    available = torch.tensor([[1, 0, 1]] * 3, dtype=torch.bool)
    garbage = dict(x, dsm=torch.full_like(x["dsm"], float("nan")))
    a = enc(x, available)
    b = enc(garbage, available)
    for fa, fb in zip(a, b):
        assert torch.equal(fa, fb)
    # a modality's features equal those of encoding it alone (weight-tied, no cross-talk)
    alone = enc(x, torch.tensor([[1, 0, 0]] * 3, dtype=torch.bool))
    for fa, fo in zip(a, alone):
        torch.testing.assert_close(fa[:, 0], fo[:, 0])


def test_decoder_upsamples_to_input():
    dec = AllMLPDecoder([16, 32, 64, 128], num_classes=6, embed_dim=32)
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip([16, 32, 64, 128], STRIDES)]
    assert dec(feats, (64, 64)).shape == (2, 6, 64, 64)


def test_pretrained_weights_out_of_reach_are_one_line_naming_the_backbone_and_the_fix(tmp_path, monkeypatch):
    """Offline (huggingface_hub's offline mode: no request) with an empty cache, as a GPU node without network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, UserError)
    assert "backbone 'resnet18'" in message and "train.pretrained: false" in message
    assert "timm.create_model('resnet18', pretrained=True)" in message
