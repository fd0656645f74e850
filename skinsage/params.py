"""params.yaml, validated once at load into typed, frozen objects.

Every knob lives in params.yaml; nothing else in the project parses YAML. Errors name the
offending key, say what is allowed and suggest the closest key for typos.

Three parts, in this order: the schema (frozen dataclasses whose type hints say what each key
takes: `Union[float, Literal["auto"], None]` is "a number, auto or null" and arrives as a float,
"auto" or None); the converter from YAML (`_build`, `_coerce`); the checks, all run at load by
`_check_values` (ranges per section, then the rules that tie sections together).

Adding a section (e.g. train.ood): write its frozen dataclass with typed fields (a comment each),
add it as a field of its parent (TrainParams.ood), add the keys with comments to params.yaml, and,
if it has ranges, a `check(self, where)` method raising ParamsError: `_build` calls it with the
section's name (e.g. "params.yaml.train.ood"). Cross-section rules go in `_check_rules`.
Callers read `params.train.ood.x`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from .errors import SkinSageError

MODEL_NAMES = ("cnn", "resnet50")
RESNET50_BLOCKS = 16  # residual blocks fine_tune.unfreeze may count (train/resnet50.residual_blocks)
MEDMNIST_SIZES = (28, 64, 128, 224)
# Upper bounds: values that pass the type check but would run for days, exhaust memory or overflow
# later (one bootstrap resample per loop, one array per class, ...). Generous for real use.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_BOOTSTRAP = 100_000
MAX_ECE_BINS = 1_000
MAX_SYNTHETIC_CLASSES = 1_000
MAX_SYNTHETIC_PER_CLASS = 100_000
MAX_WORKERS = 256
MAX_UNITS = 65_536          # dense units, conv filters
MAX_MIN_PER_CLASS = 1_000_000


class ParamsError(SkinSageError, ValueError):
    """params.yaml is missing, malformed or holds an impossible value."""


AUTO = Literal["auto"]  # `Union[float, AUTO, None]`: a number, auto or null


@dataclass(frozen=True)
class MedmnistParams:
    flag: str
    size: Literal["auto", 28, 64, 128, 224]
    path: str  # a directory to download into, or an .npz file in MedMNIST's layout to use as is


@dataclass(frozen=True)
class FolderGroupsParams:
    path: str    # a CSV with a row per image file
    id: str      # column with the file name (extension optional)
    group: str   # column with the lesion or patient id


@dataclass(frozen=True)
class FolderParams:
    path: str
    groups: Optional[FolderGroupsParams]  # None = no groups


CLINICAL_FIELDS = ("age", "sex", "site")  # the clinical data a model can take besides the image


@dataclass(frozen=True)
class ClinicalParams:
    """The CSV columns holding clinical data; None = the dataset has no such column."""
    age: Optional[str]             # age in years (HAM10000 `age`, ISIC `age_approx`)
    sex: Optional[str]
    site: Optional[str]            # anatomical site (HAM10000 `localization`, ISIC `anatom_site_general`)

    def columns(self) -> dict[str, str]:
        """field -> column, for the fields the dataset has."""
        return {name: getattr(self, name) for name in CLINICAL_FIELDS if getattr(self, name) is not None}


@dataclass(frozen=True)
class CsvParams:
    """Images in a folder, labels (and lesion or patient ids) in a CSV: how HAM10000 and ISIC ship."""
    path: str                      # the CSV, one row per image
    images: str                    # folder searched for the image files (any depth)
    id: str                        # column with the image id or file name (extension optional)
    label: Union[str, tuple[str, ...]]  # a column of class names, or a list of one-hot columns
    group: Optional[str]           # column of lesion/patient ids: no group in two splits; None = none
    extra_csv: Optional[str]       # optional second CSV joined on `id` (e.g. ISIC 2019's lesion_id)
    classes: Optional[dict[str, str]]  # rename/merge map {name in the CSV: class name}; None = as is
    exclude: Optional[tuple[str, ...]]  # labels (as in the CSV) whose rows are dropped, e.g. [UNK]; None = none
    clinical: Optional[ClinicalParams]  # columns of age, sex, anatomical site kept by `prepare`; None = none

    @property
    def one_hot(self) -> bool:
        return isinstance(self.label, tuple)


@dataclass(frozen=True)
class SyntheticParams:
    num_classes: int
    images_per_class: int


@dataclass(frozen=True)
class SplitParams:
    val: float
    test: float


@dataclass(frozen=True)
class DataParams:
    source: Literal["medmnist", "folder", "csv", "synthetic"]
    seed: int  # the split and generated images; apart from `seed`, so a new training seed keeps the test set
    medmnist: MedmnistParams
    folder: FolderParams
    csv: CsvParams
    synthetic: SyntheticParams
    split: SplitParams
    min_per_class: int
    workers: int
    store: Literal["npz", "shards", "auto"]  # how data/prepared holds the splits (skinsage/prepared.py)


@dataclass(frozen=True)
class AugmentParams:
    flip: bool           # random horizontal and vertical flips
    rotate90: bool       # random rotation by a multiple of 90 degrees
    rotation: float      # max random rotation in degrees, any angle (reflected borders); 0 = off
    zoom: float          # max random zoom in, as a fraction of the side; 0 = off
    brightness: float    # max brightness shift as a fraction of 255; 0 = off
    contrast: float      # max contrast change factor; 0 = off

    @property
    def enabled(self) -> bool:
        return self.flip or self.rotate90 or any(v > 0 for v in (self.rotation, self.zoom, self.brightness,
                                                                  self.contrast))


@dataclass(frozen=True)
class CnnParams:
    image_size: int
    color_constancy: Literal["none", "shades_of_gray"]  # per-image colour normalisation in the model
    filters: tuple[int, ...]  # one conv + max-pool block per entry (a tuple: params stay frozen)
    convs_per_block: int   # 3x3 convs before each max-pool (1 = the seed)
    batch_norm: bool       # BatchNormalization after each conv (before ReLU)
    stem_stride: int       # stride of the first conv: 2 quarters the compute at >= 64 px
    pooling: Literal["flatten", "average"]  # flatten (the seed) | global average pooling
    dense_units: int
    dropout: float
    augment: AugmentParams
    # clinical inputs beside the image (any of age, sex, site); None ([] in params.yaml) = image only
    clinical: Optional[tuple[Literal["age", "sex", "site"], ...]]


@dataclass(frozen=True)
class FineTuneParams:
    epochs: int          # 0 = keep the backbone frozen (head phase only)
    unfreeze: str        # how many top residual blocks (1..16), or the name of the first layer to train
    learning_rate: float


@dataclass(frozen=True)
class Resnet50Params:
    image_size: int
    weights: Optional[str]
    dense_units: int
    dropout: float
    augment: AugmentParams  # on: the head phase runs the backbone every epoch (no feature caching)
    fine_tune: FineTuneParams
    clinical: Optional[tuple[Literal["age", "sex", "site"], ...]]  # as in CnnParams


@dataclass(frozen=True)
class ModelsParams:
    cnn: CnnParams
    resnet50: Resnet50Params


@dataclass(frozen=True)
class EarlyStoppingParams:
    monitor: Literal["val_loss", "val_accuracy"]
    patience: int
    start_from_epoch: int  # no stopping (nor best-epoch tracking) before this epoch
    restore_best_weights: bool


@dataclass(frozen=True)
class LogitAdjustmentParams:
    tau: Union[float, AUTO, None]   # None/0 = off, a number, or "auto" (chosen on the validation split)
    objective: Literal["mean_accuracy", "balanced_accuracy"]  # what "auto" maximises
    max_accuracy_drop: Optional[float]  # "auto" keeps validation accuracy within this of tau = 0's

    @property
    def auto(self) -> bool:
        return self.tau == "auto"

    @property
    def fixed_tau(self) -> float:
        return 0.0 if self.tau is None or self.auto else self.tau


@dataclass(frozen=True)
class ReferralParams:
    """Which classes a clinician must see and how many of them the operating point must catch."""
    # names of the refer classes as any source may spell them (matched ignoring case and separators);
    # None = no referral
    classes: Optional[tuple[str, ...]]
    target_sensitivity: float  # share of the validation split's refer images the threshold refers


@dataclass(frozen=True)
class OodParams:
    method: Literal["feature_stats", "none"]  # feature_stats: model/ood.py; none = no detector
    retain: float        # share of validation lesions the threshold keeps (0.5..1)
    stages: int          # the last N resolution stages of the network scored (>= 1)


@dataclass(frozen=True)
class UncertainParams:
    coverage: Optional[float]  # share of in-distribution validation images answered `ok`; None = no band


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "adamw"]
    learning_rate: float
    weight_decay: float  # adamw only
    lr_schedule: Literal["constant", "cosine"]  # cosine: decays to 0 over `epochs`
    class_weight: Literal["none", "balanced", "sqrt"]
    loss: Literal["cross_entropy", "focal"]
    label_smoothing: float
    mixup: float         # Beta(alpha, alpha) mixing of training image pairs; 0 = off
    ema: float           # momentum of the weights' exponential moving average (per step); 0 = off
    early_stopping: EarlyStoppingParams
    logit_adjustment: LogitAdjustmentParams
    temperature: Union[float, AUTO, None]  # None = off (T = 1), a number, or "auto" (fitted on validation)
    ood: OodParams       # the out-of-distribution detector and its threshold
    uncertain: UncertainParams  # the "uncertain" band on the calibrated top probability
    mixed_precision: Literal["auto", "off", "on"]  # auto: mixed_float16 only when a GPU is visible
    distribute: Literal["auto", "none", "mirrored", "multi_worker"]  # tf.distribute strategy (train/distribute.py)
    referral: ReferralParams  # the referral operating point, fitted on validation (model/referral.py)


@dataclass(frozen=True)
class SubgroupParams:
    min_images: int              # a sex or site value with fewer test images gets no row of its own
    age_bands: tuple[int, ...]   # ascending edges in years: [30, 60] -> <30, 30-59, >=60


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    tta: Literal[TTA_CHOICES]  # flips: average the predictions of the 4 flipped variants
    bootstrap: int   # stratified bootstrap resamples for 95% CIs; 0 = no CIs
    ece_bins: int    # equal-width confidence bins of the calibration error and reliability curve
    subgroups: SubgroupParams  # per age band, sex and site, when the data has clinical metadata


TTA_CHOICES = ("none", "flips")  # test-time augmentation: evaluate.tta, the model file, --tta
EXPORT_TARGETS = ("litert", "litert_float16", "litert_int8", "onnx")  # what export.formats may list


@dataclass(frozen=True)
class ExportParams:
    # what the optional `export` stage writes to models/exported; None or [] = nothing (the default)
    formats: Optional[tuple[Literal[EXPORT_TARGETS], ...]]  # entries of skinsage/export/formats.TARGETS


@dataclass(frozen=True)
class Params:
    model: Literal["cnn", "resnet50"]
    seed: int
    data: DataParams
    models: ModelsParams
    train: TrainParams
    evaluate: EvaluateParams
    export: ExportParams

    @property
    def model_params(self) -> CnnParams | Resnet50Params:
        return getattr(self.models, self.model)

    @property
    def image_size(self) -> int:
        return self.model_params.image_size


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; `overrides` maps dotted keys to values (as `dvc exp run -S`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the project root or pass the path") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return params_from_dict(raw, source=str(path))


# Keys renamed since a workspace may have been written: old dotted key -> new one (one meaning per name).
RENAMED_KEYS = {**{f"models.{name}.metadata": f"models.{name}.clinical" for name in MODEL_NAMES},
                "data.csv.metadata": "data.csv.extra_csv"}


def params_from_dict(raw: dict, source: str = "params") -> Params:
    _refuse_renamed_keys(raw, source)
    params = _build(Params, raw, source)
    _check_values(params)
    return params


def csv_params_from_dict(raw: dict, where: str = "data.csv") -> CsvParams:
    """A data.csv description on its own (`skinsage evaluate` on a CSV of labels), with the checks
    params.yaml's gets."""
    c = _build(CsvParams, raw, where)
    _check_csv(c)
    return c


