"""``pixel-forest``: a per-pixel scikit-learn random forest, one per modality subset (a floor).

Features of a pixel: every channel of the subset's modalities (standardised, as prepared) and its
``window x window`` local mean (zero padding left out of the mean), in the data set's modality
order. Training pixels: ``train_pixels`` labelled pixels drawn without replacement, seeded, from the
training tiles on which the run's protocol makes the subset available (every tile under
``complete``); every subset of a protocol draws from the same pixels when its tiles are the same.
One forest per subset: the honest default, since a forest trained on all modalities cannot be told
which are missing (docs/floors.md).

The fitted trees are kept as tensors (node arrays per subset) and rebuilt as scikit-learn trees on
first use, so ``model.pt`` holds no pickled object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from benchmark.methods import check_param, register_method
from benchmark.methods.floor import LOG_FLOOR, FloorMethod
from benchmark.protocol import enumerate_subsets, subset_name

#: The node arrays of a forest kept per subset (all trees concatenated) and the dtype each is stored
#: in. Thresholds are stored as float32 rounded down: for float32 features ``x <= t`` is then decided
#: exactly as against scikit-learn's float64 threshold.
NODE_FIELDS = {
    "left_child": torch.int32,
    "right_child": torch.int32,
    "feature": torch.int16,
    "threshold": torch.float32,
}
ARRAYS = (*NODE_FIELDS, "leaf_value", "node_count", "max_depth")


def pixel_features(inputs: Mapping[str, torch.Tensor], subset: Sequence[str], window: int) -> torch.Tensor:
    """Per-pixel features ``float32[B, F, H, W]`` of ``inputs`` (``{modality: float[B, C_m, H, W]}``):
    for each modality of ``subset`` in order, its channels, then their ``window``-px local means."""
    values = torch.cat([inputs[m].float() for m in subset], dim=1)
    if window <= 1:
        return values
    local = F.avg_pool2d(values, window, stride=1, padding=window // 2, count_include_pad=False)
    parts = []
    start = 0
    for m in subset:  # channels then local means, modality by modality
        c = inputs[m].shape[1]
        parts += [values[:, start : start + c], local[:, start : start + c]]
        start += c
    return torch.cat(parts, dim=1)


def sample_pixels(
    dataset: Dataset, tiles: Sequence[int], count: int, seed: int, ignore_index: int
) -> dict[int, np.ndarray]:
    """``count`` labelled pixels drawn without replacement (all of them if fewer) from ``tiles`` of
    ``dataset``: ``{tile: flat pixel indices, ascending}``, the same for the same arguments."""
    valid = []
    for tile in tiles:
        target = dataset[tile][1].numpy().reshape(-1)
        valid.append(np.flatnonzero(target != ignore_index))
    total = sum(len(v) for v in valid)
    if total == 0:
        raise ValueError("the training tiles hold no labelled pixel")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    bounds = np.cumsum([0] + [len(v) for v in valid])
    picked = {}
    for tile, v, lo, hi in zip(tiles, valid, bounds[:-1], bounds[1:]):
        mine = chosen[(chosen >= lo) & (chosen < hi)] - lo
        if len(mine):
            picked[tile] = v[mine]
    return picked


def training_pixels(
    dataset: Dataset, picked: Mapping[int, np.ndarray], modalities: Sequence[str], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32[P, F], labels int64[P])`` of the pixels ``picked`` (:func:`sample_pixels`),
    features of every modality in ``modalities`` (:func:`pixel_features`)."""
    features, labels = [], []
    for tile, flat in picked.items():
        inputs, target = dataset[tile]
        maps = pixel_features({m: inputs[m][None] for m in modalities}, modalities, window)[0]
        features.append(maps.reshape(maps.shape[0], -1)[:, flat].T.numpy())
        labels.append(target.reshape(-1)[flat].numpy())
    return np.concatenate(features).astype(np.float32), np.concatenate(labels).astype(np.int64)


def feature_columns(channels: Mapping[str, int], subset: Sequence[str], window: int) -> list[int]:
    """The columns of :func:`pixel_features` over every modality of ``channels`` that belong to ``subset``."""
    per_channel = 2 if window > 1 else 1
    columns, start = [], 0
    for m, c in channels.items():
        if m in subset:
            columns += range(start, start + per_channel * c)
        start += per_channel * c
    return columns


