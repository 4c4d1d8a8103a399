"""The fusion diagnostic: gradient norms per component, robustness entropy and MAS distribution
against direct computations on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS, write_params

from benchmark import diagnose
from benchmark.config import TrainConfig
from benchmark.data.prepared import PreparedDataset
from benchmark.methods.catalog import create_method
from benchmark.protocol import apply_availability, builtin_protocol, subset_mask

CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}


def _method(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(name, modalities=CHANNELS, num_classes=6, decoder_dim=16, **kwargs)


def _backward(method: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(4, c, 32, 32, generator=g) for m, c in CHANNELS.items()}
    target = torch.randint(0, 6, (4, 32, 32), generator=g)
    method.training_step(inputs, target, torch.ones(4, 3, dtype=torch.bool))[0].backward()


def test_component_of_takes_the_first_matching_group_else_the_top_module():
    groups = {"a": ("x.*.w",), "b": ("x.*",)}
    assert diagnose.component_of("x.0.w", groups) == "a"
    assert diagnose.component_of("x.0.v", groups) == "b"
    assert diagnose.component_of("decoder.fuse.0.weight", groups) == "decoder"


def test_gradient_norms_equal_the_norm_of_each_components_own_gradients():
    method = _method("sgma", zero_init=False)
    _backward(method)
    norms = diagnose.gradient_norms(method)

    def direct(modules) -> tuple[float, int]:
        params = [p for m in modules for p in m.parameters()]
        return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)), sum(p.numel() for p in params)

    for label, modules in {
        "CSF": [s.semantic_filter for s in method.sgf],
        "SP query": [m for s in method.sgf for m in (s.sp_query, s.sp_norm)],
        "RP out": [s.rp_out for s in method.sgf],
        "MP": [s.projectors for s in method.sgf],
        "decoder": [method.decoder],
        "encoder": [method.encoder],
    }.items():
        norm, count = direct(modules)
        assert norms[label]["norm"] == pytest.approx(norm, rel=1e-9) and norms[label]["params"] == count
        assert norms[label]["rms"] == pytest.approx(norm / math.sqrt(count), rel=1e-9)
    assert sum(v["params"] for v in norms.values()) == sum(p.numel() for p in method.parameters())
    plain = _method("muss")  # no parameter_groups: one component per top-level module
    _backward(plain)
    assert set(diagnose.gradient_norms(plain)) == {name for name, _ in plain.named_children()}


def test_zero_init_leaves_the_attention_without_gradient_at_step_zero_only(tiny_prepared):
    data = PreparedDataset(tiny_prepared, "train")
    torch.manual_seed(0)
    method = create_method("sgma-sgf", modalities=data.modalities, num_classes=len(data.classes), decoder_dim=16)
    config = TrainConfig(**{**TINY_PARAMS["train"], "warmup_steps": 0})
    steps = diagnose.gradient_steps(method, data, config, builtin_protocol("complete"), seed=0, steps=2)
    assert steps[0]["CSF"]["norm"] == 0.0 and steps[0]["SP query"]["norm"] == 0.0
    assert steps[0]["RP out"]["norm"] > 0 and steps[1]["CSF"]["norm"] > 0 and steps[1]["SP query"]["norm"] > 0


def test_robustness_entropy_is_a_normalised_shannon_entropy():
    g = torch.Generator().manual_seed(0)
    available = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    maps = []
    for size in (4, 2):
        r = torch.rand(3, 3, size, size, generator=g) * available.view(3, 3, 1, 1)
        maps.append(r / r.sum(dim=1, keepdim=True))
    got = diagnose.robustness_entropy(maps, available).numpy()
    for b in range(3):
        kept = np.flatnonzero(available[b].numpy())
        for level, r in enumerate(maps):
            p = r[b, kept].double().numpy()  # [k, h, w]
            expected = (-(p * np.log(p)).sum(0) / np.log(len(kept))).mean()
            assert got[b, level] == pytest.approx(expected, rel=1e-9)
    uniform = [torch.where(available.view(3, 3, 1, 1), 1.0, 0.0) / available.sum(1).view(3, 1, 1, 1).float()]
    np.testing.assert_allclose(diagnose.robustness_entropy(uniform, available).numpy(), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="2\\+"):
        diagnose.robustness_entropy(maps, torch.eye(3, dtype=torch.bool))


def test_fusion_statistics_match_the_methods_own_maps(tiny_prepared):
    data = PreparedDataset(tiny_prepared, "test")
    torch.manual_seed(0)
    method = create_method("sgma", modalities=data.modalities, num_classes=len(data.classes), decoder_dim=16).eval()
    stats = diagnose.fusion_statistics(method, data, batch_size=4)
    names = list(data.modalities)
    assert set(stats["robustness_entropy"]) == {"rgb+dsm", "rgb+nir", "dsm+nir", "rgb+dsm+nir"}
    inputs = {m: torch.stack([data[i][0][m] for i in range(len(data))]) for m in names}
    available = subset_mask(["rgb", "nir"], names, len(data))
    with torch.no_grad():
        maps = method(apply_availability(inputs, available, names), available)["robustness"]
    inverse = []  # MAS by its description: normalised inverse robustness, pixel mean, scale mean
    for r in maps:
        r = r.double().numpy()[:, [0, 2]]
        inv = 1 / np.clip(r, 1e-6, None)
        inverse.append((inv / inv.sum(1, keepdims=True)).mean(axis=(2, 3)))
    expected = np.mean(inverse, axis=0).mean(axis=0)
    got = stats["mas_probabilities"]["rgb+nir"]
    assert got["dsm"] == 0.0
    np.testing.assert_allclose([got["rgb"], got["nir"]], expected, rtol=1e-6)
    entropy = np.mean(
        [[(-(p * np.log(p)).sum(0) / np.log(2)).mean() for p in r.double().numpy()[:, [0, 2]]] for r in maps], axis=1
    )
    np.testing.assert_allclose(stats["robustness_entropy"]["rgb+nir"], entropy, rtol=1e-6)
    plain = create_method("muss", modalities=data.modalities, num_classes=len(data.classes), decoder_dim=16)
    assert diagnose.fusion_statistics(plain, data, batch_size=4) == {}


def test_command_prints_and_writes_every_figure(tmp_path, tiny_prepared, capsys):
    params = {
        **TINY_PARAMS,
        "runs": ["sgma-complete"],
        "method_params": {"sgma": {"head_dim": 8}},
        "report": {**TINY_PARAMS["report"], "reference": "sgma-complete"},
    }
    path = write_params(tmp_path / "params.yaml", params)
    out = tmp_path / "diagnose.json"
    argv = ["--dataset", "synthetic", "--run-name", "sgma-complete", "--params", str(path)]
    assert diagnose.main([*argv, "--data-dir", str(tiny_prepared), "--steps", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == "fresh" and record["protocol"]["name"] == "complete"
    assert {"CSF", "SP query", "RP out", "decoder"} <= set(record["gradients"])
    assert all(len(v["norm"]) == 2 for v in record["gradients"].values())
    assert set(record["mas_probabilities"]["rgb+dsm+nir"]) == {"rgb", "dsm", "nir"}
    printed = capsys.readouterr().out
    assert "gradient L2 norm" in printed and "robustness entropy" in printed and "MAS sampling" in printed
