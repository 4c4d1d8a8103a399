"""The long table of runs against the records it comes from."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from report.fake_results import CLASSES, DATASET, METHODS, SUBSETS, write_results

from benchmark.report import load_runs
from benchmark.report.results import load_metrics
from benchmark.report.runs import COLUMNS, runs_frame, seed_scores


def test_every_score_of_every_record_is_one_row(tmp_path):
    truth = write_results(tmp_path, with_logs=False)
    records = load_metrics(tmp_path, DATASET)
    frame = runs_frame(records)
    assert list(frame.columns) == list(COLUMNS)
    per_record = len(SUBSETS) * (1 + len(CLASSES))  # the fake records hold miou and iou per class
    assert len(frame) == per_record * len(records)
    for run, seeds in truth.items():
        for seed, entry in seeds.items():
            record = entry["record"]
            rows = frame[(frame.run == run) & (frame.seed == seed)]
            assert set(rows.protocol) == {"complete"} and set(rows.method) == {run.rsplit("-", 1)[0]}
            assert set(rows.family) == {record["family"]} and set(rows.convention) == {"mask"}
            for subset in SUBSETS:
                cell = rows[(rows.subset == subset) & (rows.score == "miou")]
                assert cell.value.tolist() == [record["subsets"][subset]["miou"]]
                assert cell["size"].tolist() == [len(subset.split("+"))]
                for c in CLASSES:
                    value = rows[(rows.subset == subset) & (rows.score == "iou") & (rows["class"] == c)].value
                    expected = record["subsets"][subset]["iou"][c]
                    assert (math.isnan(expected) and math.isnan(value.item())) or value.item() == expected
    wide = seed_scores(frame, "beta-complete")
    assert list(wide.columns) == SUBSETS and wide.index.tolist() == [0, 1]
    assert wide.loc[1, "rgb+dsm"] == truth["beta-complete"][1]["record"]["subsets"]["rgb+dsm"]["miou"]
    with pytest.raises(KeyError, match="gamma-complete"):
        seed_scores(frame, "gamma-complete")


def test_load_runs_reads_every_data_set_and_filters(tmp_path):
    write_results(tmp_path, with_logs=False)
    (tmp_path / "plots").mkdir()  # a folder without runs is not a data set
    every = load_runs(tmp_path)
    pd.testing.assert_frame_equal(every, runs_frame(load_metrics(tmp_path, DATASET)))
    some = load_runs(tmp_path, datasets=[DATASET], runs=["sgma-complete"], seeds=[1])
    assert set(some.run) == {"sgma-complete"} and set(some.seed) == {1}
    assert len(some) == len(every) / (len(METHODS) * 2)
    with pytest.raises(FileNotFoundError, match="no <dataset>/<run>/seed"):
        load_runs(tmp_path / "plots")
