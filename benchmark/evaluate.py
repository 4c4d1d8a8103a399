"""Evaluate a trained method on every non-empty modality subset of a data set's test split.

``python -m benchmark.evaluate --dataset synthetic --run-name muss-complete --seed 0`` reads
``models/<dataset>/<run>/seed<k>/model.pt`` and writes, in ``results/runs/<dataset>/<run>/seed<k>/``:

- ``metrics.json`` (the DVC metrics)::

    {"dataset", "run", "method", "protocol": {"name", "kind", ...}, "convention", "seed", "family",
     "modalities": [...], "classes": [...],
     "subsets": {"rgb": {"miou", "mf1", "accuracy", "iou": {class: value}, "f1": {...}}, ...},
     "summary": {"avg", "top1", "last1", "top1_subset", "last1_subset"},
     "efficiency": {"tile_shape", "params", "gflops", "train_steps", "train_batch_size", "train_seconds",
                    "train_seconds_per_step", "train_images_per_s", "train_peak_memory_mb",
                    "train_device", "inference_ms_per_image", "eval_peak_memory_mb", "eval_device"},
     "robustness": {"scales": [...], "subsets": {subset: {modality: [mean r per scale]}},
                    "scenarios": {kind: {"levels": [...],
                                         "modalities": {corrupted: {modality: [[mean r per scale] per level]}}}}},
     "scenarios": {"seed", "block_size", "clean_miou", "avg",
                   "kinds": {kind: {"levels": [...],
                                    "modalities": {modality: {"miou": [per level], "mf1": [...], "accuracy": [...]}}}}},
     "tags": {tag: {"tiles", "miou": {subset: value}, "summary": {"avg", "top1", "last1", ...} or null}}}

  ``tags`` only where the prepared split tags its tiles (e.g. DELIVER's conditions): each
  subset's mIoU over the tag's tiles (:func:`tags_record`).

- ``image_scores.npz``: ``subsets`` str[S], ``classes`` str[K] and ``confusion`` int64[S, N, K, K],
  the confusion matrix of every test image on every subset (rows = target). Their sum over
  images is the matrix every score in metrics.json comes from; the report resamples them for
  its paired bootstrap intervals.
- ``predictions.npz``: the predicted classes of a few fixed test tiles on every subset (the
  report's qualitative panel): ``indices`` int64[n], ``subsets`` str[S], ``pred`` uint8[S, n, H, W]
  and, for methods that report robustness maps, ``modalities`` str[M], ``scales`` int64[L] and
  ``robustness_<stride>`` float16[S, n, M, h, w].

All scores are percent, from one confusion matrix per subset accumulated over the whole split.
``protocol`` is the training protocol of the run (:class:`benchmark.protocol.Protocol`) and
``convention`` how a missing modality reached the model (params.yaml ``evaluate.convention``):
``mask`` (zeroed and masked out) or ``zero`` (zeroed, every modality marked available).
``robustness`` appears only for methods whose ``predict`` (or ``predict_features``) output carries ``"robustness"``
maps (SGMA): the mean over all test images and pixels of each modality's weight at each
scale, per subset (exactly 0 for a missing modality); its ``scenarios`` entry (only with
scenario cases) holds the same means for every corrupted-input case, laid out as
``scenarios.kinds``: per kind its levels and, per corrupted modality, every modality's weights
(the corrupted one's included), one list over the scales per level. ``scenarios`` (params.yaml ``scenarios``,
``benchmark.scenarios``, docs/scenarios.md) scores every corrupted-input case: every modality
available, one corrupted with one kind at one level, in the same pass over the test split as the
subsets; kinds in ``SCENARIO_KINDS`` order (only those with levels and a modality they apply to),
modalities in the data set's order, one score per level; ``clean_miou`` is the full set's mIoU
and ``avg`` the mean mIoU over every case. It is left out when no case applies. ``gflops`` is torch's FLOP count and
``inference_ms_per_image`` the median latency of one inference on one tile with every modality
available (``benchmark.efficiency``); the training figures come from ``model.pt`` (seconds per step
and images/s from the median step time, data loading excluded); peak memory
is CUDA's peak allocation on a GPU, the process's peak resident set size on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark import errors
from benchmark.checkpoint import load_model
from benchmark.config import (
    EVAL_CONVENTIONS,
    SCENARIO_KINDS,
    EvalConfig,
    FieldError,
    ScenarioConfig,
    load_section,
    resolve_device,
    run_parser,
    stage_label,
)
from benchmark.data.prepared import PreparedDataset
from benchmark.data.source import get_dataset
from benchmark.efficiency import efficiency_record
from benchmark.errors import DamagedFileError
from benchmark.io import atomic_write_json, atomic_write_npz, remove_stale_temps
from benchmark.layout import (
    IMAGE_SCORES_FILE,
    META_FILE,
    MODEL_FILE,
    MODELS_DIR,
    PREDICTIONS_FILE,
    metrics_file,
    prepared_dir,
    run_dir,
)
from benchmark.methods.base import input_size, replace_modality
from benchmark.methods.contract import check_logits, check_shared_encoder
from benchmark.metrics import NOT_SCORED, confusion_matrices, mean_iou, segmentation_scores, summarize
from benchmark.models.backbones import STRIDES
from benchmark.protocol import Protocol, apply_availability, enumerate_subsets, parse_run, subset_mask, subset_name
from benchmark.run_config import read_run_config
from benchmark.scenarios import Corruption, corrupt, scenario_cases


class RobustnessMeter:
    """Running mean of robustness maps per scale: ``update([float[B, M, h_i, w_i]])``, ``mean -> float[S, M]``."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.count = 0

    def update(self, robustness: list[torch.Tensor]) -> None:
        # Mean over pixels per image first, so every image weighs the same at every scale.
        per_image = torch.stack([r.detach().double().mean(dim=(2, 3)) for r in robustness])  # [S, B, M]
        sums = per_image.sum(dim=1)
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += per_image.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        if self.sums is None:
            raise ValueError("no robustness maps were recorded")
        return self.sums / self.count


