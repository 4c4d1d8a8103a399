"""The shared-encoder evaluation path against the naive one (one whole-model pass per subset and case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TINY_PARAMS

from benchmark import evaluate
from benchmark.config import ScenarioConfig
from benchmark.data.prepared import PreparedDataset
from benchmark.methods import replace_modality
from benchmark.methods.catalog import create_method, list_methods
from benchmark.methods.contract import ContractError, check_shared_encoder
from benchmark.protocol import apply_availability, enumerate_subsets, subset_mask
from benchmark.scenarios import corrupt, scenario_cases

SUITE = ["muss", "m3l", "imlt", "magic", "sgma", "sgma-sgf", "sgma-mas"]
CHANNELS = {"rgb": 3, "dsm": 1, "nir": 1}
NAMES = list(CHANNELS)


def _method(name: str, modalities=CHANNELS) -> torch.nn.Module:
    torch.manual_seed(0)
    method = create_method(name, modalities=modalities, num_classes=6, decoder_dim=16).eval()
    with torch.no_grad():  # random weights far from the initialisation, so that no term is trivially 0
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return method


def _inputs(batch: int = 3, size: int = 32, channels=CHANNELS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {m: torch.randn(batch, c, size, size, generator=g) for m, c in channels.items()}


def test_every_shipped_method_shares_its_encoder():
    assert set(SUITE) <= set(list_methods())
    for name in SUITE:
        assert _method(name).shares_encoder, name


@pytest.mark.parametrize("name", SUITE)
def test_shared_features_decode_to_the_naive_prediction_on_every_subset(name):
    method = _method(name)
    inputs = _inputs()
    every = subset_mask(NAMES, NAMES, 3)
    with torch.no_grad():
        features = method.encode(inputs, every)
        for subset in enumerate_subsets(NAMES):
            mask = subset_mask(subset, NAMES, 3)
            naive = method.predict(apply_availability(inputs, mask, NAMES), mask)
            shared = method.predict_features(features, mask, (32, 32))
            torch.testing.assert_close(shared["logits"], naive["logits"], rtol=1e-5, atol=1e-5)
            if "robustness" in naive:
                for a, b in zip(shared["robustness"], naive["robustness"], strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            # and the subset really changes the prediction (the mask is not ignored)
            if len(subset) < len(NAMES):
                full = method.predict(inputs, every)["logits"]
                assert (shared["logits"] - full).abs().max() > 1e-3, subset


@pytest.mark.parametrize("name", SUITE)
def test_a_corrupted_modality_reencoded_alone_gives_the_naive_prediction(name):
    method = _method(name)
    inputs = _inputs()
    every = subset_mask(NAMES, NAMES, 3)
    corrupted = {**inputs, "dsm": inputs["dsm"] + 3 * torch.randn_like(inputs["dsm"])}
    with torch.no_grad():
        clean = method.encode(inputs, every)
        alone = subset_mask(["dsm"], NAMES, 3)
        dsm = method.encode(apply_availability(corrupted, alone, NAMES), alone)
        shared = method.predict_features(replace_modality(clean, dsm, NAMES.index("dsm")), every, (32, 32))
        naive = method.predict(corrupted, every)
    torch.testing.assert_close(shared["logits"], naive["logits"], rtol=1e-5, atol=1e-5)
    assert (naive["logits"] - method.predict(inputs, every)["logits"]).abs().max() > 1e-3


def test_replace_modality_takes_one_modality_from_the_other():
    a = [torch.zeros(2, 3, 4), torch.zeros(2, 3, 1, 1)]
    b = [torch.ones(2, 3, 4), torch.ones(2, 3, 1, 1)]
    for f in evaluate.replace_modality(a, b, 1):
        assert f[:, 1].eq(1).all() and f[:, [0, 2]].eq(0).all()


@pytest.mark.parametrize("name", ["muss", "sgma", "m3l"])
def test_evaluation_scores_match_the_naive_path(name, tiny_prepared):
    test = PreparedDataset(tiny_prepared, "test")
    method = _method(name, dict(test.modalities))
    scenarios = ScenarioConfig(**{**TINY_PARAMS["scenarios"], "gaussian": [1.0], "block_missing": [0.5]})
    kwargs = {"batch_size": 5, "keep": [0, 3], "scenarios": scenarios}
    shared = evaluate.evaluate_subsets(method, test, **kwargs)
    naive = evaluate.evaluate_subsets(method, test, shared_encoder=False, **kwargs)
    assert list(shared.confusion) == list(naive.confusion) and len(shared.scenarios) >= 6
    pixels = test.tile_shape[0] * test.tile_shape[1] * len(test)
    for name_, matrix in shared.confusion.items():
        # argmax of logits equal to ~1e-6 may flip a near-tie: allow 1 pixel in 10^4, no more
        assert (matrix - naive.confusion[name_]).abs().sum() <= 2 * max(1, pixels // 10_000), name_
        assert (shared.predictions[name_] != naive.predictions[name_]).float().mean() < 1e-3, name_
    for case, matrix in shared.scenarios.items():
        assert (matrix - naive.scenarios[case]).abs().sum() <= 2 * max(1, pixels // 10_000), case.name
    for name_, mean in naive.robustness.items():
        torch.testing.assert_close(shared.robustness[name_], mean, rtol=1e-5, atol=1e-7)
    assert list(shared.scenario_robustness) == (list(shared.scenarios) if name == "sgma" else [])
    assert list(naive.scenario_robustness) == list(shared.scenario_robustness)
    for case, mean in naive.scenario_robustness.items():
        torch.testing.assert_close(shared.scenario_robustness[case], mean, rtol=1e-5, atol=1e-7)


def test_scenario_robustness_record_is_a_direct_average(tiny_prepared):
    """``robustness.scenarios`` of metrics.json: for every case, the maps of ``predict`` on the
    corrupted test split (every modality available), per image the mean over pixels, then the
    mean over images (numpy, float64), rounded to 6 decimals; laid out as ``scenarios.kinds``."""
    test = PreparedDataset(tiny_prepared, "test")
    names = list(test.modalities)
    method = _method("sgma", dict(test.modalities))
    settings = {"modalities": ["dsm"], "gaussian": [0.5, 2.0], "pixel_missing": [], "salt_pepper": []}
    scenarios = ScenarioConfig(**{**TINY_PARAMS["scenarios"], **settings})  # SGMA is slow on a CPU: 3 cases
    evaluation = evaluate.evaluate_subsets(  # batches of 4 and 2
        method, test, batch_size=4, scenarios=scenarios, subsets=[names]
    )
    record = evaluate.robustness_record(evaluation.robustness, names, evaluation.scenario_robustness)
    matrices = evaluate.scenarios_record(evaluation.scenarios, test.classes, seed=0, block_size=8, clean_miou=0.0)
    block = record["scenarios"]
    assert list(block) == list(matrices["kinds"]) == ["block_missing", "gaussian"]  # no SAR-like modality
    for kind, entry in block.items():
        assert entry["levels"] == matrices["kinds"][kind]["levels"] == getattr(scenarios, kind)
        assert list(entry["modalities"]) == list(matrices["kinds"][kind]["modalities"]) == ["dsm"]
        assert list(entry["modalities"]["dsm"]) == names  # every modality's weight under the corrupted one
    n = len(test)
    inputs = {m: torch.stack([test[i][0][m] for i in range(n)]) for m in names}
    every = subset_mask(names, names, n)
    changed = []
    for case in scenario_cases(scenarios, names, {}):
        corrupted = corrupt(inputs[case.modality], case, range(n), seed=0, block_size=scenarios.block_size)
        with torch.no_grad():
            maps = method.predict({**inputs, case.modality: corrupted}, every)["robustness"]
        expected = np.stack([r.numpy().astype(np.float64).mean(axis=(2, 3)).mean(axis=0) for r in maps])  # [L, M]
        weights = block[case.kind]["modalities"][case.modality]
        level = block[case.kind]["levels"].index(case.level)
        for j, m in enumerate(names):
            assert len(weights[m]) == len(block[case.kind]["levels"]), case.name
            np.testing.assert_allclose(weights[m][level], expected[:, j], rtol=0, atol=2e-6, err_msg=case.name)
            assert weights[m][level] == [round(v, 6) for v in weights[m][level]]
        np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)  # the weights of a pixel sum to 1
        clean = record["subsets"]["+".join(names)][case.modality]
        changed.append(np.abs(np.array(weights[case.modality][level]) - clean).max())
    assert max(changed) > 1e-3  # the corruptions do reach the weights


def test_scenario_robustness_only_with_cases_and_maps(tiny_prepared):
    test = PreparedDataset(tiny_prepared, "test")
    names = list(test.modalities)
    scenarios = ScenarioConfig(**{**TINY_PARAMS["scenarios"], "pixel_missing": [], "salt_pepper": []})
    muss = evaluate.evaluate_subsets(_method("muss", dict(test.modalities)), test, batch_size=6, scenarios=scenarios)
    assert muss.scenarios and not muss.scenario_robustness
    sgma = evaluate.evaluate_subsets(_method("sgma", dict(test.modalities)), test, batch_size=6, subsets=[names])
    assert sgma.robustness and not sgma.scenario_robustness
    assert "scenarios" not in evaluate.robustness_record(sgma.robustness, names, sgma.scenario_robustness)


def test_scenario_cases_encode_only_the_corrupted_modality(tiny_prepared, monkeypatch):
    test = PreparedDataset(tiny_prepared, "test")
    method = _method("muss", dict(test.modalities))
    scenarios = ScenarioConfig(**{**TINY_PARAMS["scenarios"], "gaussian": [1.0]})
    cases = scenario_cases(scenarios, list(test.modalities), {})
    seen = []
    original = method.encoder.forward

    def spy(inputs, available):
        seen.append(available.sum(dim=0).tolist())
        return original(inputs, available)

    monkeypatch.setattr(method.encoder, "forward", spy)
    evaluate.evaluate_subsets(method, test, batch_size=len(test), scenarios=scenarios)
    n = len(test)
    # the check on 1 tile (1 shared encode + 2 naive predicts), then one full encode, then one
    # single-modality encode per case
    assert len(seen) == 1 + 2 + 1 + len(cases) and seen[3] == [n] * 3
    assert seen[4:] == [[n if i == c.modality_index else 0 for i in range(3)] for c in cases]


@pytest.mark.parametrize("name", SUITE)
def test_decode_ignores_the_features_of_modalities_outside_the_subset(name):
    method = _method(name)
    inputs = _inputs()
    every = subset_mask(NAMES, NAMES, 3)
    mixed = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        features = method.encode(inputs, every)
        garbage = [torch.where(mixed.view(3, 3, *[1] * (f.dim() - 2)), f, torch.randn_like(f) * 1e3) for f in features]
        zeroed = [torch.where(mixed.view(3, 3, *[1] * (f.dim() - 2)), f, 0.0) for f in features]
        a = method.predict_features(garbage, mixed, (32, 32))["logits"]
        b = method.predict_features(zeroed, mixed, (32, 32))["logits"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_chosen_subsets_are_put_in_the_data_sets_order_and_checked(tiny_prepared):
    test = PreparedDataset(tiny_prepared, "test")
    method = _method("muss", dict(test.modalities))
    evaluation = evaluate.evaluate_subsets(method, test, batch_size=len(test), subsets=[["nir", "rgb"]])
    assert list(evaluation.confusion) == ["rgb+nir"]
    for bad in (["rgb", "rgb"], ["sar"], []):
        with pytest.raises(ValueError, match=r"must name distinct modalities of \['rgb', 'dsm', 'nir'\]"):
            evaluate.evaluate_subsets(method, test, batch_size=len(test), subsets=[bad])


def test_a_predict_override_that_predict_features_lacks_is_caught():
    method = _method("muss")
    original = type(method).predict

    def predict(self, inputs, available):  # adds maps the shared path does not produce
        out = original(self, inputs, available)
        return {**out, "robustness": [available.float()[:, :, None, None].expand(-1, -1, 4, 4)]}

    method.predict = predict.__get__(method)
    inputs = _inputs()
    every = subset_mask(NAMES, NAMES, 3)
    with pytest.raises(ContractError, match=r"predict_features\(\)\['robustness'\] differs from predict\(\)"):
        check_shared_encoder("muss", method, inputs, every, [every])


@pytest.mark.parametrize("name", ["muss", "sgma", "imlt"])
def test_zero_convention_feeds_zeros_and_says_every_modality_is_present(name, tiny_prepared):
    """``convention="zero"``: each subset's confusion matrices equal a direct count (scikit-learn)
    of ``predict(zeroed inputs, every modality available)``, on the shared and the naive path;
    the logits differ from the ``mask`` convention's."""
    from sklearn.metrics import confusion_matrix

    test = PreparedDataset(tiny_prepared, "test")
    method = _method(name, dict(test.modalities))
    names = list(test.modalities)
    shared = evaluate.evaluate_subsets(method, test, batch_size=4, convention="zero")
    naive = evaluate.evaluate_subsets(method, test, batch_size=4, convention="zero", shared_encoder=False)
    pixels = test.tile_shape[0] * test.tile_shape[1] * len(test)
    for subset in enumerate_subsets(names):
        key = "+".join(subset)
        expected = torch.zeros(len(test), 6, 6, dtype=torch.int64)
        for index in range(len(test)):
            inputs, target = test[index]
            inputs = {m: x[None] for m, x in inputs.items()}
            mask = subset_mask(subset, names, 1)
            with torch.no_grad():
                logits = method.predict(apply_availability(inputs, mask, names), subset_mask(names, names, 1))["logits"]
            valid = target.numpy() != test.ignore_index
            pred = logits.argmax(1)[0].numpy()
            expected[index] = torch.from_numpy(confusion_matrix(target.numpy()[valid], pred[valid], labels=range(6)))
        assert torch.equal(naive.confusion[key], expected), key
        assert (shared.confusion[key] - expected).abs().sum() <= 2 * max(1, pixels // 10_000), key
    inputs = {m: x[None] for m, x in test[0][0].items()}
    alone = subset_mask(names[:1], names, 1)
    with torch.no_grad():
        told = method.predict(apply_availability(inputs, alone, names), alone)["logits"]
        untold = method.predict(apply_availability(inputs, alone, names), subset_mask(names, names, 1))["logits"]
    assert (told - untold).abs().max() > 1e-3  # the convention changes what the method is shown
    with pytest.raises(ValueError, match="convention 'none'"):
        evaluate.evaluate_subsets(method, test, convention="none")


def test_tags_record_scores_each_tags_tiles_like_sklearn():
    """Per tag, the mIoU of each subset over the tag's tiles only: the per-image matrices summed,
    against sklearn's Jaccard on those tiles' labelled pixels."""
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(0)
    k, n = 3, 6
    target = rng.integers(0, k, (n, 8, 8))
    target[0, :3] = 255  # ignored pixels
    pred = {name: rng.integers(0, k, (n, 8, 8)) for name in ("a", "b", "a+b")}
    pred["a"][2:4] = target[2:4]  # perfect on tiles 2 and 3
    confusion = {  # one matrix per image (tested against sklearn in test_metrics.py)
        name: evaluate.confusion_matrices(torch.from_numpy(p), torch.from_numpy(target), k, 255)
        for name, p in pred.items()
    }
    tags = {"fog": [0, 1, 5], "night": [2, 3]}
    record = evaluate.tags_record(confusion, tags)
    for tag, tiles in tags.items():
        assert record[tag]["tiles"] == len(tiles)
        keep = target[tiles] != 255
        for name, p in pred.items():
            t, q = target[tiles][keep], p[tiles][keep]
            present = sorted(set(t) | set(q))  # a class in neither is left out of the mean
            iou = jaccard_score(t, q, labels=present, average=None)
            assert record[tag]["miou"][name] == pytest.approx(100 * np.mean(iou), abs=1e-9), (tag, name)
        assert record[tag]["summary"]["avg"] == pytest.approx(np.mean(list(record[tag]["miou"].values())))
    assert record["night"]["miou"]["a"] == 100.0
    partial = evaluate.tags_record(confusion, tags, not_applicable=["b"])
    assert np.isnan(partial["fog"]["miou"]["b"]) and np.isnan(partial["fog"]["summary"]["avg"])
    assert partial["fog"]["summary"]["top1"] == max(partial["fog"]["miou"]["a"], partial["fog"]["miou"]["a+b"])
    empty = {name: torch.zeros(n, k, k, dtype=torch.int64) for name in pred}  # no labelled pixel: no summary
    assert evaluate.tags_record(empty, {"fog": [0]})["fog"]["summary"] is None
