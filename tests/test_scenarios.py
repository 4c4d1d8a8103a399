"""Corrupted-input scenarios: each kind against an independent numpy computation, seeding, nesting, cases."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from benchmark.config import ScenarioConfig
from benchmark.scenarios import Corruption, corrupt, scenario_cases

KIND_ID = {"block_missing": 0, "pixel_missing": 1, "gaussian": 2, "salt_pepper": 3, "speckle": 4}  # spec, by hand


def _tiles(batch: int, channels: int, size: int, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    """Standardised-looking tiles without exact zeros (so zeroed pixels are recognisable)."""
    x = np.random.default_rng(seed).normal(size=(batch, channels, size, size)) + offset
    x[x == 0] = 0.5
    return torch.from_numpy(x.astype(np.float32))


def _rng(kind: str, modality_index: int, tile: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, KIND_ID[kind], modality_index, tile])


def _corrupt(x, kind, level, *, index=0, tiles=None, seed=0, block_size=8, norm=None, units=None, modality="m"):
    case = Corruption(kind, level, modality, index)
    tiles = list(range(x.shape[0])) if tiles is None else tiles
    return corrupt(x, case, tiles, seed=seed, block_size=block_size, norm=norm, sar_units=units)


def test_name():
    assert Corruption("gaussian", 0.5, "rgb", 0).name == "gaussian:rgb@0.5"
    assert Corruption("speckle", 1.0, "s1", 0).name == "speckle:s1@1.0"
    with pytest.raises(ValueError, match="blur"):
        Corruption("blur", 0.5, "rgb", 0)


def test_block_missing_zeroes_whole_blocks_nested_across_levels():
    x = _tiles(1, 3, 20)  # 8-px blocks: a 3 x 3 grid, the last row / column 4 px wide
    edges = [0, 8, 16, 20]
    masks = []
    for level in (0.25, 0.5, 0.75, 1.0):
        out = _corrupt(x, "block_missing", level, index=2, tiles=[5]).numpy()[0]
        zero = out == 0
        assert (zero == zero[0]).all()  # all channels of a pixel together
        np.testing.assert_array_equal(out[:, ~zero[0]], x.numpy()[0][:, ~zero[0]])
        blocks = np.array([[zero[0, edges[r] : edges[r + 1], edges[c] : edges[c + 1]].all() for c in range(3)]
                           for r in range(3)])  # fmt: skip
        partial = [zero[0, edges[r] : edges[r + 1], edges[c] : edges[c + 1]].any() for r in range(3) for c in range(3)]
        assert blocks.sum() == sum(partial) == math.floor(level * 9 + 0.5)  # 2, 5 (4.5 rounded up), 7, 9
        perm = _rng("block_missing", 2, 5).permutation(9)  # the spec's draw: the first n of a permutation
        expected = np.zeros(9, bool)
        expected[perm[: blocks.sum()]] = True
        np.testing.assert_array_equal(blocks.ravel(), expected)
        masks.append(zero[0])
    for smaller, larger in zip(masks, masks[1:]):
        assert (larger | smaller == larger).all() and larger.sum() > smaller.sum()


def test_block_missing_fraction_on_whole_blocks():
    x = _tiles(2, 2, 64)
    out = _corrupt(x, "block_missing", 0.25, block_size=8).numpy()
    np.testing.assert_array_equal((out == 0).mean(axis=(1, 2, 3)), [0.25, 0.25])  # 16 of 64 blocks


def test_pixel_missing_exact_count_nested_and_the_specified_permutation():
    x = _tiles(1, 4, 16)
    previous = np.zeros((16, 16), bool)
    for level in (0.1, 0.3, 0.5, 1.0):
        out = _corrupt(x, "pixel_missing", level, index=1, tiles=[9]).numpy()[0]
        zero = (out == 0).all(axis=0)
        assert ((out == 0) == zero).all()
        assert zero.sum() == math.floor(level * 256 + 0.5)  # 26 (25.6), 77 (76.8), 128, 256
        expected = np.zeros(256, bool)
        expected[_rng("pixel_missing", 1, 9).permutation(256)[: zero.sum()]] = True
        np.testing.assert_array_equal(zero.ravel(), expected)
        np.testing.assert_array_equal(out[:, ~zero], x.numpy()[0][:, ~zero])
        assert (zero | previous == zero).all()
        previous = zero


def test_gaussian_is_one_standard_normal_field_scaled_by_the_level():
    x = _tiles(1, 3, 128)
    fields = [(_corrupt(x, "gaussian", s).numpy()[0] - x.numpy()[0]) / s for s in (0.25, 0.5, 1.0)]
    for field in fields[1:]:
        np.testing.assert_allclose(field, fields[0], atol=2e-5 / 0.25)
    z = fields[-1]
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02  # 49152 draws: std error ~0.003
    assert abs(np.corrcoef(z[0].ravel(), z[1].ravel())[0, 1]) < 0.03  # independent per channel
    expected = x.numpy()[0] + 0.5 * _rng("gaussian", 0, 0).standard_normal((3, 128, 128))
    np.testing.assert_allclose(_corrupt(x, "gaussian", 0.5).numpy()[0], expected, rtol=0, atol=1e-6)


def test_salt_pepper_sets_pixels_to_the_tiles_channel_extremes():
    x = _tiles(1, 3, 128)
    tile = x.numpy()[0]
    high, low = tile.max(axis=(1, 2)), tile.min(axis=(1, 2))
    previous, previous_out = None, tile
    for level in (0.05, 0.2):
        out = _corrupt(x, "salt_pepper", level).numpy()[0]
        changed = (out != tile).any(axis=0)
        salt = (out == high[:, None, None]).all(axis=0)
        pepper = (out == low[:, None, None]).all(axis=0)
        assert (changed <= (salt | pepper)).all()
        np.testing.assert_array_equal(out[:, ~changed], tile[:, ~changed])
        hit = salt | pepper  # the clean tile's own extremes are 3 pixels at most
        assert abs(hit.mean() - level) < 0.01  # 16384 pixels: std error <= 0.003
        assert abs(salt.sum() / hit.sum() - 0.5) < 0.05
        u = _rng("salt_pepper", 0, 0).random((128, 128))
        np.testing.assert_array_equal(changed, (u < level) & changed)  # only where u < r
        assert changed.sum() >= (u < level).sum() - 6
        if previous is not None:  # nested, and a pixel hit at both levels gets the same value
            assert (previous <= hit).all()
            np.testing.assert_array_equal(out[:, previous], previous_out[:, previous])
        previous, previous_out = hit, out


def _linear_gain(level: float, units: str, size: int = 256) -> np.ndarray:
    """Recover the speckle gain G per pixel from a tile whose raw value is 1 (linear) or 0 dB."""
    norm = {"mean": [0.5, -3.0], "std": [2.0, 4.0]}
    raw = 1.0 if units == "linear" else 0.0
    mean, std = np.array(norm["mean"])[:, None, None], np.array(norm["std"])[:, None, None]
    x = torch.from_numpy(np.broadcast_to((raw - mean) / std, (1, 2, size, size)).astype(np.float32).copy())
    out = _corrupt(x, "speckle", level, norm=norm, units=units).numpy()[0].astype(np.float64)
    value = out * std + mean
    gain = value if units == "linear" else 10 ** (value / 10)
    np.testing.assert_allclose(gain[0], gain[1], rtol=2e-5, atol=2e-6)  # one G per pixel, every channel
    return gain[0]


@pytest.mark.parametrize("units", ["linear", "db"])
@pytest.mark.parametrize("level", [0.25, 1.0])
def test_speckle_gain_has_mean_one_and_variance_v(level, units):
    gain = _linear_gain(level, units)
    assert (gain > 0).all()
    assert abs(gain.mean() - 1) < 0.02  # 65536 draws: std error <= 0.004
    assert abs(gain.var() / level - 1) < 0.05
    skew = ((gain - gain.mean()) ** 3).mean() / gain.std() ** 3
    assert abs(skew - 2 * math.sqrt(level)) < 0.2  # Gamma skewness 2 / sqrt(shape): not another law


def test_speckle_in_db_is_additive_and_draws_the_same_gain_as_in_linear_units():
    norm = {"mean": [-12.0], "std": [3.0]}
    a, b = _tiles(1, 1, 32, seed=1), _tiles(1, 1, 32, seed=2)
    shift_a = _corrupt(a, "speckle", 0.5, norm=norm, units="db") - a
    shift_b = _corrupt(b, "speckle", 0.5, norm=norm, units="db") - b
    torch.testing.assert_close(shift_a, shift_b, rtol=0, atol=1e-5)  # independent of the value
    np.testing.assert_allclose(10 ** (shift_a.numpy()[0, 0] * 3.0 / 10), _linear_gain(0.5, "linear", 32), rtol=1e-4)
    gain = _rng("speckle", 0, 0).gamma(2.0, 0.5, (32, 32))  # shape 1/v, scale v
    np.testing.assert_allclose(shift_a.numpy()[0, 0], 10 * np.log10(gain) / 3.0, atol=1e-5)
    with pytest.raises(ValueError, match="normalisation"):
        _corrupt(a, "speckle", 0.5, units="db")
    with pytest.raises(ValueError, match="units"):
        _corrupt(a, "speckle", 0.5, norm=norm, units=None)


@pytest.mark.parametrize("kind", list(KIND_ID))
def test_seeded_per_tile_independent_of_batching(kind):
    x = _tiles(4, 2, 24, offset=3.0)
    norm, units = {"mean": [0.0, 1.0], "std": [1.0, 2.0]}, "db"
    kwargs = {"norm": norm, "units": units, "index": 1}
    batch = _corrupt(x, kind, 0.5, tiles=[3, 7, 1, 0], **kwargs)
    assert batch.dtype == torch.float32 and batch.shape == x.shape
    for row, tile in enumerate([3, 7, 1, 0]):  # one tile alone, or in a batch of another order
        torch.testing.assert_close(batch[row : row + 1], _corrupt(x[row : row + 1], kind, 0.5, tiles=[tile], **kwargs))
    flipped = _corrupt(x.flip(0), kind, 0.5, tiles=[0, 1, 7, 3], **kwargs)
    torch.testing.assert_close(flipped, batch.flip(0))
    torch.testing.assert_close(_corrupt(x, kind, 0.5, tiles=[3, 7, 1, 0], **kwargs), batch, rtol=0, atol=0)
    other_tile = _corrupt(x, kind, 0.5, tiles=[4, 7, 1, 0], **kwargs)
    assert not torch.equal(other_tile[0], batch[0]) and torch.equal(other_tile[1:], batch[1:])
    assert not torch.equal(_corrupt(x, kind, 0.5, tiles=[3, 7, 1, 0], seed=1, **kwargs), batch)
    other_modality = {**kwargs, "index": 0}
    assert not torch.equal(_corrupt(x, kind, 0.5, tiles=[3, 7, 1, 0], **other_modality), batch)
    assert not torch.equal(batch, x)


def test_input_is_not_modified_and_float64_comes_back_float32():
    x = _tiles(2, 3, 16).double()
    before = x.clone()
    out = _corrupt(x, "pixel_missing", 1.0)
    assert torch.equal(x, before) and out.dtype == torch.float32 and out.device == x.device
    assert (out == 0).all()
    with pytest.raises(ValueError, match="2 tile indices for a batch of 3"):
        _corrupt(_tiles(3, 1, 8), "gaussian", 0.5, tiles=[0, 1])


def test_scenario_cases_order_and_filtering():
    config = ScenarioConfig(block_missing=[0.25, 0.5], pixel_missing=[], gaussian=[1.0], salt_pepper=[], speckle=[0.5])
    modalities = ["rgb", "sar", "dsm"]
    cases = scenario_cases(config, modalities, {"sar": "db", "s1": "linear"})
    expected = [
        ("block_missing", 0.25, "rgb", 0), ("block_missing", 0.5, "rgb", 0),
        ("block_missing", 0.25, "sar", 1), ("block_missing", 0.5, "sar", 1),
        ("block_missing", 0.25, "dsm", 2), ("block_missing", 0.5, "dsm", 2),
        ("gaussian", 1.0, "rgb", 0), ("gaussian", 1.0, "sar", 1), ("gaussian", 1.0, "dsm", 2),
        ("speckle", 0.5, "sar", 1),
    ]  # fmt: skip
    assert [(c.kind, c.level, c.modality, c.modality_index) for c in cases] == expected
    restricted = ScenarioConfig(modalities=["dsm", "rgb"], block_missing=[], pixel_missing=[0.1], salt_pepper=[])
    cases = scenario_cases(restricted, modalities, {"sar": "db"})
    assert [c.name for c in cases] == [
        "pixel_missing:rgb@0.1",
        "pixel_missing:dsm@0.1",
        "gaussian:rgb@0.25",
        "gaussian:rgb@0.5",
        "gaussian:rgb@1.0",
        "gaussian:dsm@0.25",
        "gaussian:dsm@0.5",
        "gaussian:dsm@1.0",
    ]  # fmt: skip  (no speckle: sar is not corrupted)
    assert [c.modality_index for c in cases][:2] == [0, 2]
    assert len(scenario_cases(ScenarioConfig(), ["rgb", "dsm", "nir"], {})) == 36


def test_scenario_cases_reject_unknown_modality_and_units():
    with pytest.raises(ValueError, match=r"scenarios.modalities\[1\]: 'lidar'.*potsdam has \['rgb', 'dsm'\]"):
        scenario_cases(ScenarioConfig(modalities=["rgb", "lidar"]), ["rgb", "dsm"], {}, dataset="potsdam")
    with pytest.raises(ValueError, match=r"power.*'db', 'linear'"):
        scenario_cases(ScenarioConfig(), ["rgb", "sar"], {"sar": "power"})


@pytest.mark.parametrize(
    ("key", "levels", "message"),
    [
        ("block_missing", [0.5, 0.25], "increasing order"),
        ("gaussian", [0.5, 0.5], "increasing order"),
        ("speckle", [2.0], "is not allowed; must be a number in (0, 1]"),
        ("salt_pepper", [0.0], "is not allowed; must be a number in (0, 1]"),
    ],
)
def test_levels_must_increase_and_stay_in_range(key, levels, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        ScenarioConfig(**{key: levels})
    assert f"scenarios.{key}" in str(err.value) and repr(levels[-1]) in str(err.value)