@dataclass
class SubsetEvaluation:
    """What :func:`evaluate_subsets` measured, per subset name (in :func:`enumerate_subsets` order).

    ``confusion``: int64[N, K, K] per test image. ``robustness``: mean maps float64[L, M] (scale x
    modality), only for methods that report them. ``predictions``: uint8[n, H, W] for the kept
    tiles. ``robustness_maps``: per scale float16[n, M, h, w] for the kept tiles. ``scenarios``:
    the split's confusion matrix int64[K, K] of every corrupted-input case, in case order.
    ``scenario_robustness``: mean maps float64[L, M] of every case, for methods that report them.
    """

    confusion: dict[str, torch.Tensor]
    not_applicable: list[str] = field(default_factory=list)
    robustness: dict[str, torch.Tensor] = field(default_factory=dict)
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    robustness_maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    scenarios: dict[Corruption, torch.Tensor] = field(default_factory=dict)
    scenario_robustness: dict[Corruption, torch.Tensor] = field(default_factory=dict)

    @property
    def matrices(self) -> dict[str, torch.Tensor]:
        """The split's confusion matrix ``int64[K, K]`` per subset: the sum over images."""
        return {name: confusion.sum(dim=0) for name, confusion in self.confusion.items()}


def sample_tiles(num_tiles: int, count: int) -> list[int]:
    """``count`` fixed tile indices spread evenly over ``[0, num_tiles)`` (first and last included)."""
    count = min(count, num_tiles)
    if count <= 0:
        return []
    return sorted({round(i * (num_tiles - 1) / max(count - 1, 1)) for i in range(count)})


def ordered_subsets(subsets: Sequence[Sequence[str]] | None, modalities: list[str]) -> list[tuple[str, ...]]:
    """The subsets to score, each in the data set's modality order as :func:`enumerate_subsets` lists
    them (default: every non-empty one); a ``ValueError`` for one that names a modality twice, none,
    or one the data set lacks."""
    if subsets is None:
        return enumerate_subsets(modalities)
    for subset in subsets:
        if not subset or len(set(subset)) != len(subset) or not set(subset) <= set(modalities):
            raise ValueError(f"subset {list(subset)}: must name distinct modalities of {modalities}")
    return [tuple(m for m in modalities if m in subset) for subset in subsets]


def corruption_cases(
    scenarios: ScenarioConfig | None, dataset: PreparedDataset, sar_modalities: Mapping[str, str]
) -> list[Corruption]:
    """The corrupted-input cases of :func:`scenario_cases` (none without ``scenarios``); a
    ``ValueError`` naming meta.json when speckle needs a modality's normalisation it lacks."""
    if scenarios is None:
        return []
    cases = scenario_cases(scenarios, list(dataset.modalities), dict(sar_modalities))
    norms = dataset.meta.get("normalisation") or {}
    missing = sorted({c.modality for c in cases if c.kind == "speckle" and c.modality not in norms})
    if missing:
        raise ValueError(f"{dataset.root / META_FILE}: no normalisation for {missing}, which speckle needs")
    return cases


