"""params.yaml validation (#2): every value is checked once, at load, into typed frozen objects;
each error is a ParamsError (a SkinSageError) naming the key and what is allowed.

The tests start from the repository's own params.yaml (read as plain YAML, changed, written to a
temporary file) so they keep working as knobs are added. Missing top-level `evaluate` and unsafe
YAML tags are covered in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest
import yaml

from skinsage.errors import SkinSageError
from skinsage.params import (MODEL_NAMES, CnnParams, Params, ParamsError, Resnet50Params, load_params,
                             params_from_dict)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def raw_params() -> dict:
    """The repository's params.yaml as plain YAML (no validation)."""
    return yaml.safe_load(PARAMS.read_text(encoding="utf-8"))


def write_params(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def refused(match: str, overrides: dict | None = None, path: Path = PARAMS) -> str:
    """Load with `overrides`, expect a ParamsError whose message matches; return the message."""
    with pytest.raises(ParamsError, match=match) as caught:
        load_params(path, overrides=overrides)
    return str(caught.value)


def test_params_error_is_a_skinsage_error():
    assert issubclass(ParamsError, SkinSageError) and issubclass(ParamsError, ValueError)


# --- the repository's params.yaml ------------------------------------------------------------

def _leaves(obj, prefix=""):
    """(dotted key, value, type hint) for every leaf field of a params dataclass."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value, key = getattr(obj, field.name), f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, key + ".")
        else:
            yield key, value, hints[field.name]


def _raw_value(raw: dict, dotted: str):
    for key in dotted.split("."):
        raw = raw[key]
    return raw


def _assert_typed(key, value, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        assert value in args, key
        assert type(value) is type(next(a for a in args if a == value)), key
    elif origin in (typing.Union, types.UnionType):  # Optional[str], or str | tuple[str, ...]
        assert value is None and type(None) in args or any(
            _is_typed(value, a) for a in args if a is not type(None)), key
    else:
        assert _is_typed(value, hint), (key, type(value), hint)  # bool is not an int here, int not a float


def _is_typed(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:  # a word inside a union: Union[float, Literal["auto"], None]
        return value in args and type(value) is type(next(a for a in args if a == value))
    if origin is tuple:  # tuple[int, ...]: lists in YAML become tuples (params stay frozen)
        return isinstance(value, tuple) and bool(value) and all(type(v) is args[0] for v in value)
    if origin is dict:  # data.csv.classes: keys and values as strings
        return isinstance(value, dict) and all(type(k) is args[0] and type(v) is args[1] for k, v in value.items())
    return type(value) is hint


def test_repository_params_load_with_every_value_typed_and_as_written():
    params = load_params(PARAMS)
    raw = raw_params()
    leaves = list(_leaves(params))
    assert len(leaves) >= 40  # every knob, not a handful
    for key, value, hint in leaves:
        _assert_typed(key, value, hint)
        written = _raw_value(raw, key)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if written is None or (optional and (written == [] or isinstance(written, str)
                                             and written.lower() in ("none", "null"))):
            assert value is None, key
        elif isinstance(written, bool) or isinstance(value, bool):
            assert value is written, key
        elif isinstance(written, (int, float)) or isinstance(value, (int, float)):
            assert float(value) == pytest.approx(float(written)), key  # e.g. learning_rate written 1e-3
        else:
            assert (list(value) if isinstance(value, tuple) else value) == written, key
    assert type(params.seed) is int and type(params.train.learning_rate) is float
    assert type(params.train.early_stopping.restore_best_weights) is bool
    assert params.model in MODEL_NAMES and params.image_size == params.model_params.image_size


@pytest.mark.parametrize("written", [None, "null", "None", "none"])
def test_null_resnet50_weights_become_none(tmp_path, written):
    raw = raw_params()
    raw["models"]["resnet50"]["weights"] = written
    assert load_params(write_params(tmp_path, raw)).models.resnet50.weights is None
    assert load_params(PARAMS, {"models.resnet50.weights": written}).models.resnet50.weights is None


def test_weights_path_is_kept_as_a_string():
    params = load_params(PARAMS, {"models.resnet50.weights": "weights/resnet50_notop.h5"})
    assert params.models.resnet50.weights == "weights/resnet50_notop.h5"


def test_missing_or_empty_file(tmp_path):
    refused(f"{re.escape(str(tmp_path / 'nope.yaml'))} not found: run from the project root",
            path=tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    refused("empty.yaml: expected a mapping of keys, got None", path=tmp_path / "empty.yaml")


# --- choices ----------------------------------------------------------------------------------

def test_unknown_model_lists_the_valid_ones():
    message = refused("model: 'vgg16' is not one of: cnn, resnet50$", {"model": "vgg16"})
    assert "did you mean" not in message
    refused(r"model: 'resnet' is not one of: cnn, resnet50 \(did you mean 'resnet50'\?\)", {"model": "resnet"})


def test_unknown_model_in_the_file(tmp_path):
    raw = raw_params()
    raw["model"] = "efficientnet"
    refused(r"params\.yaml\.model: 'efficientnet' is not one of: cnn, resnet50",
            path=write_params(tmp_path, raw))


@pytest.mark.parametrize("key, value, choices", [
    ("data.source", "folders", r"medmnist, folder, csv, synthetic \(did you mean 'folder'\?\)"),
    ("train.early_stopping.monitor", "accuracy", "val_loss, val_accuracy"),
    ("data.medmnist.size", 32, "auto, 28, 64, 128, 224"),
])
def test_other_choices_list_what_is_allowed(key, value, choices):
    refused(f"{re.escape(key)}: '{value}' is not one of: {choices}", {key: value})


def test_medmnist_size_as_a_string_becomes_the_number():
    assert load_params(PARAMS, {"data.medmnist.size": "64"}).data.medmnist.size == 64
    assert load_params(PARAMS, {"data.medmnist.size": "auto"}).data.medmnist.size == "auto"


# --- unknown keys -----------------------------------------------------------------------------

@pytest.mark.parametrize("typo, where, meant", [
    ("epochz", "train", "epochs"),
    ("learnig_rate", "train", "learning_rate"),
    ("batchsize", "train", "batch_size"),
    ("patiance", "train.early_stopping", "patience"),
])
def test_typo_in_the_file_suggests_the_key(tmp_path, typo, where, meant):
    raw = raw_params()
    section = _raw_value(raw, where)
    section[typo] = section.pop(meant)
    refused(rf"params\.yaml\.{re.escape(where)}: unknown key '{typo}'; did you mean '{meant}'\?",
            path=write_params(tmp_path, raw))


def test_typo_in_an_override_suggests_the_key():
    refused(r"params\.yaml\.train: unknown key 'epochz'; did you mean 'epochs'\?", {"train.epochz": 5})
    refused(r"params\.yaml: unknown key 'modle'; did you mean 'model'\?", {"modle": "cnn"})


def test_unknown_key_without_a_close_match_lists_the_valid_keys():
    message = refused(r"params\.yaml\.data\.split: unknown key 'zzz'; valid keys: val, test$",
                      {"data.split.zzz": 1})
    assert "did you mean" not in message


# --- numbers written as strings (dvc exp run -S) ---------------------------------------------

@pytest.mark.parametrize("written, pyyaml_reads", [
    ("1e-5", "1e-5"),      # what `dvc exp run -S train.learning_rate=1e-5` writes: a string to PyYAML
    ("'1e-5'", "1e-5"),
    ('"1E-5"', "1E-5"),
    ("1.0e-5", 1e-05),     # YAML 1.1 needs the dot for a float
])
def test_learning_rate_in_exponent_notation_loads_as_a_float(tmp_path, written, pyyaml_reads):
    text = PARAMS.read_text(encoding="utf-8")
    text, replaced = re.subn(r"^(  learning_rate:) *[^\s#]+", lambda m: f"{m[1]} {written}", text,
                             count=1, flags=re.M)
    assert replaced == 1
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert yaml.safe_load(text)["train"]["learning_rate"] == pyyaml_reads
    params = load_params(tmp_path / "params.yaml")
    assert type(params.train.learning_rate) is float and params.train.learning_rate == 1e-05


def test_learning_rate_as_a_string_in_overrides():
    lr = load_params(PARAMS, {"train.learning_rate": "1e-5"}).train.learning_rate
    assert type(lr) is float and lr == 1e-05
    fine_tune = load_params(PARAMS, {"models.resnet50.fine_tune.learning_rate": "3e-6"})
    assert fine_tune.models.resnet50.fine_tune.learning_rate == 3e-06


def test_whole_numbers_as_strings_or_floats_become_ints():
    params = load_params(PARAMS, {"train.epochs": "7", "train.batch_size": 32.0, "seed": "3"})
    assert (params.train.epochs, params.train.batch_size, params.seed) == (7, 32, 3)
    assert all(type(v) is int for v in (params.train.epochs, params.train.batch_size, params.seed))


# --- impossible values ------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", 0, "train.epochs: must be >= 1, got 0"),
    ("train.epochs", -5, "train.epochs: must be >= 1, got -5"),
    ("train.batch_size", 0, "train.batch_size: must be >= 1, got 0"),
    ("train.batch_size", -1, "train.batch_size: must be >= 1, got -1"),
    ("train.learning_rate", 0, "train.learning_rate: must be > 0, got 0.0"),
    ("train.learning_rate", "-1e-3", "train.learning_rate: must be > 0, got -0.001"),
    ("seed", -1, "seed: must be in 0..4294967295"),
    ("evaluate.batch_size", 0, "evaluate.batch_size: must be >= 1"),
    ("data.min_per_class", 0, "data.min_per_class: must be >= 1"),
    ("data.workers", -2, "data.workers: must be >= 0"),
    ("models.cnn.dropout", 1.0, "models.cnn.dropout: must be in [0, 1)"),
    ("models.resnet50.dense_units", 0, "models.resnet50.dense_units: must be >= 1"),
])
def test_impossible_number_is_refused_with_key_and_reason(key, value, message):
    refused(f"^{re.escape(message)}", {key: value})


@pytest.mark.parametrize("val, test, total", [(0.5, 0.5, "1"), (0.7, 0.4, "1.1"), (0.3, 0.9, "1.2")])
def test_split_fractions_summing_to_one_or_more_are_refused(val, test, total):
    refused(f"^data.split: val \\+ test = {re.escape(total)} leaves nothing to train on; their sum "
            "must be below 1$", {"data.split.val": val, "data.split.test": test})


def test_split_fractions_just_below_one_are_accepted():
    split = load_params(PARAMS, {"data.split.val": 0.49, "data.split.test": 0.5}).data.split
    assert (split.val, split.test) == (0.49, 0.5)


@pytest.mark.parametrize("val, test", [(0, 0.2), (0.1, 0), (-0.1, 0.2), (0.1, 1.0)])
def test_each_split_fraction_must_be_strictly_between_0_and_1(val, test):
    refused(r"^data\.split\.val and data\.split\.test: each must be between 0 and 1 \(exclusive\)$",
            {"data.split.val": val, "data.split.test": test})


# Allowed ranges (skinsage/params.py): cnn 16..512, resnet50 32..224 (ResNet50 needs 32 px).
@pytest.mark.parametrize("model, size, ok", [
    ("cnn", 15, False), ("cnn", 16, True), ("cnn", 512, True), ("cnn", 513, False), ("cnn", 0, False),
    ("resnet50", 31, False), ("resnet50", 32, True), ("resnet50", 224, True), ("resnet50", 225, False),
    ("resnet50", -224, False),
])
def test_image_size_range_per_model(model, size, ok):
    overrides = {"model": model, f"models.{model}.image_size": size}
    if ok:
        params = load_params(PARAMS, overrides)
        assert params.image_size == size and params.model_params.image_size == size
    elif model == "cnn":
        refused(r"^models\.cnn\.image_size: must be 16\.\.512$", overrides)
    else:
        refused(r"^models\.resnet50\.image_size: must be 32\.\.224 \(ResNet50 needs at least 32 px\)$",
                overrides)


def test_image_size_is_checked_for_the_model_not_selected_too():
    refused(r"^models\.resnet50\.image_size: must be 32\.\.224", {"model": "cnn",
                                                                 "models.resnet50.image_size": 16})


# --- missing sections and wrong types ---------------------------------------------------------

@pytest.mark.parametrize("dotted", ["data", "models", "train", "models.resnet50.fine_tune",
                                    "train.early_stopping.patience", "data.split.test", "seed"])
def test_missing_section_or_key_is_named(tmp_path, dotted):
    raw = raw_params()
    *parents, leaf = dotted.split(".")
    section = _raw_value(raw, ".".join(parents)) if parents else raw
    del section[leaf]
    where = re.escape(".".join(["params.yaml", *parents]))
    refused(f"{where}: missing key '{leaf}' \\(every knob must be set in params.yaml\\)$",
            path=write_params(tmp_path, raw))


@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", "ten", "train.epochs: expected int, got 'ten'"),
    ("train.epochs", 2.5, "train.epochs: expected int, got 2.5"),
    ("train.epochs", True, "train.epochs: expected int, got True"),
    ("train.batch_size", None, "train.batch_size: expected int, got None"),
    ("train.learning_rate", "fast", "train.learning_rate: expected float, got 'fast'"),
    ("train.learning_rate", [0.1], "train.learning_rate: expected float, got [0.1]"),
    ("train.early_stopping.restore_best_weights", "yes",
     "train.early_stopping.restore_best_weights: expected true or false, got 'yes'"),
    ("train.early_stopping.restore_best_weights", 1,
     "train.early_stopping.restore_best_weights: expected true or false, got 1"),
    ("models.cnn.filters", 32, "models.cnn.filters: expected a non-empty list, got 32"),
    ("models.cnn.filters", [], "models.cnn.filters: expected a non-empty list, got []"),
    ("models.cnn.filters", [32, "many"], "models.cnn.filters[1]: expected int, got 'many'"),
    ("train", 5, "train: expected a mapping of keys, got 5"),
    ("data.split", [0.1, 0.2], "data.split: expected a mapping of keys, got [0.1, 0.2]"),
])
def test_wrong_type_is_refused_with_key_and_value(key, value, message):
    refused(f"^{re.escape(str(PARAMS))}\\.{re.escape(message)}$", {key: value})


def test_wrong_type_in_the_file(tmp_path):
    raw = raw_params()
    raw["train"]["epochs"] = "thirty"
    refused(r"params\.yaml\.train\.epochs: expected int, got 'thirty'", path=write_params(tmp_path, raw))


# --- overrides --------------------------------------------------------------------------------

def test_override_switches_the_model_and_its_image_size():
    raw = raw_params()
    cnn_size, resnet_size = raw["models"]["cnn"]["image_size"], raw["models"]["resnet50"]["image_size"]
    assert cnn_size != resnet_size  # otherwise switching would prove nothing
    cnn = load_params(PARAMS, {"model": "cnn"})
    resnet = load_params(PARAMS, {"model": "resnet50"})
    assert cnn.model == "cnn" and isinstance(cnn.model_params, CnnParams)
    assert cnn.image_size == cnn_size == 28 and cnn.model_params is cnn.models.cnn
    assert resnet.model == "resnet50" and isinstance(resnet.model_params, Resnet50Params)
    assert resnet.image_size == resnet_size
    assert load_params(PARAMS, {"model": "cnn", "models.cnn.image_size": 64}).image_size == 64


def test_overrides_change_only_their_keys_and_not_the_file():
    before = PARAMS.read_bytes()
    base = load_params(PARAMS)
    changed = load_params(PARAMS, {"train.epochs": base.train.epochs + 3, "data.source": "synthetic"})
    assert changed.train.epochs == base.train.epochs + 3 and changed.data.source == "synthetic"
    assert dataclasses.replace(changed, data=base.data, train=base.train) == base
    assert PARAMS.read_bytes() == before


def test_params_from_dict_validates_the_same_way():
    raw = raw_params()
    assert params_from_dict(raw) == load_params(PARAMS)
    raw["train"]["epochs"] = 0
    with pytest.raises(ParamsError, match="train.epochs: must be >= 1, got 0"):
        params_from_dict(raw)


# --- validated once, then frozen ---------------------------------------------------------------

def test_params_are_frozen_after_validation():
    params = load_params(PARAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.epochs = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.model = "vgg16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.split.val = 0.9
    assert params.train.epochs >= 1 and params.model in MODEL_NAMES
    for cls in (Params, CnnParams, Resnet50Params):
        assert cls.__dataclass_params__.frozen, cls


# --- bugs found while writing these tests, now fixed ---------------------------------------

def test_filters_cannot_be_changed_after_validation():
    params = load_params(PARAMS, {"model": "cnn"})
    try:
        params.models.cnn.filters.append(0)  # a 0-filter conv block, never validated
    except (AttributeError, TypeError):
        return
    pytest.fail(f"filters changed after validation: {params.models.cnn.filters}")


def test_seed_beyond_numpy_range_is_refused_at_load():
    with pytest.raises(ParamsError, match="seed"):
        load_params(PARAMS, {"seed": 2**32})


def test_infinite_learning_rate_is_refused():
    with pytest.raises(ParamsError, match="train.learning_rate"):
        load_params(PARAMS, {"train.learning_rate": float("inf")})


def test_override_below_a_scalar_is_a_params_error():
    with pytest.raises(ParamsError, match="seed"):
        load_params(PARAMS, {"seed.x": 1})


@pytest.mark.parametrize("old, new, value", [
    ("models.cnn.metadata", "models.cnn.clinical", []),
    ("models.resnet50.metadata", "models.resnet50.clinical", ["age"]),
    ("data.csv.metadata", "data.csv.extra_csv", None),
])
def test_renamed_keys_say_what_to_rename(tmp_path, old, new, value):
    """An older workspace's params.yaml (or -S override) is told the new name, not 'unknown key'."""
    message = refused(re.escape(f"{old} was renamed to {new}: rename the key in params.yaml"), {old: value})
    raw = raw_params()
    *parents, leaf = new.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[old.rsplit(".", 1)[1]] = node.pop(leaf)
    with pytest.raises(ParamsError, match=re.escape(f"{old} was renamed to {new}")):
        load_params(write_params(tmp_path, raw))
    assert "unknown key" not in message


@pytest.mark.parametrize("written, expected", [("1.5", 1.5), ("2", 2.0), ("auto", "auto"), ("null", None)])
def test_a_number_or_auto_arrives_typed(tmp_path, written, expected):
    """`dvc exp run -S train.temperature=1.5` writes 1.5 into params.yaml: it arrives as the float
    1.5 (not the string '1.5' parsed again by each user), `auto` as 'auto', null as None."""
    raw = raw_params()
    raw["train"]["temperature"] = raw["train"]["logit_adjustment"]["tau"] = yaml.safe_load(written)
    p = load_params(write_params(tmp_path, raw))
    for value in (p.train.temperature, p.train.logit_adjustment.tau):
        assert value == expected and type(value) is type(expected)
    override = load_params(PARAMS, {"train.temperature": written}).train.temperature  # a string as typed
    assert override == expected and type(override) is type(expected)


def test_a_number_or_auto_refuses_anything_else():
    refused(re.escape("train.temperature: 'often' is not a number, auto or null"), {"train.temperature": "often"})
    refused(re.escape("train.logit_adjustment.tau: 'True' is not a number, auto or null"),
            {"train.logit_adjustment.tau": True})
    refused("train.temperature: must be in 0.05..20", {"train.temperature": 30})


def test_a_section_check_method_runs_at_load(monkeypatch):
    """How a new section gets its ranges checked: a `check(where)` method, called by the converter."""
    from skinsage import params as module

    def check(self, where):
        if self.patience > 10:
            raise ParamsError(f"{where}.patience: at most 10 here")
    monkeypatch.setattr(module.EarlyStoppingParams, "check", check, raising=False)
    refused(re.escape("params.yaml.train.early_stopping.patience: at most 10 here"),
            {"train.early_stopping.patience": 11})
    assert load_params(PARAMS, {"train.early_stopping.patience": 10}).train.early_stopping.patience == 10


def test_data_prepared_before_a_key_rename_still_matches(tmp_path):
    """labels.json of a folder prepared before data.csv.metadata became data.csv.extra_csv."""
    from skinsage.prepared import PreparedParamsError, check_prepared_params, prepare_params, save_labels

    params = load_params(PARAMS)
    recorded = {("data.csv.metadata" if key == "data.csv.extra_csv" else key): value
                for key, value in prepare_params(params).items()}
    save_labels(tmp_path, ["a", "b"], "x", params.image_size, "npz", {"prepare_params": recorded})
    check_prepared_params(params, tmp_path)  # no error
    with pytest.raises(PreparedParamsError, match="data.seed is 7 in params.yaml"):
        check_prepared_params(load_params(PARAMS, {"data.seed": 7}), tmp_path)
