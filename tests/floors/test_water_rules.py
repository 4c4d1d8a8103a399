"""The water rules (ndwi, sar-otsu) on a small prepared flood data set made here, and their refusal
of a data set without their bands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS

from benchmark import checkpoint, evaluate, train
from benchmark.config import ParamsValueError, TrainConfig
from benchmark.data.prepared import PreparedDataset, PreparedWriter
from benchmark.data.sen1floods11 import S1_BANDS, S2_BANDS
from benchmark.methods.catalog import create_method
from benchmark.protocol import builtin_protocol, subset_mask
from benchmark.schema import validate_params
from floors.sar_otsu import otsu_threshold

SIZE = 16


def _scene(rng: np.random.Generator, count: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Water (a random half-plane per tile) dark in VH and with green above NIR; land the opposite."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = np.stack([((yy * rng.uniform(-1, 1) + xx * rng.uniform(-1, 1)) > 0) for _ in range(count)]).astype(
        np.uint8
    )
    water = labels == 1
    s1 = np.stack([np.where(water, -16.0, -8.0), np.where(water, -25.0, -13.0)], axis=1)
    s1 = (s1 + rng.normal(0, 1.5, s1.shape)).astype(np.float32)
    s2 = rng.uniform(500, 1500, (count, len(S2_BANDS), SIZE, SIZE)).astype(np.float32)
    s2[:, S2_BANDS.index("B3")] = np.where(water, 900, 700) + rng.normal(0, 80, water.shape)
    s2[:, S2_BANDS.index("B8")] = np.where(water, 400, 2500) + rng.normal(0, 150, water.shape)
    labels[:, 0, 0] = 255  # an unlabelled pixel
    return {"s1": s1, "s2": s2}, labels


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared two-sensor flood data set under the sample's name (so its bands are Sen1Floods11's)."""
    root = tmp_path_factory.mktemp("flood") / "sen1floods11-sample"
    rng = np.random.default_rng(0)
    facts = {"dataset": "sen1floods11-sample", "classes": ["not_water", "water"], "ignore_index": 255}
    with PreparedWriter(root, counts={"train": 12, "test": 6}, modalities={"s1": 2, "s2": 13},
                        tile_shape=(SIZE, SIZE), **facts) as out:  # fmt: skip
        for split, count in (("train", 12), ("test", 6)):
            out.add(split, *_scene(rng, count))
    return root


def _rule(name: str, dataset: PreparedDataset, **params) -> torch.nn.Module:
    return create_method(name, **train.method_init(dataset, TrainConfig(**TINY_PARAMS["train"]), params, name))


def _raw(dataset: PreparedDataset, modality: str, band: str, inputs: dict) -> np.ndarray:
    i = {"s1": S1_BANDS, "s2": S2_BANDS}[modality].index(band)
    norm = dataset.meta["normalisation"][modality]
    return inputs[modality][:, i].double().numpy() * norm["std"][i] + norm["mean"][i]


def test_otsu_is_the_brute_force_maximum_of_the_between_class_variance():
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(0, 50, size=rng.integers(3, 40))
        edges = np.sort(rng.normal(size=len(counts) + 1))
        centres = (edges[:-1] + edges[1:]) / 2
        variance = {}  # threshold (bin centre) -> between-class variance of bins <= t against bins > t
        for t in range(len(counts) - 1):
            w0, w1 = counts[: t + 1].sum(), counts[t + 1 :].sum()
            if w0 and w1:
                m0 = (counts[: t + 1] * centres[: t + 1]).sum() / w0
                m1 = (counts[t + 1 :] * centres[t + 1 :]).sum() / w1
                variance[centres[t]] = w0 * w1 * (m0 - m1) ** 2
        if variance:  # empty bins make ties: any maximiser will do
            found = otsu_threshold(counts, edges)
            assert variance[found] == pytest.approx(max(variance.values()), rel=1e-9)