@dataclass(frozen=True)
class Scorer:
    """Scores the predictions of ``method_name`` made by its hook ``where`` against their targets."""

    method_name: str
    num_classes: int
    ignore_index: int
    where: str

    def __call__(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(int64[B, K, K] per image, predicted classes int64[B, H, W])`` of a prediction; on the
        device: no host sync per batch (moved to the CPU once, at the end)."""
        expected = (target.shape[0], self.num_classes, *target.shape[-2:])
        logits = check_logits(self.method_name, output, expected, self.where)
        if logits.device.type == "cpu":  # argmax over classes is ~10x faster with the class axis innermost
            logits = logits.contiguous(memory_format=torch.channels_last)
        pred = logits.argmax(dim=1)
        return confusion_matrices(pred, target, self.num_classes, self.ignore_index), pred


class NaivePath:
    """One batch on the naive path: the whole model (``predict``) once per subset and per case.
    ``inputs``: ``{modality: float[B, C, H, W]}``; ``every``: bool[B, M], all true."""

    where = "predict()"

    def __init__(
        self, method: torch.nn.Module, inputs: dict[str, torch.Tensor], modalities: list[str], every: torch.Tensor
    ) -> None:
        self.method, self.inputs, self.modalities, self.every = method, inputs, modalities, every
        self.size = input_size(inputs)

    def subset(self, mask: torch.Tensor, told: torch.Tensor) -> Any:
        """The output with the modalities outside ``mask`` (bool[B, M]) missing, the method told ``told``."""
        return self.method.predict(apply_availability(self.inputs, mask, self.modalities), told)

    def case(self, case: Corruption, corrupted: torch.Tensor) -> Any:
        """The output with every modality available and ``case.modality`` replaced by ``corrupted``."""
        return self.method.predict({**self.inputs, case.modality: corrupted}, self.every)


class SharedPath(NaivePath):
    """One batch on the shared-encoder path: every modality encoded once (``encode``), each subset
    only decoded (``predict_features``); under the ``zero`` convention a missing modality takes the
    features of an all-zero input. A case encodes just its corrupted modality."""

    where = "predict_features()"

    def __init__(
        self,
        method: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        modalities: list[str],
        every: torch.Tensor,
        convention: str,
    ) -> None:
        super().__init__(method, inputs, modalities, every)
        self.features = method.encode(inputs, every)
        self.blank = None
        if convention == "zero":  # what a missing modality's all-zero input encodes to
            self.blank = method.encode({m: torch.zeros_like(x) for m, x in inputs.items()}, every)

    def subset(self, mask: torch.Tensor, told: torch.Tensor) -> Any:
        shown = self.features
        if self.blank is not None:
            for index in (~mask[0]).nonzero().flatten().tolist():
                shown = replace_modality(shown, self.blank, index)
        return self.method.predict_features(shown, told, self.size)

    def case(self, case: Corruption, corrupted: torch.Tensor) -> Any:
        # encode the corrupted modality only; the others' features are the clean ones
        alone = subset_mask([case.modality], self.modalities, self.every.shape[0]).to(self.every.device)
        encoded = self.method.encode(
            apply_availability({**self.inputs, case.modality: corrupted}, alone, self.modalities), alone
        )
        features = replace_modality(self.features, encoded, case.modality_index)
        return self.method.predict_features(features, self.every, self.size)


def kept_rows(keep: Sequence[int], offset: int, batch: int) -> list[int]:
    """The rows of a batch of ``batch`` tiles from tile ``offset`` on that hold the kept tiles ``keep``."""
    return [i - offset for i in keep if offset <= i < offset + batch]


class Tally:
    """What :func:`evaluate_subsets` accumulates batch by batch, per subset name and per case; on
    the device until :meth:`result`."""

    def __init__(self, names: Sequence[str], cases: Sequence[Corruption]) -> None:
        self.confusion: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        self.meters = {name: RobustnessMeter() for name in names}
        self.predictions: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        self.maps: dict[str, list[list[torch.Tensor]]] = {name: [] for name in names}
        self.cases = list(cases)
        self.scenario_sums: dict[Corruption, torch.Tensor] = {}
        self.scenario_meters = {case: RobustnessMeter() for case in cases}

    def not_scored(
        self, name: str, target: torch.Tensor, num_classes: int, kept: list[int], size: tuple[int, int]
    ) -> None:
        """A subset the method cannot use: nothing counted; its kept tiles (of ``size`` pixels) hold ``NOT_SCORED``."""
        batch = target.shape[0]
        self.confusion[name].append(
            torch.zeros(batch, num_classes, num_classes, dtype=torch.int64, device=target.device)
        )
        if kept:
            self.predictions[name].append(torch.full((len(kept), *size), NOT_SCORED, dtype=torch.uint8))

    def add_subset(self, name: str, output: Any, matrices: torch.Tensor, pred: torch.Tensor, kept: list[int]) -> None:
        """One batch of subset ``name``: its per-image matrices, its robustness maps (when the output
        carries them) and the kept tiles' predictions and maps."""
        self.confusion[name].append(matrices)
        if kept:
            self.predictions[name].append(pred[kept].to("cpu", torch.uint8))
        if output.get("robustness") is not None:
            self.meters[name].update(output["robustness"])
            if kept:
                self.maps[name].append([r[kept].detach().to("cpu", torch.float16) for r in output["robustness"]])

    def add_case(self, case: Corruption, output: Any, matrices: torch.Tensor) -> None:
        """One batch of a corrupted-input case: its matrices summed, its robustness maps averaged."""
        matrix = matrices.sum(dim=0)
        self.scenario_sums[case] = matrix if case not in self.scenario_sums else self.scenario_sums[case] + matrix
        if output.get("robustness") is not None:
            self.scenario_meters[case].update(output["robustness"])

    def result(self, not_applicable: list[str]) -> SubsetEvaluation:
        """The evaluation, on the CPU."""
        return SubsetEvaluation(
            confusion={name: torch.cat(parts).cpu() for name, parts in self.confusion.items()},
            not_applicable=not_applicable,
            robustness={name: meter.mean for name, meter in self.meters.items() if meter.count},
            predictions={name: torch.cat(parts) for name, parts in self.predictions.items() if parts},
            robustness_maps={
                name: [torch.cat(scale) for scale in zip(*parts)] for name, parts in self.maps.items() if parts
            },
            scenarios={case: self.scenario_sums[case].cpu() for case in self.cases},
            scenario_robustness={case: meter.mean for case, meter in self.scenario_meters.items() if meter.count},
        )


def score_cases(
    path: NaivePath,
    scorer: Scorer,
    target: torch.Tensor,
    tiles: range,
    cases: Sequence[Corruption],
    scenarios: ScenarioConfig,
    norms: Mapping[str, Any],
    sar_modalities: Mapping[str, str],
    tally: Tally,
) -> None:
    """Score one batch (the test tiles ``tiles``) under every corrupted-input case of ``cases``."""
    for case in cases:
        m = case.modality
        corrupted = corrupt(
            path.inputs[m],
            case,
            tiles,
            seed=scenarios.seed,
            block_size=scenarios.block_size,
            norm=norms.get(m),
            sar_units=sar_modalities.get(m),
        )
        output = path.case(case, corrupted)
        tally.add_case(case, output, scorer(output, target)[0])


@torch.no_grad()
def evaluate_subsets(
    method: torch.nn.Module,
    dataset: PreparedDataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    keep: Sequence[int] = (),
    progress: bool = False,
    scenarios: ScenarioConfig | None = None,
    sar_modalities: Mapping[str, str] | None = None,
    shared_encoder: bool = True,
    subsets: Sequence[Sequence[str]] | None = None,
    convention: str = "mask",
) -> SubsetEvaluation:
    """Predict every test tile under every non-empty subset; keep the predictions (and robustness
    maps) of the tiles ``keep``. With ``scenarios``, each batch is also run with every modality
    available once per case of :func:`scenario_cases` (``sar_modalities``: the data set's
    ``{modality: "db" | "linear"}``), its matrices summed per case and its robustness maps (when
    the output carries them) averaged per case as for the subsets.

    With ``shared_encoder`` (the default) a method whose ``shares_encoder`` is True is encoded once
    per batch (every modality) and only decoded per subset (``predict_features``); a scenario case
    encodes just its corrupted modality and reuses the others' clean features (:class:`SharedPath`).
    The first batch is checked against the naive path on one tile, with every modality and with the
    first subset (:func:`check_shared_encoder`). ``shared_encoder=False``, or a method that cannot
    share, runs ``predict`` once per subset and case: the naive path (:class:`NaivePath`).
    ``subsets``: the subsets to score (default every non-empty one, :func:`enumerate_subsets`).
    ``convention``: ``"mask"`` (a missing modality is zeroed and masked out) or ``"zero"`` (zeroed,
    and the method is told every modality is present: on the shared path the missing modalities
    take the features of an all-zero input).
    """
    if convention not in EVAL_CONVENTIONS:
        raise ValueError(f"convention {convention!r}: must be one of {list(EVAL_CONVENTIONS)}")
    method_name = getattr(method, "method_name", type(method).__name__)
    shares = shared_encoder and bool(getattr(method, "shares_encoder", False))
    modalities = list(dataset.modalities)
    subsets = ordered_subsets(subsets, modalities)
    names = [subset_name(s) for s in subsets]
    supports = getattr(method, "supports", lambda subset: True)  # optional in the contract
    applicable = {name: bool(supports(list(s))) for name, s in zip(names, subsets)}  # others: not scored
    num_classes = len(dataset.classes)
    sar_modalities = dict(sar_modalities or {})
    cases = corruption_cases(scenarios, dataset, sar_modalities)
    norms = dataset.meta.get("normalisation") or {}
    scorer = Scorer(method_name, num_classes, dataset.ignore_index, SharedPath.where if shares else NaivePath.where)
    tally = Tally(names, cases)
    keep = sorted(set(keep))
    loader = DataLoader(dataset.as_stored(), batch_size=batch_size, shuffle=False)
    method.eval()
    offset = 0
    for inputs, target in tqdm(loader, desc="evaluate", disable=not progress, mininterval=1.0):
        inputs = dataset.standardise({m: x.to(device) for m, x in inputs.items()})  # compact to the device
        target = target.to(device)
        batch = target.shape[0]
        kept = kept_rows(keep, offset, batch)
        every = subset_mask(modalities, modalities, batch).to(device)
        masks = [subset_mask(subset, modalities, batch).to(device) for subset in subsets]
        if shares and offset == 0:  # the shared path against predict() on one tile: every modality, the first subset
            head = {m: x[:1] for m, x in inputs.items()}
            check_shared_encoder(method_name, method, head, every[:1], [every[:1], masks[0][:1]])
        path = (
            SharedPath(method, inputs, modalities, every, convention)
            if shares
            else NaivePath(method, inputs, modalities, every)
        )
        for mask, name in zip(masks, names):
            if not applicable[name]:
                tally.not_scored(name, target, num_classes, kept, path.size)
                continue
            output = path.subset(mask, mask if convention == "mask" else every)  # told: what the method is told
            tally.add_subset(name, output, *scorer(output, target), kept)
        score_cases(path, scorer, target, range(offset, offset + batch), cases, scenarios, norms, sar_modalities, tally)
        offset += batch
    return tally.result([name for name in names if not applicable[name]])


def image_scores_arrays(evaluation: SubsetEvaluation, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``image_scores.npz`` arrays of an evaluation."""
    names = list(evaluation.confusion)
    return {
        "subsets": np.array(names),
        "classes": np.array(list(classes)),
        "confusion": torch.stack([evaluation.confusion[n] for n in names]).numpy(),
    }


def predictions_arrays(
    evaluation: SubsetEvaluation, indices: Sequence[int], modalities: Sequence[str]
) -> dict[str, np.ndarray]:
    """The ``predictions.npz`` arrays of an evaluation (robustness maps only when recorded)."""
    names = list(evaluation.confusion)
    arrays: dict[str, np.ndarray] = {"indices": np.array(list(indices), dtype=np.int64), "subsets": np.array(names)}
    if indices:
        arrays["pred"] = torch.stack([evaluation.predictions[n] for n in names]).numpy()
    if evaluation.robustness_maps and indices:
        arrays["modalities"] = np.array(list(modalities))
        arrays["scales"] = np.array(STRIDES[: len(evaluation.robustness_maps[names[0]])], dtype=np.int64)
        for level, stride in enumerate(arrays["scales"]):
            arrays[f"robustness_{stride}"] = torch.stack([evaluation.robustness_maps[n][level] for n in names]).numpy()
    return arrays


def _weights(mean: torch.Tensor, modalities: Sequence[str]) -> dict[str, list[float]]:
    """``{modality: [mean r per scale]}`` of a mean map float[L, M], rounded to 6 decimals."""
    return {m: [round(float(v), 6) for v in mean[:, i]] for i, m in enumerate(modalities)}


def cases_by_kind(cases: Iterable[Corruption]) -> dict[str, tuple[list[float], dict[str, list[Corruption]]]]:
    """``{kind: (levels, {corrupted modality: [case per level]})}``: kinds in ``SCENARIO_KINDS``
    order (those with a case), modalities and levels in the order of ``cases``. Every modality of
    a kind must list the kind's levels once, in the same order (``ValueError``)."""
    cases = list(cases)
    grouped: dict[str, tuple[list[float], dict[str, list[Corruption]]]] = {}
    for kind in SCENARIO_KINDS:
        of_kind = [case for case in cases if case.kind == kind]
        if not of_kind:
            continue
        levels = list(dict.fromkeys(case.level for case in of_kind))
        per_modality: dict[str, list[Corruption]] = {}
        for case in of_kind:
            listed = per_modality.setdefault(case.modality, [])
            if len(listed) >= len(levels) or levels[len(listed)] != case.level:
                raise ValueError(f"{case.name}: the cases of {kind!r} must list the levels {levels} once per modality")
            listed.append(case)
        incomplete = [m for m, listed in per_modality.items() if len(listed) != len(levels)]
        if incomplete:
            raise ValueError(f"scenario {kind!r}: modality {incomplete[0]!r} lacks some of the levels {levels}")
        grouped[kind] = (levels, per_modality)
    return grouped


def robustness_record(
    robustness: dict[str, torch.Tensor],
    modalities: list[str],
    scenarios: Mapping[Corruption, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The metrics.json ``robustness`` entry from :func:`evaluate_subsets`' mean maps float[L, M]
    per subset (``robustness``) and per corrupted-input case (``scenarios``, its
    ``scenario_robustness``; the ``"scenarios"`` key only when there is a case): means in [0, 1]
    rounded to 6 decimals, kinds laid out as :func:`cases_by_kind` groups them."""
    record: dict[str, Any] = {
        "scales": list(STRIDES),
        "subsets": {name: _weights(mean, modalities) for name, mean in robustness.items()},
    }
    if scenarios:
        record["scenarios"] = {}
        for kind, (levels, per_modality) in cases_by_kind(scenarios).items():
            corrupted = {}
            for modality, cases in per_modality.items():
                per_level = [_weights(scenarios[case], modalities) for case in cases]
                corrupted[modality] = {m: [weights[m] for weights in per_level] for m in modalities}
            record["scenarios"][kind] = {"levels": levels, "modalities": corrupted}
    return record


def scenarios_record(
    matrices: Mapping[Corruption, torch.Tensor | np.ndarray],
    classes: Sequence[str],
    *,
    seed: int,
    block_size: int,
    clean_miou: float,
) -> dict[str, Any] | None:
    """The metrics.json ``scenarios`` entry from the split's confusion matrix ``[K, K]`` per case
    (:attr:`SubsetEvaluation.scenarios`); ``None`` when there is no case. Kinds in
    ``SCENARIO_KINDS`` order, modalities and levels in the order of the cases (:func:`cases_by_kind`);
    scores in percent."""
    if not matrices:
        return None
    kinds: dict[str, dict[str, Any]] = {}
    mious = []
    for kind, (levels, per_modality) in cases_by_kind(matrices).items():
        entries: dict[str, dict[str, list[float]]] = {}
        for modality, cases in per_modality.items():
            scores = [segmentation_scores(matrices[case], classes) for case in cases]
            entries[modality] = {key: [s[key] for s in scores] for key in ("miou", "mf1", "accuracy")}
            mious += entries[modality]["miou"]
        kinds[kind] = {"levels": levels, "modalities": entries}
    return {
        "seed": seed,
        "block_size": block_size,
        "clean_miou": clean_miou,
        "kinds": kinds,
        "avg": float(np.mean(mious)),
    }


def metrics_record(
    matrices: dict[str, torch.Tensor],
    dataset: PreparedDataset,
    *,
    run: str,
    protocol: Mapping[str, Any],
    convention: str,
    seed: int,
    extra: dict[str, Any] | None = None,
    not_applicable: Sequence[str] = (),
) -> dict[str, Any]:
    """The metrics.json record from per-subset confusion matrices; ``protocol`` is the run's
    :meth:`~benchmark.protocol.Protocol.record`. The subsets ``not_applicable`` (a method that cannot
    use them) score NaN (null) and are listed under ``"not_applicable"``; the summary is then
    ``summarize``'s with them (Avg and Last-1 undefined)."""
    subsets = {name: segmentation_scores(cm, dataset.classes) for name, cm in matrices.items()}
    for name in not_applicable:
        subsets[name] = {
            key: (math.nan if key in ("miou", "mf1", "accuracy") else {c: math.nan for c in dataset.classes})
            for key in subsets[name]
        }
    return {
        "dataset": dataset.meta["dataset"],
        "run": run,
        "method": parse_run(run)[0],
        "protocol": dict(protocol),
        "convention": convention,
        "seed": seed,
        **(extra or {}),
        "modalities": list(dataset.modalities),
        "classes": list(dataset.classes),
        "subsets": subsets,
        **({"not_applicable": list(not_applicable)} if not_applicable else {}),
        "summary": summarize({name: scores["miou"] for name, scores in subsets.items()}, not_applicable),
    }


def sar_modalities_of(dataset: PreparedDataset) -> dict[str, str]:
    """The SAR-like modalities ``{modality: "db" | "linear"}`` of the source that prepared ``dataset``
    (none known for a source that is not registered here)."""
    try:
        return dict(get_dataset(dataset.meta["dataset"]).sar_modalities)
    except KeyError:
        return {}


def check_model(
    model_path: Path,
    record: Mapping[str, Any],
    method_name: str,
    run_name: str,
    protocol: Protocol,
    dataset: PreparedDataset,
) -> None:
    """The ``model.pt`` record must be of run ``run_name`` (its method and training protocol) and of
    the data's modalities and classes: a :class:`~benchmark.errors.DamagedFileError` (a ``ValueError``)
    naming the file and both values otherwise."""
    if record["method"] != method_name:
        raise DamagedFileError(
            f"{model_path}: holds method {record['method']!r}, not {method_name!r} (run {run_name!r})"
        )
    if record.get("protocol") != protocol.record():
        raise DamagedFileError(
            f"{model_path}: trained under protocol {record.get('protocol')}, run {run_name!r} is "
            f"{protocol.record()} (run dvc repro: it retrains the run)"
        )
    if dict(record["init"]["modalities"]) != dataset.modalities:
        raise DamagedFileError(
            f"{model_path}: trained on modalities {record['init']['modalities']}, data has {dataset.modalities}"
        )
    if record["init"].get("num_classes") != len(dataset.classes):
        raise DamagedFileError(
            f"{model_path}: trained for {record['init'].get('num_classes')} classes, "
            f"data {dataset.root} has {len(dataset.classes)} ({dataset.classes})"
        )


def tags_record(
    confusion: Mapping[str, torch.Tensor], tags: Mapping[str, Sequence[int]], not_applicable: Sequence[str] = ()
) -> dict[str, Any]:
    """Scores over the tiles of each tag (e.g. a DELIVER condition): ``{tag: {"tiles": n, "miou":
    {subset: percent}, "summary": summarize's}}`` from the per-image matrices ``confusion``
    (``int64[N, K, K]`` per subset). A subset with no labelled pixel among a tag's tiles scores NaN,
    and that tag's summary is then null."""
    out = {}
    for tag, indices in tags.items():
        index = torch.as_tensor(list(indices), dtype=torch.long)
        miou = {
            name: math.nan if name in not_applicable else float(mean_iou(cm[index].sum(dim=0).numpy()))
            for name, cm in confusion.items()
        }
        scored = [v for name, v in miou.items() if name not in not_applicable]
        summary = None if any(math.isnan(v) for v in scored) else summarize(miou, not_applicable)
        out[tag] = {"tiles": len(index), "miou": miou, "summary": summary}
    return out


def assemble_metrics(
    evaluation: SubsetEvaluation,
    dataset: PreparedDataset,
    method: torch.nn.Module,
    record: Mapping[str, Any],
    efficiency: dict[str, Any],
    *,
    run: str,
    protocol: Protocol,
    convention: str,
    seed: int,
    scenarios: ScenarioConfig,
) -> dict[str, Any]:
    """The metrics.json record of an evaluation: :func:`metrics_record` with the method's family,
    ``efficiency``, what a fitted method fitted (``record``: its model.pt), the ``robustness`` entry
    (methods that report maps), the ``scenarios`` entry (when a case applies) and the ``tags`` entry
    (:func:`tags_record`, when the prepared split tags its tiles, e.g. by condition)."""
    extra: dict[str, Any] = {"family": getattr(method, "family", "reference"), "efficiency": efficiency}
    if record.get("fit"):  # what a fitted method fitted (e.g. a threshold)
        extra["fit"] = dict(record["fit"])
    if evaluation.robustness:
        extra["robustness"] = robustness_record(
            evaluation.robustness, list(dataset.modalities), evaluation.scenario_robustness
        )
    metrics = metrics_record(
        evaluation.matrices,
        dataset,
        run=run,
        protocol=protocol.record(),
        convention=convention,
        seed=seed,
        extra=extra,
        not_applicable=evaluation.not_applicable,
    )
    block = scenarios_record(
        evaluation.scenarios,
        dataset.classes,
        seed=scenarios.seed,
        block_size=scenarios.block_size,
        clean_miou=metrics["subsets"][subset_name(list(dataset.modalities))]["miou"],
    )
    if block is not None:
        metrics["scenarios"] = block
    if dataset.tags:
        metrics["tags"] = tags_record(evaluation.confusion, dataset.tags, evaluation.not_applicable)
    return metrics


def write_results(
    out: Path, evaluation: SubsetEvaluation, indices: Sequence[int], dataset: PreparedDataset, metrics: dict[str, Any]
) -> None:
    """``image_scores.npz`` and ``predictions.npz`` next to ``out``, then ``out`` (metrics.json, what
    DVC and the report look for) last; a killed run's leftovers removed first."""
    for path in (out.parent / IMAGE_SCORES_FILE, out.parent / PREDICTIONS_FILE, out):
        remove_stale_temps(path)
    atomic_write_npz(out.parent / IMAGE_SCORES_FILE, image_scores_arrays(evaluation, dataset.classes))
    atomic_write_npz(out.parent / PREDICTIONS_FILE, predictions_arrays(evaluation, indices, list(dataset.modalities)))
    atomic_write_json(out, metrics)


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", help="the prepared split to score (default test)")
    parser.add_argument("--model", type=Path, default=None, help="default models/<dataset>/<run>/seed<k>/model.pt")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default results/runs/<dataset>/<run>/seed<k>/metrics.json (another split: seed<k>/<split>/metrics.json)",
    )
    parser.add_argument(
        "--naive",
        action="store_true",
        help="run the whole model once per subset and case instead of sharing each batch's encoder features "
        "(the reference the shared path is checked against; the scores agree up to float rounding)",
    )
    args = parser.parse_args(argv)
    # its two sections (configure checked the whole file; the whole check would import every method)
    config = load_section(args.params, "evaluate", EvalConfig)
    scenarios = load_section(args.params, "scenarios", ScenarioConfig)
    run = read_run_config(args.run_name, args.config)
    device = resolve_device(config.device)
    dataset = PreparedDataset(args.data_dir or prepared_dir(args.dataset), args.split)
    sar_modalities = sar_modalities_of(dataset)
    try:
        scenario_cases(
            scenarios, list(dataset.modalities), sar_modalities, str(dataset.root)
        )  # bad names fail before any work
    except FieldError as err:
        raise err.at(f"{args.params}: scenarios") from None
    method_name, protocol = run.method, run.protocol
    model_path = args.model or run_dir(MODELS_DIR, args.dataset, args.run_name, args.seed) / MODEL_FILE
    method, record = load_model(model_path, device)
    check_model(model_path, record, method_name, args.run_name, protocol, dataset)
    print(stage_label("evaluate", args.dataset, args.run_name, args.seed, args.params), flush=True)  # inputs checked
    indices = sample_tiles(len(dataset), config.sample_tiles)
    evaluation = evaluate_subsets(
        method,
        dataset,
        batch_size=config.batch_size,
        device=device,
        keep=indices,
        progress=not args.no_progress,
        scenarios=scenarios,
        sar_modalities=sar_modalities,
        shared_encoder=not args.naive,
        convention=config.convention,
    )
    efficiency = efficiency_record(method, dataset.modalities, dataset.tile_shape, record, device)
    metrics = assemble_metrics(
        evaluation,
        dataset,
        method,
        record,
        efficiency,
        run=args.run_name,
        protocol=protocol,
        convention=config.convention,
        seed=args.seed,
        scenarios=scenarios,
    )
    out = args.out or metrics_file(args.dataset, args.run_name, args.seed, args.split)
    write_results(out, evaluation, indices, dataset, metrics)
    summary = metrics["summary"]
    print(
        f"{args.dataset} {args.run_name} seed{args.seed}: avg {summary['avg']:.2f}  top1 {summary['top1']:.2f}  "
        f"last1 {summary['last1']:.2f} mIoU -> {out}"
    )
    return 0


if __name__ == "__main__":
    errors.run(main)