def _refuse_renamed_keys(raw, source: str) -> None:
    for old, new in RENAMED_KEYS.items():
        *parents, leaf = old.split(".")
        node = raw
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            raise ParamsError(f"{source}: {old} was renamed to {new}: rename the key in params.yaml "
                              f"(or the -S override)")


def _set_dotted(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for depth, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[:depth + 1])
            raise ParamsError(f"override {dotted}: '{where}' is a value ({node!r}), not a section")
    node[leaf] = value


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
        raise ParamsError(f"{where}: unknown key '{key}'{hint}")
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ParamsError(f"{where}: missing key '{missing[0]}' (every knob must be set in params.yaml)")
    built = cls(**{name: _coerce(hints[name], raw[name], f"{where}.{name}") for name in fields})
    if hasattr(built, "check"):  # a section's own ranges; `where` names it (source.dotted.key)
        built.check(where)
    return built


def _coerce(hint, value, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        return _coerce_choice(args, value, where)
    if origin is typing.Union:
        return _coerce_union(args, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ParamsError(f"{where}: expected a non-empty list, got {value!r}")
        return tuple(_coerce(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:  # keys as strings: YAML reads `0: benign` with an int key
        if not isinstance(value, dict) or not value:
            raise ParamsError(f"{where}: expected a non-empty mapping (name: value) or null, got {value!r}")
        return {str(_coerce(args[0], key, where)): _coerce(args[1], item, f"{where}.{key}")
                for key, item in value.items()}
    return _coerce_scalar(hint, value, where)


def _coerce_union(args, value, where: str):
    """Optional[X] takes YAML null or the words none/null (and, for an optional list, an empty
    list); Union[str, tuple] takes a list as the tuple and anything else as the string."""
    if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
                               or (isinstance(value, (list, tuple)) and not value)):
        return None
    members = [a for a in args if a is not type(None)]
    if isinstance(value, (list, tuple)):
        listed = [a for a in members if typing.get_origin(a) is tuple]
        if not listed:
            raise ParamsError(f"{where}: expected a single value, got the list {value!r}")
        return _coerce(listed[0], value, where)
    scalars = [a for a in members if typing.get_origin(a) is not tuple] or members
    if len(scalars) == 1:
        return _coerce(scalars[0], value, where)
    words = [a for a in scalars if typing.get_origin(a) is Literal]  # "auto" before the number
    for member in words + [a for a in scalars if a not in words]:
        try:
            return _coerce(member, value, where)
        except ParamsError:
            pass
    allowed = [_describe(a) for a in scalars] + (["null"] if type(None) in args else [])
    raise ParamsError(f"{where}: '{value}' is not {', '.join(allowed[:-1])} or {allowed[-1]}")


def _describe(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(str(choice) for choice in typing.get_args(hint))
    return {float: "a number", int: "a whole number", str: "a text", bool: "true or false"}[hint]


def _coerce_choice(choices, value, where: str):
    for choice in choices:
        if value == choice or (isinstance(choice, int) and str(value) == str(choice)):
            return choice
    listed = ", ".join(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ParamsError(f"{where}: '{value}' is not one of: {listed}{hint}")


def _coerce_scalar(kind, value, where: str):
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where}: expected true or false, got {value!r}")
    if isinstance(value, bool) or value is None:
        raise ParamsError(f"{where}: expected {kind.__name__}, got {value!r}")
    try:
        if kind is int:
            if isinstance(value, int):
                return value
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:  # PyYAML reads `1e-5` (written by `dvc exp run -S`) as a string
            number = float(value)
    except (TypeError, ValueError):
        raise ParamsError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    if kind is float:
        if not math.isfinite(number):
            raise ParamsError(f"{where}: must be a finite number, got {value!r}")
        return number
    return str(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ParamsError(message)


def _check_values(p: Params) -> None:
    _require(0 <= p.seed < 2**32, f"seed: must be in 0..{2**32 - 1} (NumPy's range), got {p.seed}")
    _require(0 <= p.data.seed < 2**32, f"data.seed: must be in 0..{2**32 - 1} (NumPy's range), got {p.data.seed}")
    d = p.data
    _require(d.synthetic.num_classes >= 2, "data.synthetic.num_classes: need at least 2 classes")
    _require(d.synthetic.images_per_class >= 3,
             "data.synthetic.images_per_class: need at least 3 (one per split)")
    _require(0 < d.split.val < 1 and 0 < d.split.test < 1,
             "data.split.val and data.split.test: each must be between 0 and 1 (exclusive)")
    _require(d.split.val + d.split.test < 1,
             f"data.split: val + test = {d.split.val + d.split.test:g} leaves nothing to train on;"
             " their sum must be below 1")
    _require(d.min_per_class >= 1, "data.min_per_class: must be >= 1")
    _require(d.workers >= 0, "data.workers: must be >= 0 (0 = one per CPU core)")
    _check_csv(d.csv)
    if d.folder.groups is not None:
        for key in ("path", "id", "group"):
            _require(bool(getattr(d.folder.groups, key).strip()), f"data.folder.groups.{key}: must not be empty")
    _require(16 <= p.models.cnn.image_size <= 512, "models.cnn.image_size: must be 16..512")
    _require(32 <= p.models.resnet50.image_size <= 224,
             "models.resnet50.image_size: must be 32..224 (ResNet50 needs at least 32 px)")
    for name in MODEL_NAMES:
        m = getattr(p.models, name)
        _require(m.dense_units >= 1, f"models.{name}.dense_units: must be >= 1")
        _require(0 <= m.dropout < 1, f"models.{name}.dropout: must be in [0, 1)")
    _check_cnn(p.models.cnn)
    t = p.train
    _require(t.epochs >= 1, f"train.epochs: must be >= 1, got {t.epochs}")
    _require(t.batch_size >= 1, f"train.batch_size: must be >= 1, got {t.batch_size}")
    _require(t.learning_rate > 0, f"train.learning_rate: must be > 0, got {t.learning_rate}")
    _require(t.early_stopping.patience >= 0, "train.early_stopping.patience: must be >= 0")
    _require(t.early_stopping.start_from_epoch >= 0, "train.early_stopping.start_from_epoch: must be >= 0")
    _require(t.weight_decay >= 0, "train.weight_decay: must be >= 0")
    _check_logit_adjustment(t.logit_adjustment)
    _check_temperature(t.temperature)
    _check_referral(t.referral)
    _require(0.5 <= t.ood.retain < 1, f"train.ood.retain: the share of validation lesions kept, in "
             f"[0.5, 1) (e.g. 0.95), got {t.ood.retain:g}")
    _require(t.ood.stages >= 1, f"train.ood.stages: the number of the network's last resolution stages "
             f"scored, >= 1 (e.g. 2), got {t.ood.stages}")
    _require(t.uncertain.coverage is None or 0 < t.uncertain.coverage <= 1,
             f"train.uncertain.coverage: the share of validation images answered ok, in (0, 1] (e.g. "
             f"0.9), or null for no uncertain band; got {t.uncertain.coverage}")
    _require(0 <= t.label_smoothing < 1, "train.label_smoothing: must be in [0, 1) (0 = off)")
    _require(0 <= t.mixup <= 1, "train.mixup: the Beta distribution's alpha, 0..1 (0 = off; 0.2 is usual)")
    _require(0 <= t.ema < 1, f"train.ema: the moving average's momentum per step, in [0, 1) (0 = off; "
             f"0.99 averages over ~100 steps), got {t.ema:g}")
    for model in MODEL_NAMES:
        a = getattr(p.models, model).augment
        for name in ("zoom", "brightness", "contrast"):
            _require(0 <= getattr(a, name) < 1, f"models.{model}.augment.{name}: must be in [0, 1) (0 = off)")
        _require(0 <= a.rotation <= 180, f"models.{model}.augment.rotation: degrees, 0..180 (0 = off)")
    _check_fine_tune(p.models.resnet50.fine_tune)
    formats = p.export.formats or ()
    _require(len(set(formats)) == len(formats), f"export.formats: a format is listed twice in {list(formats)}")
    _require(p.evaluate.batch_size >= 1, "evaluate.batch_size: must be >= 1")
    _require(p.evaluate.bootstrap >= 0, "evaluate.bootstrap: must be >= 0 (0 = no confidence intervals)")
    _require(p.evaluate.ece_bins >= 1, "evaluate.ece_bins: must be >= 1 (15 is the usual choice)")
    _check_subgroups(p.evaluate.subgroups)
    _check_upper_bounds(p)
    _check_rules(p)


def _check_rules(p: Params) -> None:
    """The rules that tie sections together, each next to a note of the code it protects."""
    d, t = p.data, p.train
    # skinsage/shards.py stores images and labels only (prepared.save_prepared refuses the rest)
    _require(not (d.store == "shards" and d.source == "csv" and d.csv.clinical is not None),
             "data.store: shards does not carry clinical data (data.csv.clinical) yet; use "
             "data.store: npz (auto picks npz then), or data.csv.clinical: null")
    # train/phase.make_optimizer passes weight_decay to AdamW only
    _require(t.weight_decay == 0 or t.optimizer == "adamw",
             "train.weight_decay: only used by optimizer adamw; set train.optimizer: adamw or weight_decay: 0")
    _check_clinical_inputs(p)


def _at_most(key: str, value: int, limit: int, advice: str = "") -> None:
    hint = f"; {advice}" if advice else ""
    _require(value <= limit, f"{key}: must be at most {limit:,}, got {value:,}{hint}")


def _check_upper_bounds(p: Params) -> None:
    """Sizes that would only fail much later, as a hang or an out-of-memory kill."""
    d, t, e = p.data, p.train, p.evaluate
    _at_most("data.synthetic.num_classes", d.synthetic.num_classes, MAX_SYNTHETIC_CLASSES)
    _at_most("data.synthetic.images_per_class", d.synthetic.images_per_class, MAX_SYNTHETIC_PER_CLASS)
    _at_most("data.min_per_class", d.min_per_class, MAX_MIN_PER_CLASS)
    _at_most("data.workers", d.workers, MAX_WORKERS, "0 uses one per CPU core")
    for name in MODEL_NAMES:
        _at_most(f"models.{name}.dense_units", getattr(p.models, name).dense_units, MAX_UNITS)
    _at_most("models.cnn.filters", max(p.models.cnn.filters), MAX_UNITS, "each entry is a filter count")
    _at_most("models.resnet50.fine_tune.epochs", p.models.resnet50.fine_tune.epochs, MAX_EPOCHS)
    _at_most("train.epochs", t.epochs, MAX_EPOCHS, "early stopping ends training when it stops improving")
    _at_most("train.batch_size", t.batch_size, MAX_BATCH_SIZE)
    _at_most("train.early_stopping.patience", t.early_stopping.patience, MAX_EPOCHS)
    _at_most("train.early_stopping.start_from_epoch", t.early_stopping.start_from_epoch, MAX_EPOCHS)
    _at_most("evaluate.batch_size", e.batch_size, MAX_BATCH_SIZE)
    _at_most("evaluate.bootstrap", e.bootstrap, MAX_BOOTSTRAP, "1000 is the usual choice")
    _at_most("evaluate.ece_bins", e.ece_bins, MAX_ECE_BINS, "15 is the usual choice")


def _check_csv(c: CsvParams) -> None:
    """Column names are checked against the CSV's header when it is read; their shape here."""
    for key in ("path", "images", "id"):
        _require(bool(getattr(c, key).strip()), f"data.csv.{key}: must not be empty")
    _require(c.group is None or bool(c.group.strip()), "data.csv.group: a column name, or null for none")
    if c.one_hot:
        _require(len(c.label) >= 2, "data.csv.label: a list names one-hot columns and needs at least 2; "
                 "for a single column of class names write it without brackets "
                 f"(label: {c.label[0] if c.label else 'dx'})")
        _require(len(set(c.label)) == len(c.label), f"data.csv.label: a column is listed twice in {list(c.label)}")
    else:
        _require(bool(c.label.strip()), "data.csv.label: a column name, or a list of one-hot columns")
    exclude = c.exclude or ()
    _require(len(set(exclude)) == len(exclude), f"data.csv.exclude: a name is listed twice in {list(exclude)}")
    if c.classes is not None:
        empty = [key for key, name in c.classes.items() if not name.strip()]
        _require(not empty, f"data.csv.classes: '{empty[0] if empty else ''}' maps to an empty class name")
        both = sorted(set(c.classes) & set(exclude))
        _require(not both, f"data.csv.classes and data.csv.exclude both name '{both[0] if both else ''}'; "
                 "keep it in one of them")
    _check_clinical(c.clinical)


def _check_clinical(c: Optional[ClinicalParams]) -> None:
    if c is None:
        return
    columns = c.columns()
    _require(bool(columns), "data.csv.clinical: name at least one column (age, sex, site), or set "
             "data.csv.clinical: null when the CSV has no clinical columns")
    for name, column in columns.items():
        _require(bool(column.strip()), f"data.csv.clinical.{name}: a column name, or null if the CSV has none")
    twice = [column for column in columns.values() if list(columns.values()).count(column) > 1]
    _require(not twice, f"data.csv.clinical: column '{twice[0] if twice else ''}' is given for two "
             "fields; each of age, sex and site needs its own column")


def _check_clinical_inputs(p: Params) -> None:
    """The selected model's clinical inputs must be fields `prepare` keeps (data.csv.clinical)."""
    key, wanted = f"models.{p.model}.clinical", p.model_params.clinical or ()
    _require(len(set(wanted)) == len(wanted), f"{key}: a field is listed twice in {list(wanted)}")
    if not wanted:
        return
    example = "e.g. {age: age, sex: sex, site: localization} for HAM10000"
    _require(p.data.source == "csv", f"{key}: {list(wanted)} needs clinical data, which only the csv "
             f"source carries (data.source is {p.data.source}); set data.source: csv and "
             f"data.csv.clinical ({example}), or {key}: [] for an image-only model")
    have = p.data.csv.clinical.columns() if p.data.csv.clinical else {}
    missing = [name for name in wanted if name not in have]
    _require(not missing, f"{key}: lists {', '.join(missing)} but data.csv.clinical names no column "
             f"for it; set data.csv.clinical.{missing[0] if missing else ''} ({example}) or remove it from {key}")
    _require(p.train.mixup == 0, f"train.mixup: mixup blends images but not clinical data ({key} is "
             f"{list(wanted)}); set train.mixup: 0 or {key}: []")


def _check_fine_tune(f: FineTuneParams) -> None:
    """Layer names are checked against the built model (skinsage.train.resnet50); counts here."""
    _require(f.epochs >= 0, "models.resnet50.fine_tune.epochs: must be >= 0 (0 = no fine-tuning)")
    _require(f.learning_rate > 0, "models.resnet50.fine_tune.learning_rate: must be > 0")
    _require(bool(f.unfreeze.strip()), "models.resnet50.fine_tune.unfreeze: a block count or a layer name")
    if f.unfreeze.strip().lstrip("-").isdigit():
        _require(1 <= int(f.unfreeze) <= RESNET50_BLOCKS, "models.resnet50.fine_tune.unfreeze: ResNet50 has "
                 f"{RESNET50_BLOCKS} residual blocks; give 1..{RESNET50_BLOCKS} (3 = the conv5 stage), "
                 f"got {f.unfreeze}")


def _check_cnn(c: CnnParams) -> None:
    _require(all(f >= 1 for f in c.filters), "models.cnn.filters: each must be >= 1")
    _require(c.stem_stride in (1, 2), "models.cnn.stem_stride: must be 1 or 2")
    _require(1 <= c.convs_per_block <= 3, "models.cnn.convs_per_block: must be 1..3 (1 = the seed)")
    smallest = c.image_size // c.stem_stride // 2 ** len(c.filters)
    _require(smallest >= 1, f"models.cnn: {len(c.filters)} pooling blocks (and stem_stride "
             f"{c.stem_stride}) shrink {c.image_size} px images to nothing; use fewer filters entries "
             "or a larger image_size")


def _check_logit_adjustment(a: LogitAdjustmentParams) -> None:
    _check_accuracy_drop(a)
    if a.tau is not None and not a.auto:
        _require(0 <= a.tau <= 5, f"train.logit_adjustment.tau: must be in 0..5 (0 = off), got {a.tau:g}")


def _check_temperature(value: float | str | None) -> None:
    if value is not None and value != "auto":
        _require(0.05 <= value <= 20, f"train.temperature: must be in 0.05..20 (1 = unchanged), got {value:g}")


def _check_referral(r: ReferralParams) -> None:
    """Names are matched against the data's classes by `train` (model/referral.py); their shape here."""
    _require(0 < r.target_sensitivity <= 1, "train.referral.target_sensitivity: the share of refer "
             f"images the threshold must catch, in (0, 1] (0.95 is usual), got {r.target_sensitivity:g}")
    if r.classes is None:
        return
    empty = [name for name in r.classes if not loose_name(name)]
    _require(not empty, f"train.referral.classes: {empty[0] if empty else ''!r} is not a class name "
             "(letters or digits needed)")
    seen: dict[str, str] = {}
    for name in r.classes:
        twice = seen.setdefault(loose_name(name), name)
        _require(twice == name, f"train.referral.classes: '{name}' and '{twice}' are the same name "
                 "(matching ignores case and separators); list it once")


def loose_name(name: str) -> str:
    """A class name compared ignoring case and separators: 'Basal cell carcinoma' =
    'basal_cell_carcinoma', 'MEL' = 'mel'. Used to match train.referral.classes to a dataset's."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def _check_subgroups(s: SubgroupParams) -> None:
    _require(s.min_images >= 1, f"evaluate.subgroups.min_images: must be >= 1 (e.g. 50), got {s.min_images}")
    bands = list(s.age_bands)
    _require(all(0 < a < 130 for a in bands) and bands == sorted(set(bands)),
             f"evaluate.subgroups.age_bands: ascending ages in years between 0 and 130, each once "
             f"(e.g. [30, 45, 60, 75]), got {bands}")


def _check_accuracy_drop(a: LogitAdjustmentParams) -> None:
    _require(a.max_accuracy_drop is None or 0 <= a.max_accuracy_drop <= 1,
             "train.logit_adjustment.max_accuracy_drop: null (no limit) or 0..1, e.g. 0.01")
