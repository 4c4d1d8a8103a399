"""MuSS: masked-mean fusion honours the availability mask."""

import torch
from method_checks import parameters_without_gradient

from benchmark.methods.catalog import create_method
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}


def _batch(b=4, size=32):
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(b, c, size, size, generator=g) for m, c in CHANNELS.items()}


def test_forward_and_loss_on_every_subset():
    method = create_method("muss", modalities=CHANNELS, num_classes=6, decoder_dim=32)
    x = _batch()
    target = torch.randint(0, 6, (4, 32, 32))
    target[0, :4] = 255
    for subset in enumerate_subsets(list(CHANNELS)):
        available = subset_mask(subset, list(CHANNELS), 4)
        out = method(apply_availability(x, available, list(CHANNELS)), available)
        assert out["logits"].shape == (4, 6, 32, 32)
        total, parts = method.loss(out, target, available)
        assert total.dim() == 0 and torch.isfinite(total) and "ce" in parts


def test_missing_modality_garbage_does_not_change_output():
    method = create_method("muss", modalities=CHANNELS, num_classes=6).eval()
    x = _batch()
    available = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    garbage = {
        m: torch.where(available[:, i].view(-1, 1, 1, 1), v, torch.randn_like(v) * 1e3)
        for i, (m, v) in enumerate(x.items())
    }
    a = method.predict(x, available)["logits"]
    b = method.predict(garbage, available)["logits"]
    torch.testing.assert_close(a, b)


def test_mean_fusion_of_identical_modalities_equals_single():
    # two copies of one modality with tied stems: mean of equal features = the feature itself
    method = create_method("muss", modalities={"a": 2, "b": 2}, num_classes=3).eval()
    method.encoder.stems["b"].load_state_dict(method.encoder.stems["a"].state_dict())
    x = torch.randn(2, 2, 32, 32)
    both = method.predict({"a": x, "b": x}, torch.ones(2, 2, dtype=torch.bool))["logits"]
    one = method.predict({"a": x, "b": torch.zeros_like(x)}, torch.tensor([[1, 0], [1, 0]], dtype=torch.bool))["logits"]
    torch.testing.assert_close(both, one)


def test_gradients_reach_every_parameter():
    method = create_method("muss", modalities=CHANNELS, num_classes=6)
    assert parameters_without_gradient(method, _batch(), num_classes=6) == []