def test_ndwi_is_the_index_of_the_raw_bands_thresholded_at_zero(flood):
    test = PreparedDataset(flood, "test")
    rule = _rule("ndwi", test)
    inputs = {m: torch.stack([test[i][0][m] for i in range(len(test))]) for m in test.modalities}
    green, nir = _raw(test, "s2", "B3", inputs), _raw(test, "s2", "B8", inputs)
    expected = (green - nir) / (green + nir)
    np.testing.assert_allclose(rule.water_index(inputs).numpy(), expected, rtol=1e-9)
    pred = rule.predict(inputs, subset_mask(["s2"], list(test.modalities), len(test)))["logits"].argmax(1).numpy()
    assert np.array_equal(pred == 1, expected > 0)
    assert rule.supports(["s2"]) and rule.supports(["s1", "s2"]) and not rule.supports(["s1"])


def test_sar_otsu_fits_on_the_training_tiles_with_s1_only(flood):
    data = PreparedDataset(flood, "train")
    available = torch.ones(len(data), 2, dtype=torch.bool)
    available[:4, 0] = False  # s1 missing on the first 4 training tiles
    rule = _rule("sar-otsu", data)
    threshold = rule.fit(data, available, seed=0)["threshold"]
    values = []
    for i in range(4, len(data)):
        inputs, target = data[i]
        vh = _raw(data, "s1", "VH", {"s1": inputs["s1"][None]})[0]
        values.append(vh[target.numpy() != 255])
    values = np.concatenate(values)
    edges = np.linspace(values.min(), values.max(), 257)
    assert threshold == pytest.approx(otsu_threshold(np.histogram(values, bins=edges)[0], edges), abs=1e-6)
    assert -25 < threshold < -13  # between the two modes
    assert float(rule.fitted("threshold")) == threshold
    assert rule.supports(["s1"]) and not rule.supports(["s2"])


def test_rules_train_and_evaluate_with_subsets_not_applicable(flood, tmp_path):
    for name, missing in (("ndwi", "s1"), ("sar-otsu", "s2")):
        path = train.train(flood, name, {}, TrainConfig(**TINY_PARAMS["train"]), 0, tmp_path / name,
                           protocol=builtin_protocol("complete"), progress=False)  # fmt: skip
        method, record = checkpoint.load_model(path)
        assert record["steps"] == 0 and record["registered_method"] == name and set(record["fit"]) == {"threshold"}
        (line,) = (tmp_path / name / "train_log.jsonl").read_text().splitlines()  # the fit, not empty
        logged = json.loads(line)
        assert logged["fit"] == record["fit"] and logged["tiles"] == len(PreparedDataset(flood, "train"))
        assert logged["seconds"] == record["train_seconds"]
        test = PreparedDataset(flood, "test")
        result = evaluate.evaluate_subsets(method, test, batch_size=4, keep=[0])
        assert result.not_applicable == [missing]
        assert int(result.confusion[missing].sum()) == 0 and (result.predictions[missing] == 255).all()
        metrics = evaluate.metrics_record(result.matrices, test, run=f"{name}-complete", protocol={"name": "complete"},
                                          convention="mask", seed=0, not_applicable=result.not_applicable)  # fmt: skip
        assert metrics["not_applicable"] == [missing] and math.isnan(metrics["subsets"][missing]["miou"])
        assert math.isnan(metrics["summary"]["avg"]) and math.isnan(metrics["summary"]["last1"])
        assert metrics["summary"]["top1"] > 80  # the rule separates the made-up water well
        assert metrics["subsets"]["s1+s2"]["miou"] == metrics["subsets"]["s2" if name == "ndwi" else "s1"]["miou"]


def test_a_rule_is_refused_on_a_data_set_without_its_band_before_any_compute():
    params = {**TINY_PARAMS, "runs": ["muss-uniform", "ndwi-complete"], "method_params": {"muss": {}, "ndwi": {}},
              "report": {**TINY_PARAMS["report"], "reference": "muss-uniform"}}  # fmt: skip
    with pytest.raises(ParamsValueError, match=r"'ndwi-complete' on data set 'synthetic'.*ndwi.*no band 'B3'"):
        validate_params(params, "params.yaml")
    params["method_params"]["ndwi"] = {"bands": {"s2": ["B3"]}}
    with pytest.raises(ParamsValueError, match="method_params.ndwi.bands.*from the data set"):
        validate_params(params, "params.yaml")
