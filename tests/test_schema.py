"""params.yaml validation: every kind of bad configuration is refused up front, naming the key,
the bad value and what is allowed; valid files pass; a refused file leaves nothing behind."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from tiny import REPO, TINY_PARAMS, write_params
from torch import nn

from benchmark import configure
from benchmark.config import (
    EvalConfig,
    ParamsError,
    ReportConfig,
    ScenarioConfig,
    Section,
    TrainConfig,
    from_mapping,
    load_params,
)
from benchmark.data.synthetic import Synthetic
from benchmark.layout import SCHEMA_FILE
from benchmark.protocol import builtin_protocol
from benchmark.schema import ValidatedParams, accepted_params, json_schema, load_config, validate_params
from benchmark.study import merge

WHERE = "cfg.yaml"


def mutated(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of ``base`` (default TINY_PARAMS) with dotted ``path`` set to ``value`` (sections
    created), or deleted when ``value`` is :data:`DELETE`."""
    params = copy.deepcopy(base or TINY_PARAMS)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


DELETE = object()


def moddrop(drop_prob: list[float], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` with a bernoulli protocol ``moddrop`` of ``drop_prob`` and the one run ``muss-moddrop``."""
    params = mutated("protocols", {"moddrop": {"kind": "bernoulli", "drop_prob": drop_prob}}, base)
    params["runs"], params["report"]["reference"] = ["muss-moddrop"], "muss-moddrop"
    return params


def staged(fraction: Any, first: str, then: str) -> dict[str, Any]:
    """TINY_PARAMS with a staged protocol ``half`` and the one run ``muss-half``."""
    params = mutated("protocols.half", {"kind": "staged", "fraction": fraction, "first": first, "then": then})
    params["runs"], params["report"]["reference"] = ["muss-half"], "muss-half"
    return params


def variant(entry: Any, name: str = "sgma-legacy", base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (default TINY_PARAMS) with ``variants: {name: entry}`` and the one run ``<name>-complete``."""
    params = mutated(f"variants.{name}" if isinstance(name, str) else "variants", entry, base)
    if isinstance(name, str):
        params["runs"], params["report"]["reference"] = [f"{name}-complete"], f"{name}-complete"
    return params


TWO_DATASETS = ["synthetic", "sen1floods11-sample"]  # 3 and 2 modalities
SAR = {**TINY_PARAMS["synthetic"], "with_sar": True}  # four modalities: rgb, dsm, nir, sar

# (kind, params, error type, strings the message must hold: the key, the value, what is allowed)
BAD = [
    (  # "did you mean" (difflib) for misspelt names: a run's method, a protocol, a data set, a top-level key
        "misspelt method of a run",
        mutated("runs", ["muss-uniform", "smga-complete"]),
        KeyError,
        ["runs[1]", "'smga-complete'", "method 'smga' is not registered", "did you mean 'sgma'?"],
    ),
    (
        "misspelt protocol of a run",
        mutated("runs", ["muss-unifrom"]),
        KeyError,
        ["runs[0]", "protocol 'unifrom'", "did you mean 'uniform'?"],
    ),
    (
        "misspelt data set",
        mutated("datasets", ["synthetc"]),
        KeyError,
        ["datasets[0]", "'synthetc'", "did you mean 'synthetic'?"],
    ),
    ("misspelt top-level key", mutated("trian", {}), KeyError, ["unknown key(s) ['trian']", "did you mean 'train'?"]),
    (
        "misspelt report reference",
        mutated("report.reference", "muss-unifrom"),
        ValueError,
        ["report.reference", "'muss-unifrom'", "did you mean 'muss-uniform'?"],
    ),
    (
        "unknown modality selected",
        mutated("synthetic.modalities", ["rgb", "lidar"]),
        ValueError,
        ["synthetic.modalities", "'lidar'", "modalities of synthetic: ['rgb', 'dsm', 'nir']"],
    ),
    (
        "duplicated modality selected",
        mutated("synthetic.modalities", ["dsm", "rgb", "dsm"]),
        ValueError,
        ["synthetic.modalities", "['dsm', 'rgb', 'dsm']", "repeats ['dsm']", "distinct"],
    ),
    (
        "empty modality set",
        mutated("synthetic.modalities", []),
        ValueError,
        ["synthetic.modalities", "[]", "non-empty"],
    ),
    (
        "scenario modality the selection left out",
        mutated("scenarios.modalities", ["nir"], mutated("synthetic.modalities", ["rgb", "dsm"])),
        ValueError,
        ["scenarios.modalities[0]", "'nir'", "synthetic has ['rgb', 'dsm']"],
    ),
    (
        "drop_prob for the unselected modalities too",
        moddrop([0.5, 0.5, 0.5], mutated("synthetic.modalities", ["rgb", "dsm"])),
        ValueError,
        ["protocols.moddrop.drop_prob", "[0.5, 0.5, 0.5]", "synthetic has 2 modalities"],
    ),
    (
        "unknown method",
        mutated("runs", ["muss-uniform", "nope-uniform"]),
        KeyError,
        ["runs[1]", "'nope-uniform'", "method 'nope'", "sgma, sgma-mas"],
    ),
    (
        "unknown protocol",
        mutated("runs", ["muss-uniform", "muss-moddrop"]),
        KeyError,
        ["runs[1]", "'muss-moddrop'", "protocol 'moddrop'", "complete, uniform, size_uniform, drop_one"],
    ),
    ("run without a protocol", mutated("runs", ["muss"]), ValueError, ["runs[0]", "'muss'", "<method>-<protocol>"]),
    (
        "the old methods key",
        mutated("methods", ["muss"], mutated("runs", DELETE)),
        KeyError,
        ["methods: replaced by runs", "muss-complete"],
    ),
    (
        "the old train.drop_prob",
        mutated("train.drop_prob", [0.5, 0.5, 0.5]),
        KeyError,
        ["train.drop_prob", "replaced by named training protocols", "kind: bernoulli"],
    ),
    (
        "protocol of an unknown kind",
        mutated("protocols", {"mine": {"kind": "dropout"}}),
        ValueError,
        ["protocols.mine.kind", "'dropout'", "'complete', 'uniform', 'bernoulli'"],
    ),
    (
        "protocol name with a dash",
        mutated("protocols", {"my-drop": {"kind": "uniform"}}),
        ValueError,
        ["protocols", "'my-drop'", "no -"],
    ),
    (
        "built-in protocol redefined",
        mutated("protocols", {"uniform": {"kind": "bernoulli", "drop_prob": [0.5, 0.5, 0.5]}}),
        ValueError,
        ["protocols.uniform", "built-in", "cannot be redefined"],
    ),
    (
        "protocol key of another kind",
        mutated("protocols", {"mine": {"kind": "uniform", "fraction": 0.5}}),
        KeyError,
        ["protocols.mine", "['fraction']", "kind 'uniform'", "['kind']"],
    ),
    (
        "bernoulli without drop_prob",
        mutated("protocols", {"mine": {"kind": "bernoulli"}}),
        KeyError,
        ["protocols.mine", "missing ['drop_prob']"],
    ),
    (
        "staged fraction of 1",
        staged(1.0, "complete", "uniform"),
        ValueError,
        ["protocols.half.fraction", "1.0", "a number in (0, 1)"],
    ),
    (
        "staged fraction of 0",
        staged(0, "complete", "uniform"),
        ValueError,
        ["protocols.half.fraction", "0", "a number in (0, 1)"],
    ),
    (
        "staged stage unknown",
        staged(0.5, "complete", "unifrom"),
        ValueError,
        ["protocols.half.then", "'unifrom'", "not staged", "complete, uniform"],
    ),
    (
        "staged inside staged",
        mutated(
            "protocols.twice",
            {"kind": "staged", "fraction": 0.5, "first": "half", "then": "uniform"},
            staged(0.5, "complete", "uniform"),
        ),
        ValueError,
        ["protocols.twice.first", "'half'", "not staged"],
    ),
    (
        "drop_prob of a staged protocol's stage",
        mutated("protocols.moddrop", {"kind": "bernoulli", "drop_prob": [0.5, 0.5]}, staged(0.5, "moddrop", "uniform")),
        ValueError,
        ["protocols.moddrop.drop_prob", "[0.5, 0.5]", "synthetic has 3"],
    ),
    (
        "staged switch at step 0",
        staged(0.01, "complete", "uniform"),  # round(0.01 * 6 steps) = 0: all uniform
        ValueError,
        ["protocols.half.fraction", "0.01", "train.steps: 6", "switches at step 0", "[1, 5]"],
    ),
    (
        "staged stage not a name",
        staged(0.5, ["complete"], "uniform"),
        ValueError,
        ["protocols.half.first", "['complete']", "not staged"],
    ),
    (
        "protocol named like the end of a method",
        mutated("protocols", {"mas": {"kind": "uniform"}}),
        ValueError,
        ["protocols.mas", "'sgma-mas'", "'sgma' under 'mas'"],
    ),
    (
        "a method listed as a run",
        mutated("runs", ["sgma-mas"]),
        ValueError,
        ["runs[0]", "'sgma-mas' is a method, not a run", "sgma-mas-complete"],
    ),
    (
        "ablation of one row",
        mutated("report.ablation", {"none": "muss"}),
        ValueError,
        ["report.ablation", "2+ rows"],
    ),
    (
        "unknown ablation method",
        mutated("report.ablation", {"none": "muss", "both": "sgmaa"}),
        KeyError,
        ["report.ablation", "'sgmaa'", "registered method"],
    ),
    (
        "variant of an unknown method",
        variant({"method": "sgmaa", "params": {}}),
        KeyError,
        ["variants.sgma-legacy.method", "'sgmaa'", "registered method"],
    ),
    (
        "variant with a bad parameter",
        variant({"method": "sgma", "params": {"residual": "no"}}),
        TypeError,
        ["variants.sgma-legacy.params.residual", "'no'", "true or false"],
    ),
    (
        "variant with an unknown parameter",
        variant({"method": "sgma", "params": {"residul": False}}),
        KeyError,
        ["variants.sgma-legacy.params", "'residul'", "allowed"],
    ),
    (
        "variant named like a registered method",
        variant({"method": "sgma", "params": {}}, name="sgma-mas"),
        ValueError,
        ["variants.sgma-mas", "registered method"],
    ),
    (
        "variant with an unknown key",
        variant({"method": "sgma", "parameters": {}}),
        KeyError,
        ["variants.sgma-legacy", "['method', 'params']"],
    ),
    (
        "protocol named like a variant's last part",
        mutated("protocols.legacy", {"kind": "complete"}, variant({"method": "sgma"})),
        ValueError,
        ["protocols.legacy", "'sgma-legacy'"],
    ),
    (
        "bad evaluation convention",
        mutated("evaluate.convention", "masked"),
        ValueError,
        ["evaluate.convention", "'masked'", "['mask', 'zero']"],
    ),
    ("unknown data set", mutated("datasets", ["synth"]), KeyError, ["datasets[0]", "'synth'", "potsdam, sen1floods11"]),
    ("empty data set list", mutated("datasets", []), ValueError, ["datasets", "[]", "non-empty list"]),
    ("repeated data set", mutated("datasets", ["synthetic"] * 2), ValueError, ["datasets", "'synthetic'", "once"]),
    ("runs not a list", mutated("runs", "muss-uniform"), TypeError, ["runs", "'muss-uniform'", "a non-empty list"]),
    (
        "unknown method module",
        mutated("method_modules", ["no_such_module_xyz"]),
        ValueError,
        ["method_modules[0]", "'no_such_module_xyz'", "importable module"],
    ),
    (
        "unknown modality",
        mutated("scenarios.modalities", ["rgb", "lidar"]),
        ValueError,
        ["scenarios.modalities[1]", "'lidar'", "['rgb', 'dsm', 'nir']"],
    ),
    (
        "duplicated modality",
        mutated("scenarios.modalities", ["nir", "rgb", "nir"]),
        ValueError,
        ["scenarios.modalities", "['nir', 'rgb', 'nir']", "repeats ['nir']", "distinct"],
    ),
    (
        "empty modality set",
        mutated("scenarios.modalities", []),
        ValueError,
        ["scenarios.modalities", "[]", "non-empty"],
    ),
    (
        "subset naming a modality the data set lacks",
        mutated("scenarios.modalities", ["sar"]),
        ValueError,
        ["scenarios.modalities[0]", "'sar'", "synthetic has ['rgb', 'dsm', 'nir']"],
    ),
    (
        "class count mismatch (method_params sets num_classes)",
        mutated("method_params.muss.num_classes", 5),
        ValueError,
        ["method_params.muss.num_classes", "5", "set by the data set", "'synthetic': 6"],
    ),
    (
        "method_params sets the modalities",
        mutated("method_params.muss.modalities", {"rgb": 3}),
        ValueError,
        ["method_params.muss.modalities", "{'rgb': 3}", "set by the data set"],
    ),
    (
        "drop_prob count != modalities",
        moddrop([0.1, 0.2, 0.3, 0.4]),
        ValueError,
        ["protocols.moddrop.drop_prob", "[0.1, 0.2, 0.3, 0.4]", "one probability per modality", "synthetic has 3"],
    ),
    (
        "drop_prob count of the second data set",
        moddrop([0.1, 0.2, 0.3], {**TINY_PARAMS, "datasets": TWO_DATASETS, TWO_DATASETS[1]: None}),
        ValueError,
        ["protocols.moddrop.drop_prob", "[0.1, 0.2, 0.3]", "sen1floods11-sample has 2 modalities ['s1', 's2']"],
    ),
    (
        "drop_prob of 1",
        moddrop([0.1, 1.0, 0.3]),
        ValueError,
        ["protocols.moddrop.drop_prob", "1.0", "[0, 1)"],
    ),
    ("zero steps", mutated("train.steps", 0), ValueError, ["train.steps", ": 0 ", "an int >= 1"]),
    ("negative batch size", mutated("train.batch_size", -2), ValueError, ["train.batch_size", "-2", "an int >= 1"]),
    ("zero decoder width", mutated("train.decoder_dim", 0), ValueError, ["train.decoder_dim", ": 0 ", "an int >= 1"]),
    ("zero checkpoint", mutated("train.checkpoint_every", 0), ValueError, ["train.checkpoint_every", ": 0 ", ">= 1"]),
    ("warm-up too long", mutated("train.warmup_steps", 6), ValueError, ["train.warmup_steps", ": 6 ", "[0, 6)"]),
    ("zero lr", mutated("train.lr", 0.0), ValueError, ["train.lr", "0.0", "> 0"]),
    ("nan lr", mutated("train.lr", float("nan")), ValueError, ["train.lr", "nan", "finite"]),
    ("bad device", mutated("train.device", "gpu"), ValueError, ["train.device", "'gpu'", "'cuda:<index>'"]),
    ("zero eval batch", mutated("evaluate.batch_size", 0), ValueError, ["evaluate.batch_size", ": 0 ", "an int >= 1"]),
    ("zero tile size", mutated("synthetic.tile_size", 0), ValueError, ["synthetic.tile_size", ": 0 ", "an int >= 1"]),
    ("negative test tiles", mutated("synthetic.num_test", -1), ValueError, ["synthetic.num_test", "-1", ">= 1"]),
    ("zero train tiles", mutated("synthetic.num_train", 0), ValueError, ["synthetic.num_train", ": 0 ", ">= 1"]),
    (
        "zero stride of an unlisted data set",
        mutated("sen1floods11.stride", 0),
        ValueError,
        ["sen1floods11.stride", ": 0 ", "an int >= 1"],
    ),
    ("negative data seed", mutated("synthetic.seed", -1), ValueError, ["synthetic.seed", "-1", "an int >= 0"]),
    ("negative split seed", mutated("dfc2023.split_seed", -2), ValueError, ["dfc2023.split_seed", "-2", ">= 0"]),
    ("zero block size", mutated("scenarios.block_size", 0), ValueError, ["scenarios.block_size", ": 0 ", ">= 1"]),
    ("missing train", mutated("train", DELETE), KeyError, ["train: missing", "'datasets', 'runs', 'seeds'"]),
    ("missing seeds", mutated("seeds", DELETE), KeyError, ["seeds: missing", "required"]),
    (
        "missing data set section",
        mutated("synthetic", DELETE),
        KeyError,
        ["synthetic: missing", "null for its defaults"],
    ),
    ("missing method entry", mutated("method_params", {}), KeyError, ["method_params.muss: missing", "muss: {}"]),
    ("unknown top-level key", mutated("evaluation", {}), KeyError, ["['evaluation']", "'evaluate'", "vaihingen"]),
    ("unknown train key", mutated("train.stepz", 3), KeyError, ["train", "['stepz']", "'steps'"]),
    (
        "unknown method parameter",
        mutated("method_params.muss.lamda", 1.0),
        KeyError,
        ["method_params.muss", "['lamda']", "'decoder_dim'"],
    ),
    (
        "method parameter of the wrong type",
        mutated("method_params.sgma.lambda_sgf", "two", mutated("runs", ["muss-uniform", "sgma-uniform"])),
        TypeError,
        ["method_params.sgma.lambda_sgf", "'two'", "a number"],
    ),
    ("wrong type", mutated("train.lr", "fast"), TypeError, ["train.lr", "'fast'", "must be a number"]),
    ("1e-3 read as text", mutated("train.lr", "1e-3"), TypeError, ["train.lr", "'1e-3'", "write 0.001"]),
    ("section not a mapping", mutated("evaluate", [4]), TypeError, ["evaluate", "[4]", "a mapping"]),
    ("data set section not a mapping", mutated("synthetic", 5), TypeError, ["synthetic", "5", "a mapping"]),
    ("negative seed", mutated("seeds", [0, -3]), ValueError, ["seeds[1]", "-3", "an int >= 0"]),
    ("boolean seed", mutated("seeds", [True]), TypeError, ["seeds[0]", "True", "an int"]),
    (
        "reference not listed",
        mutated("report.reference", "sgma"),
        ValueError,
        ["report.reference", "'sgma'", "['muss-uniform']"],
    ),
    ("bad confidence", mutated("report.confidence", 1.5), ValueError, ["report.confidence", "1.5", "(0, 1)"]),
    (
        "level out of range",
        mutated("scenarios.pixel_missing", [0.5, 2.0]),
        ValueError,
        ["pixel_missing", "2.0", "(0, 1]"],
    ),
]


@pytest.mark.parametrize(("kind", "params", "error", "names"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_key_value_and_allowed(kind, params, error, names) -> None:
    with pytest.raises(error) as info:
        validate_params(params, WHERE)
    assert isinstance(info.value, ParamsError)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: "), message
    for name in names:
        assert name in message, (kind, name, message)


def test_palette_of_the_wrong_length_is_a_class_count_mismatch(monkeypatch) -> None:
    monkeypatch.setattr(Synthetic, "palette", ("#000000",) * 5)
    with pytest.raises(ValueError, match=r"synthetic: palette .* has 5 colours for 6 classes .*one colour per class"):
        validate_params(TINY_PARAMS, WHERE)


def test_source_errors_are_located_in_the_file() -> None:
    """A data set's own check (here synthetic's tile_size >= 16) names this file, not 'params.yaml'."""
    with pytest.raises(ValueError, match=rf"^{WHERE}: synthetic: need tile_size >= 16"):
        validate_params(mutated("synthetic.tile_size", 8), WHERE)
    with pytest.raises(KeyError, match=rf"^{WHERE}: dfc2023: unknown key\(s\) \['tilesize'\]"):
        validate_params(mutated("dfc2023", {"tilesize": 16}), WHERE)


def test_valid_files_pass_with_typed_values() -> None:
    checked = validate_params(TINY_PARAMS, WHERE)
    assert isinstance(checked, ValidatedParams)
    assert (checked.datasets, checked.runs, checked.methods, checked.seeds) == (
        ["synthetic"],
        ["muss-uniform"],
        ["muss"],
        [0],
    )
    assert checked.train == TrainConfig(**TINY_PARAMS["train"])
    assert checked.evaluate == EvalConfig(batch_size=4) and checked.scenarios == ScenarioConfig(
        **TINY_PARAMS.get("scenarios", {})
    )
    assert checked.report == ReportConfig(reference="muss-uniform", bootstrap_samples=200)
    assert list(checked.sources) == ["synthetic"] and checked.sources["synthetic"].config.num_train == 16
    assert checked.method_params == {"muss": {}}

    shipped = load_params(REPO / "params.yaml")
    checked = validate_params(shipped, "params.yaml")
    assert checked.runs == shipped["runs"] and checked.report.reference == "sgma-complete"
    assert checked.run_parts("sgma-uniform") == ("sgma", builtin_protocol("uniform"))
    assert checked.protocols["shaspec"].record() == {
        "name": "shaspec",
        "kind": "staged",
        "fraction": 0.5,
        "first": {"name": "complete", "kind": "complete"},
        "then": {"name": "size_uniform", "kind": "size_uniform"},
    }

    sar = validate_params(moddrop([0.5] * 4, {**TINY_PARAMS, "synthetic": SAR}), WHERE)
    assert sar.protocols["moddrop"].drop_prob == (0.5,) * 4
    unused = validate_params(mutated("protocols", {"moddrop": {"kind": "bernoulli", "drop_prob": [0.5]}}), WHERE)
    assert unused.protocols["moddrop"].drop_prob == (0.5,)  # checked against the data sets only when a run uses it
    assert list(sar.sources["synthetic"].modalities) == ["rgb", "dsm", "nir", "sar"]
    subset = validate_params(mutated("scenarios.modalities", ["sar", "rgb"], {**TINY_PARAMS, "synthetic": SAR}), WHERE)
    assert subset.scenarios.modalities == ["sar", "rgb"]
    null_section = validate_params({**TINY_PARAMS, "synthetic": None, "method_params": {"muss": None}}, WHERE)
    assert null_section.sources["synthetic"].config.num_train == 200 and null_section.method_params == {"muss": {}}


def test_variants_run_their_registered_method_with_their_own_params() -> None:
    params = variant({"method": "sgma", "params": {"residual": False, "zero_init": False}})
    params["runs"].append("sgma-complete")
    params["method_params"]["sgma"] = {"lambda_mas": 0.5}
    params["report"]["ablation"] = {"legacy": "sgma-legacy", "default": "sgma"}
    checked = validate_params(params, WHERE)
    assert checked.methods == ["sgma-legacy", "sgma"] and "sgma-legacy" not in checked.method_params
    assert checked.method_spec("sgma-legacy") == ("sgma", {"residual": False, "zero_init": False})  # nothing inherited
    assert checked.method_spec("sgma") == ("sgma", {"lambda_mas": 0.5})
    assert checked.run_parts("sgma-legacy-complete")[0] == "sgma-legacy"
    base = load_params(REPO / "params.yaml")
    for study in sorted((REPO / "studies").glob("*.yaml")):  # the shipped studies, merged, are valid files
        assert validate_params(merge(base, load_params(study), str(study))[0], str(study)).runs


def test_per_method_train_overrides_and_subclass_parameters_pass() -> None:
    """method_params may override the train section's architecture (decoder_dim) for one method,
    and a subclass's own parameters plus those it passes on through ``**kwargs`` are accepted."""
    params = mutated("method_params", {"muss": {"decoder_dim": 8}, "sgma-mas": {"lambda_score": 2, "head_dim": 32}})
    params["runs"] = ["muss-uniform", "sgma-mas-complete"]
    assert validate_params(params, WHERE).method_params["sgma-mas"] == {"lambda_score": 2, "head_dim": 32}


def test_accepted_params_follow_kwargs_up_the_hierarchy() -> None:
    class Base(nn.Module):
        def __init__(self, modalities: dict, num_classes: int, *, width: int = 4) -> None:
            super().__init__()

    class Child(Base):
        def __init__(self, modalities: dict, num_classes: int, *, scale: float = 1.0, **kwargs) -> None:
            super().__init__(modalities, num_classes, **kwargs)

    class Own(nn.Module):  # keeps its **kwargs itself: anything goes
        def __init__(self, modalities: dict, num_classes: int, **options) -> None:
            super().__init__()

    names, open_ = accepted_params(Child)
    assert (sorted(names), open_) == (["modalities", "num_classes", "scale", "width"], False)
    assert names["scale"] is float and names["width"] is int
    assert accepted_params(Base)[1] is False and accepted_params(Own)[1] is True


def test_duplicated_yaml_keys_are_refused_with_their_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(TINY_PARAMS, sort_keys=False)
    lines = text.splitlines()
    first = lines.index("train:") + 2  # 1-based line of the first key under train
    key = lines[first - 1].strip().split(":")[0]
    lines.insert(first, f"  {key}: 99")  # the same key again on the next line
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        load_params(path)
    message = str(info.value)
    assert re.search(rf"line {first + 1}: key '{key}' is duplicated \(first on line {first}\)", message), message
    assert message.startswith(str(path)) and "each key once" in message

    modalities = tmp_path / "modalities.yaml"
    no_scenarios = yaml.safe_dump({k: v for k, v in TINY_PARAMS.items() if k != "scenarios"}, sort_keys=False)
    modalities.write_text(no_scenarios + "scenarios:\n  modalities: [rgb]\n  block_size: 4\n  modalities: [nir]\n")
    with pytest.raises(ValueError, match=r"key 'modalities' is duplicated"):
        load_params(modalities)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("datasets: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not valid YAML"):
        load_params(path)
    path.write_text("- a list\n")
    with pytest.raises(TypeError, match="at the top level is not allowed; must be a mapping"):
        load_params(path)


def test_load_params_only_reads_and_load_config_checks_the_whole_file(tmp_path: Path) -> None:
    partial = write_params(tmp_path / "params.yaml", {"synthetic": {"num_train": 4}})
    assert load_params(partial) == {"synthetic": {"num_train": 4}}
    with pytest.raises(KeyError, match=rf"{re.escape(str(partial))}: datasets: missing"):
        load_config(partial)


def test_from_mapping_types_literals_and_messages() -> None:
    class Cfg(Section):
        mode: Literal["fast", "slow"] = "fast"
        ratio: float = 0.5
        sizes: list[int] | None = None

    assert from_mapping(Cfg, {"mode": "slow", "ratio": 1}, "f: cfg") == Cfg(mode="slow", ratio=1.0)
    assert isinstance(from_mapping(Cfg, {"ratio": 1}, "f: cfg").ratio, float)
    with pytest.raises(TypeError, match=r"^f: cfg.mode: 'medium' is not allowed; must be one of \['fast', 'slow'\]$"):
        from_mapping(Cfg, {"mode": "medium"}, "f: cfg")
    with pytest.raises(TypeError, match=r"^f: cfg.sizes: \[1, 2.5\] is not allowed; must be a list of ints or null$"):
        from_mapping(Cfg, {"sizes": [1, 2.5]}, "f: cfg")
    with pytest.raises(TypeError, match=r"^f: cfg: 'fast' is not allowed; must be a mapping"):
        from_mapping(Cfg, "fast", "f: cfg")


def test_config_checks_name_the_section_when_built_directly() -> None:
    with pytest.raises(ValueError, match=r"^train.batch_size: 0 is not allowed; must be an int >= 1$"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"^scenarios.seed: -1 is not allowed; must be an int >= 0$"):
        ScenarioConfig(seed=-1)


def test_configure_stage_on_a_bad_file_writes_nothing(tmp_path: Path) -> None:
    """num_classes in method_params would silently train a 7-class model without the schema; the
    configure stage (the first of dvc repro, what every run stage reads) refuses it."""
    params = write_params(tmp_path / "params.yaml", mutated("method_params.muss.num_classes", 7))
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(params))}: method_params.muss.num_classes: 7 is not allowed"
    ):
        configure.main(["--params", str(params), "--out", str(tmp_path / "configs")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_the_shipped_json_schema_is_current_and_holds_the_shipped_files(capsys) -> None:
    """params.schema.json is what configure --schema prints (rewrite it with that command after
    changing a section); params.yaml and every study merged into it pass it, and params.yaml's
    first line points an editor at it."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency (pip install -e '.[test]')")
    assert configure.main(["--schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    shipped = json.loads((REPO / SCHEMA_FILE).read_text())
    assert printed == shipped, f"{SCHEMA_FILE} is stale: python -m benchmark.configure --schema > {SCHEMA_FILE}"
    jsonschema.Draft202012Validator.check_schema(shipped)
    validator = jsonschema.Draft202012Validator(shipped)
    base = load_params(REPO / "params.yaml")
    for path in [REPO / "params.yaml", *sorted((REPO / "studies").glob("*.yaml"))]:
        params = base if path.name == "params.yaml" else merge(base, load_params(path), str(path))[0]
        errors = [e.message for e in validator.iter_errors(params)]
        assert not errors, (path, errors)
    header = (REPO / "params.yaml").read_text().splitlines()[0]  # a study, an overlay, lacks required keys
    assert header.startswith("# yaml-language-server: $schema=") and header.endswith(SCHEMA_FILE.name)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("train.lr", "1e-3"),  # YAML text, not a number
        ("train.steps", 0),
        ("train.stepz", 3),  # unknown key
        ("train.augment", 1),  # an int is no boolean
        ("train.precision", "fp16"),
        ("synthetic.tile_size", 0),
        ("dfc2023.test_fraction", 1.0),
        ("protocols", {"moddrop": {"kind": "bernoulli", "drop_prob": [1.5]}}),
        ("seeds", [-1]),
        ("evaluation", {}),  # unknown section
    ],
)
def test_the_json_schema_refuses_what_the_models_refuse(path: str, value: Any) -> None:
    """An editor flags these while they are typed, as configure does when it runs."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency (pip install -e '.[test]')")
    bad = mutated(path, value, load_params(REPO / "params.yaml"))
    assert list(jsonschema.Draft202012Validator(json_schema()).iter_errors(bad)), path
    with pytest.raises(ParamsError):
        validate_params(bad, WHERE)


def test_unknown_keys_are_named_before_bad_values_and_all_at_once() -> None:
    """A misspelt key explains the bad values around it: it is reported first, with every unknown
    key of its mapping; then missing keys; then the first bad value in the file's model order."""
    params = mutated("train.lr", "fast", mutated("train.stepz", 3, mutated("train.augmnt", True)))
    with pytest.raises(
        KeyError, match=r"^cfg.yaml: train: unknown key\(s\) \['augmnt', 'stepz'\]; allowed: .*did you mean 'augment'\?"
    ):
        validate_params(params, WHERE)
    with pytest.raises(KeyError, match=r"^cfg.yaml: unknown key\(s\) \['evaluation'\]"):
        validate_params(mutated("evaluation", {}, mutated("train.lr", "fast")), WHERE)
    with pytest.raises(KeyError, match=r"^cfg.yaml: seeds: missing"):
        validate_params(mutated("seeds", DELETE, mutated("train.lr", "fast")), WHERE)
    with pytest.raises(TypeError, match=r"^cfg.yaml: seeds\[0\]: 'a' is not allowed; must be an int$"):
        validate_params(mutated("seeds", ["a"], mutated("train.lr", "fast")), WHERE)  # seeds come before train


def test_every_key_of_the_json_schema_has_its_description() -> None:
    """What an editor shows on hover: each field's comment in the code, each section's summary."""
    schema = json_schema()
    models = [("params.yaml", schema), *schema["$defs"].items()]
    undescribed = [
        f"{name}.{key}"
        for name, model in models
        for key, prop in model.get("properties", {}).items()
        if not prop.get("description", "").strip()
    ]
    assert not undescribed, f"add a comment to each field: {undescribed}"
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["warmup_start"]["description"] == "the warm-up's first lr, as a fraction of lr"
    ablation = schema["$defs"]["ReportConfig"]["properties"]["ablation"]["description"]
    assert ablation.startswith("rows of the ablation table") and ablation.endswith("SGMA's none / SGF / MAS / both)")
    assert (
        schema["properties"]["train"]["description"]
        == "Training recipe shared by every method (params.yaml ``train``)."
    )
