"""Where the pipeline's files live: every folder and file name of data, configs, models and results.

Paths are relative to the project root (where dvc.yaml is)::

    data/raw/<dataset>/                         # download stage (RAW_DIR)
    data/prepared/<dataset>/                    # prepare stage (prepared_dir)
    configs/<run>.json                          # configure stage (CONFIGS_DIR)
    models/<dataset>/<run>/seed<k>/model.pt     # train stage (run_dir(MODELS_DIR, ...) / MODEL_FILE)
    results/runs/<dataset>/<run>/seed<k>/       # train (train_log.jsonl) and evaluate (metrics.json,
                                                #   image_scores.npz, predictions.npz): the report's inputs
    results/report/                             # report stage, its only output (REPORT_DIR):
        leaderboard.{csv,md,tex}, summary.json, report.html
        <dataset>/<table>.{csv,md,tex}, <dataset>/runs.csv, ...
        png/<dataset>/<figure>.png              # figure_dir(REPORT_DIR, "png", dataset)
        svg/<dataset>/<figure>.svg

The runs' files and the report's are in disjoint folders, so the report stage depends on
``results/runs`` and declares ``results/report`` as its output. The figures are split by format
so that one folder (``results/report/png``) holds every data set's PNGs and nothing else: what
dvc.yaml's ``plots`` lists.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"  # data/raw/<dataset>/: the raw files and manifest.json the download stage verified
PREPARED_DIR = DATA_DIR / "prepared"
MANIFEST_FILE = "manifest.json"  # in data/raw/<dataset>/: the raw files the download stage verified
META_FILE = "meta.json"  # in data/prepared/<dataset>/: what the prepared arrays hold (benchmark.data.prepared)
PREVIEW_FILE = "preview.png"  # in data/prepared/<dataset>/: a few training tiles, every modality and the label
PARAMS_FILE = Path("params.yaml")  # what the pipeline runs: data sets, runs, seeds and every section
PIPELINE_FILE = Path("dvc.yaml")  # the stages and their deps
SCHEMA_FILE = Path("params.schema.json")  # the JSON Schema of params.yaml (python -m benchmark.configure --schema)
CONFIGS_DIR = Path("configs")  # configs/<run>.json: each run's training configuration (benchmark.configure)
MODELS_DIR = Path("models")
RESULTS_DIR = Path("results")
RUNS_DIR = RESULTS_DIR / "runs"  # results/runs/<dataset>/<run>/seed<k>/: what train and evaluate write
REPORT_DIR = RESULTS_DIR / "report"  # everything the report stage writes

# one run's files (run_dir)
MODEL_FILE = "model.pt"  # under MODELS_DIR
CHECKPOINT_FILE = "checkpoint.pt"  # under MODELS_DIR: the resumable state while a run trains
LOG_FILE = "train_log.jsonl"  # the step log (training curves)
METRICS_FILE = "metrics.json"
IMAGE_SCORES_FILE = "image_scores.npz"  # per-image confusion matrices (the report's bootstrap)
PREDICTIONS_FILE = "predictions.npz"  # the predictions of a few test tiles (the report's panels)

# the report's files, under REPORT_DIR
LEADERBOARD = "leaderboard"  # stem: leaderboard.{csv,md,tex} (each data set's, and every data set side by side)
SUMMARY_FILE = "summary.json"  # DVC metrics: Avg, Top-1, Last-1, E_p per data set and run
HTML_FILE = "report.html"
RUNS_FILE = "runs.csv"  # per data set: the long table of runs


def prepared_dir(dataset: str, data_dir: Path = DATA_DIR) -> Path:
    """``<data_dir>/prepared/<dataset>``: what the prepare stage writes for one data set."""
    return data_dir / PREPARED_DIR.name / dataset


def run_config_file(run: str, folder: Path = CONFIGS_DIR) -> Path:
    """``configs/<run>.json``: what run ``run`` (``<method>-<protocol>``) trains with (benchmark.configure)."""
    return folder / f"{run}.json"


def run_dir(base: Path, dataset: str, run: str, seed: int) -> Path:
    """``<base>/<dataset>/<run>/seed<k>``: where one (dataset, run = <method>-<protocol>, seed) lives."""
    return base / dataset / run / f"seed{seed}"


def metrics_file(dataset: str, run: str, seed: int, split: str = "test", base: Path = RUNS_DIR) -> Path:
    """``<base>/<dataset>/<run>/seed<k>/metrics.json``: a run's scores on the test split, what DVC and the
    report read. Another split's go to a ``<split>/`` folder below it (with their image scores and
    predictions), so evaluating it never replaces the test split's files."""
    folder = run_dir(base, dataset, run, seed)
    return (folder if split == "test" else folder / split) / METRICS_FILE


def figure_dir(report_dir: Path, suffix: str, dataset: str) -> Path:
    """``<report_dir>/<suffix>/<dataset>``: one data set's figures in one format (``"png"``, ``"svg"``)."""
    return report_dir / suffix / dataset


def legacy_results(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """What ``results_dir`` holds beside ``runs/`` and ``report/``, sorted: in a workspace made before
    those two folders existed, each data set's folder (runs and report files mixed),
    ``leaderboard.*``, ``summary.json`` and ``report.html``. The pipeline never reads or writes them."""
    if not results_dir.is_dir():
        return []
    return sorted(p for p in results_dir.iterdir() if p.name not in {RUNS_DIR.name, REPORT_DIR.name})
