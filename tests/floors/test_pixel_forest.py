"""The pixel-forest floor against scikit-learn itself, on the tiny synthetic data set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from benchmark.data.prepared import PreparedDataset
from benchmark.methods.catalog import create_method
from benchmark.protocol import enumerate_subsets, subset_mask, subset_name
from floors.pixel_forest import (
    feature_columns,
    pixel_features,
    round_down_float32,
    sample_pixels,
    training_pixels,
)

PARAMS = {"trees": 5, "min_samples_leaf": 3, "train_pixels": 600, "window": 3}


def _forest(dataset: PreparedDataset, **params) -> torch.nn.Module:
    return create_method("pixel-forest", modalities=dataset.modalities, num_classes=len(dataset.classes),
                         ignore_index=dataset.ignore_index, **{**PARAMS, **params})  # fmt: skip


def _everything(dataset: PreparedDataset) -> torch.Tensor:
    return torch.ones(len(dataset), len(dataset.modalities), dtype=torch.bool)


def test_features_are_values_and_local_means_without_the_padding():
    rng = np.random.default_rng(0)
    inputs = {"a": torch.from_numpy(rng.normal(size=(2, 2, 5, 6)).astype(np.float32)),
              "b": torch.from_numpy(rng.normal(size=(2, 1, 5, 6)).astype(np.float32))}  # fmt: skip
    got = pixel_features(inputs, ["a", "b"], window=3).numpy()
    expected = []
    for name in ("a", "b"):
        x = inputs[name].numpy()
        local = np.zeros_like(x)
        for i in range(5):
            for j in range(6):  # the mean over the window's cells inside the image
                local[:, :, i, j] = x[:, :, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].mean(axis=(2, 3))
        expected += [x, local]
    np.testing.assert_allclose(got, np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)
    assert feature_columns({"a": 2, "b": 1}, ["b"], window=3) == [4, 5]
    assert feature_columns({"a": 2, "b": 1}, ["a"], window=1) == [0, 1]


def test_pixel_sample_is_seeded_labelled_and_without_replacement(tiny_prepared):
    dataset = PreparedDataset(tiny_prepared, "train")
    tiles = list(range(len(dataset)))
    picked = sample_pixels(dataset, tiles, 500, seed=3, ignore_index=dataset.ignore_index)
    again = sample_pixels(dataset, tiles, 500, seed=3, ignore_index=dataset.ignore_index)
    other = sample_pixels(dataset, tiles, 500, seed=4, ignore_index=dataset.ignore_index)
    assert sum(len(v) for v in picked.values()) == 500
    assert all(np.array_equal(picked[t], again[t]) for t in picked) and picked.keys() == again.keys()
    assert any(t not in other or not np.array_equal(picked[t], other[t]) for t in picked)
    for tile, flat in picked.items():
        assert len(np.unique(flat)) == len(flat)
        assert (dataset[tile][1].reshape(-1)[flat] != dataset.ignore_index).all()
    whole = sample_pixels(dataset, [0], 10**9, seed=0, ignore_index=dataset.ignore_index)
    assert len(whole[0]) == int((dataset[0][1] != dataset.ignore_index).sum())  # fewer than asked: all


def test_predictions_are_scikit_learns_on_the_same_pixels(tiny_prepared):
    train, test = PreparedDataset(tiny_prepared, "train"), PreparedDataset(tiny_prepared, "test")
    floor = _forest(train)
    figures = floor.fit(train, _everything(train), seed=7)
    assert figures["train_pixels"] == PARAMS["train_pixels"]
    modalities = list(train.modalities)
    picked = sample_pixels(train, list(range(len(train))), PARAMS["train_pixels"], 7, train.ignore_index)
    features, labels = training_pixels(train, picked, modalities, PARAMS["window"])
    inputs = {m: torch.stack([test[i][0][m] for i in range(4)]) for m in modalities}
    for index, subset in enumerate(enumerate_subsets(modalities)):
        columns = feature_columns(train.modalities, subset, PARAMS["window"])
        oracle = RandomForestClassifier(n_estimators=PARAMS["trees"], min_samples_leaf=PARAMS["min_samples_leaf"],
                                        random_state=7 * 1000 + index).fit(features[:, columns], labels)  # fmt: skip
        x = pixel_features(inputs, subset, PARAMS["window"]).permute(0, 2, 3, 1).reshape(-1, len(columns)).numpy()
        expected = np.zeros((len(x), len(train.classes)))
        expected[:, oracle.classes_] = oracle.predict_proba(x)
        got = floor.class_probabilities(inputs, subset).permute(0, 2, 3, 1).reshape(len(x), -1).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=subset_name(subset))
        logits = floor.predict(inputs, subset_mask(subset, modalities, 4))["logits"]
        assert torch.isfinite(logits).all()
        margin = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2]
        clear = margin > 1e-5  # ties aside, the argmax is scikit-learn's
        assert np.array_equal(logits.argmax(1).reshape(-1).numpy()[clear], expected.argmax(1)[clear])


def test_a_saved_forest_loads_with_weights_only_and_predicts_the_same(tiny_prepared, tmp_path):
    train, test = PreparedDataset(tiny_prepared, "train"), PreparedDataset(tiny_prepared, "test")
    floor = _forest(train)
    floor.fit(train, _everything(train), seed=0)
    torch.save(floor.state_dict(), tmp_path / "state.pt")
    fresh = _forest(train)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    inputs = {m: torch.stack([test[i][0][m] for i in range(3)]) for m in train.modalities}
    rows = torch.tensor([[True, False, True], [True, True, True], [False, True, False]])  # a subset per sample
    got = fresh.predict(inputs, rows)["logits"]
    assert torch.equal(got, floor.predict(inputs, rows)["logits"])
    for b in range(3):  # each sample from its own subset's forest
        alone = floor.predict({m: x[b : b + 1] for m, x in inputs.items()}, rows[b : b + 1])["logits"]
        assert torch.equal(got[b : b + 1], alone)
    with pytest.raises(RuntimeError, match="not fitted"):
        _forest(train).predict(inputs, rows)


def test_a_subset_the_protocol_never_shows_is_refused(tiny_prepared):
    train = PreparedDataset(tiny_prepared, "train")
    available = _everything(train)
    available[:, 0] = False
    with pytest.raises(ValueError, match="never makes subset rgb available"):
        _forest(train).fit(train, available, seed=0)


def test_thresholds_round_down_to_float32():
    values = np.array([0.1, -0.3, 1e-8, 3.0, np.float32(0.7)], np.float64)
    rounded = round_down_float32(values)
    assert rounded.dtype == np.float32 and (rounded.astype(np.float64) <= values).all()
    assert (np.nextafter(rounded, np.float32(np.inf)).astype(np.float64) > values).all()  # the largest such


@pytest.mark.parametrize("bad", [{"trees": 0}, {"window": 4}, {"train_pixels": 2}, {"min_samples_leaf": True}])
def test_bad_parameters_are_named(tiny_prepared, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        _forest(PreparedDataset(tiny_prepared, "train"), **bad)


def test_the_trainer_fits_a_floor_the_same_every_time_and_evaluates_it(tiny_prepared, tmp_path):
    """Through ``train.train`` (the fit path of the contract): model.pt's record, a rerun gives the
    same forest, and evaluation scores every subset."""
    from tiny import TINY_PARAMS

    from benchmark import checkpoint, evaluate, train
    from benchmark.config import TrainConfig
    from benchmark.protocol import builtin_protocol

    config = TrainConfig(**TINY_PARAMS["train"])
    paths = [train.train(tiny_prepared, "pixel-forest", PARAMS, config, 1, tmp_path / name,
                         protocol=builtin_protocol("complete"), progress=False) for name in ("a", "b")]  # fmt: skip
    (first, record), (second, _) = (checkpoint.load_model(p) for p in paths)
    assert record["steps"] == 0 and record["fit"] == {"train_pixels": 600.0, "subsets": 7.0}
    assert record["init"]["trees"] == PARAMS["trees"] and record["median_step_seconds"] is None
    assert first.state_dict().keys() == second.state_dict().keys()
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    result = evaluate.evaluate_subsets(first, PreparedDataset(tiny_prepared, "test"), batch_size=4)
    assert result.not_applicable == [] and len(result.confusion) == 7