def round_down_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 value."""
    rounded = values.astype(np.float32)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def forest_arrays(forest: Any, num_classes: int) -> dict[str, torch.Tensor]:
    """A fitted ``RandomForestClassifier``'s trees as tensors: :data:`NODE_FIELDS` (every node of every
    tree), ``leaf_value float32[L, K]`` (each leaf's class fractions over all ``num_classes``, leaves in
    node order), ``node_count int64[T]`` and ``max_depth int64[T]``."""
    nodes = np.concatenate([e.tree_.__getstate__()["nodes"] for e in forest.estimators_])  # as pickling stores them
    values = np.concatenate([e.tree_.value[:, 0, :] for e in forest.estimators_])
    leaf = nodes["left_child"] == -1
    fractions = values[leaf] / np.maximum(values[leaf].sum(axis=1, keepdims=True), 1e-12)
    leaf_value = np.zeros((int(leaf.sum()), num_classes), np.float32)
    leaf_value[:, forest.classes_] = fractions
    arrays = {
        name: torch.from_numpy(np.ascontiguousarray(nodes[name])).to(dtype) for name, dtype in NODE_FIELDS.items()
    }
    arrays["threshold"] = torch.from_numpy(round_down_float32(nodes["threshold"]))
    arrays["leaf_value"] = torch.from_numpy(leaf_value)
    arrays["node_count"] = torch.tensor([e.tree_.node_count for e in forest.estimators_], dtype=torch.int64)
    arrays["max_depth"] = torch.tensor([e.tree_.max_depth for e in forest.estimators_], dtype=torch.int64)
    return arrays


def rebuild_trees(arrays: Mapping[str, torch.Tensor], num_features: int) -> list[Any]:
    """scikit-learn ``Tree`` objects from :func:`forest_arrays` (its inverse, for prediction; the node
    statistics prediction does not use are left 0)."""
    from sklearn.tree._tree import NODE_DTYPE, Tree

    known = {*NODE_FIELDS, "impurity", "n_node_samples", "weighted_n_node_samples", "missing_go_to_left"}
    unknown = [f for f in NODE_DTYPE.names if f not in known]
    if unknown:
        raise RuntimeError(f"this scikit-learn's tree nodes have fields {unknown} that pixel-forest does not know")
    fields = {name: arrays[name].numpy() for name in NODE_FIELDS}
    leaf_value = arrays["leaf_value"].double().numpy()
    num_classes = leaf_value.shape[1]
    trees, start, leaves = [], 0, 0
    for count, depth in zip(arrays["node_count"].tolist(), arrays["max_depth"].tolist()):
        nodes = np.zeros(count, dtype=NODE_DTYPE)
        for name, values in fields.items():
            nodes[name] = values[start : start + count]
        leaf = nodes["left_child"] == -1
        values = np.zeros((count, 1, num_classes), np.float64)
        values[leaf, 0] = leaf_value[leaves : leaves + int(leaf.sum())]
        tree = Tree(num_features, np.array([num_classes], dtype=np.intp), 1)
        tree.__setstate__({"max_depth": depth, "node_count": count, "nodes": nodes, "values": values})
        trees.append(tree)
        start, leaves = start + count, leaves + int(leaf.sum())
    return trees


@register_method("pixel-forest")
class PixelForest(FloorMethod):
    """Per-pixel random forest per subset (module docstring).

    Args:
        trees: number of trees.
        min_samples_leaf: scikit-learn's leaf size.
        train_pixels: training pixels drawn per subset (seeded).
        window: side in px of the local-mean feature (1: pixel values only).
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        num_classes: int,
        *,
        trees: int = 40,
        min_samples_leaf: int = 3,
        train_pixels: int = 20000,
        window: int = 5,
        **common: Any,
    ) -> None:
        super().__init__(modalities, num_classes, **common)
        for name, value, low in (
            ("trees", trees, 1),
            ("min_samples_leaf", min_samples_leaf, 1),
            ("train_pixels", train_pixels, 10),
            ("window", window, 1),
        ):
            check_param(
                name, value, isinstance(value, int) and not isinstance(value, bool) and value >= low, f"an int >= {low}"
            )
        check_param("window", window, window % 2 == 1, "odd (a centred window)")
        self.trees, self.min_samples_leaf, self.train_pixels, self.window = (
            trees,
            min_samples_leaf,
            train_pixels,
            window,
        )
        self._rebuilt: dict[str, list[Any]] = {}

    def fit(self, dataset: Dataset, available: torch.Tensor, seed: int) -> dict[str, float]:
        from sklearn.ensemble import RandomForestClassifier

        samples: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        sizes = []
        for index, subset in enumerate(enumerate_subsets(self.modalities)):
            columns = [self.modalities.index(m) for m in subset]
            tiles = tuple(int(t) for t in available[:, columns].all(dim=1).nonzero().flatten())
            if not tiles:
                raise ValueError(f"pixel-forest: the protocol never makes subset {subset_name(subset)} available")
            if tiles not in samples:  # the same tiles: the same pixels
                picked = sample_pixels(dataset, tiles, self.train_pixels, seed, self.ignore_index)
                samples[tiles] = training_pixels(dataset, picked, self.modalities, self.window)
            features, labels = samples[tiles]
            forest = RandomForestClassifier(
                n_estimators=self.trees,
                min_samples_leaf=self.min_samples_leaf,
                random_state=seed * 1000 + index,
                n_jobs=-1,
            )
            forest.fit(features[:, feature_columns(self.channels, subset, self.window)], labels)
            for key, value in forest_arrays(forest, self.num_classes).items():
                self.register_buffer(f"{subset_name(subset)}/{key}", value)
            sizes.append(len(labels))
        self._rebuilt.clear()
        return {"train_pixels": float(min(sizes)), "subsets": float(len(sizes))}

    def _trees(self, subset: Sequence[str]) -> list[Any]:
        name = subset_name(subset)
        if name not in self._rebuilt:
            arrays = {key: self.fitted(f"{name}/{key}").cpu() for key in ARRAYS}
            self._rebuilt[name] = rebuild_trees(arrays, len(feature_columns(self.channels, subset, self.window)))
        return self._rebuilt[name]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        self._rebuilt.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def class_probabilities(self, inputs: Mapping[str, torch.Tensor], subset: Sequence[str]) -> torch.Tensor:
        """The forest's class probabilities ``float32[B, K, H, W]`` (scikit-learn's ``predict_proba``)."""
        features = pixel_features(inputs, subset, self.window)
        b, f, h, w = features.shape
        x = np.ascontiguousarray(features.permute(0, 2, 3, 1).reshape(-1, f).cpu().numpy(), dtype=np.float32)
        trees = self._trees(subset)
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # Tree.predict releases the GIL
            proba = sum(pool.map(lambda tree: tree.predict(x).reshape(len(x), -1), trees)) / len(trees)
        out = torch.from_numpy(np.asarray(proba, np.float32)).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return out.to(features.device)

    def class_scores(self, inputs: Mapping[str, torch.Tensor], subset: Sequence[str]) -> torch.Tensor:
        return self.class_probabilities(inputs, subset).clamp_min(1e-12).log().clamp_min(LOG_FLOOR)
