"""The `skinsage` command (also `python -m skinsage`): predict, explain, evaluate, info, export, serve.

Parsing and printing only: the work and its rules are in `Classifier` (classifier.py, including
which clinical data a model needs), files.py, evaluation_data.py, the evaluate stage's scoring and
export.convert.export_files, all through the model's one inference path.
Errors are printed as `error: ...` with exit status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..errors import SkinSageError, print_error
from ..params import MAX_BATCH_SIZE, MAX_BOOTSTRAP, TTA_CHOICES

DEFAULT_MODEL = "models/model.keras"
EXPLANATIONS_FILE = "explanations.json"


def main(argv: list[str] | None = None) -> int:
    from ..log import configure

    args = build_parser().parse_args(argv)
    configure(args.verbose - args.quiet)
    try:
        return args.run(args)
    except SkinSageError as err:
        print_error(err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `skinsage predict ... | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skinsage", description=(
        "Use a trained SkinSage model. Class names and input size come from the model file. "
        "Not for clinical decisions."))
    parser.add_argument("--version", action="version", version=f"skinsage {__version__}")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="errors only: no messages, warnings or progress bars")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="classify images or folders of images",
                                  description="Classify image files; folders are searched recursively.")
    _images_options(predict)
    predict.add_argument("--format", choices=("table", "json", "csv"), help=(
        "table for people; json or csv for programs (default: table on a terminal, json otherwise)"))
    predict.add_argument("--batch-size", type=_batch_size, default=32, help="images per forward pass")
    _tta_option(predict)
    clinical = predict.add_argument_group("clinical data (models trained with models.<model>.clinical)")
    clinical.add_argument("--clinical", metavar="FILE.csv", help=(
        "a row per image: its file name (extension optional) in a column 'image' (or image_id, "
        "image_name, file, filename, path, or the training id column), then age, sex, site (or the "
        "training CSV's column names, e.g. localization); empty or 'unknown' when not known"))
    clinical.add_argument("--metadata", dest="renamed_metadata", help=argparse.SUPPRESS)  # the old name
    clinical.add_argument("--age", help="age in years of the patient in a single image")
    clinical.add_argument("--sex", help="sex of the patient in a single image")
    clinical.add_argument("--site", help="anatomical site of the lesion in a single image")
    predict.set_defaults(run=run_predict)

    explain = commands.add_parser("explain", help="Grad-CAM heat maps: where the model looked",
                                  description=(
        "Grad-CAM (Selvaraju et al. 2017) of the model's last convolutional block, for the predicted "
        "class or --class, overlaid on each photo: writes <name>_gradcam.png per image and "
        f"{EXPLANATIONS_FILE} (top-k classes per image) to --out."))
    _images_options(explain)
    explain.add_argument("--out", required=True, help="folder for the overlays and the JSON")
    explain.add_argument("--class", dest="class_name", metavar="NAME",
                         help="explain this class instead of the predicted one")
    _tta_option(explain)
    explain.set_defaults(run=run_explain)

    evaluate = commands.add_parser("evaluate", help="metrics of the model on labelled images",
                                   description=(
        "The evaluate stage's metrics on labelled data: a folder with one sub-folder per class "
        "(matched to the model's class names), a CSV of labels with --images (read as the csv "
        "source reads data.csv), a MedMNIST-layout .npz, or the prepare stage's data/prepared "
        "(--split test reproduces metrics/eval.json). With a referral recorded in the model: its "
        "sensitivity, specificity, PPV, NPV; with clinical columns: figures per age band, sex, site."))
    _model_option(evaluate)
    evaluate.add_argument("--data", required=True,
                          help="class-per-folder directory, CSV of labels, .npz file or data/prepared")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"),
                          help="which split of an .npz or data/prepared (default test)")
    evaluate.add_argument("--map", action="append", default=[], metavar="FOLDER=CLASS",
                          help="use folder FOLDER for the model's class CLASS (repeatable)")
    table = evaluate.add_argument_group(
        "a CSV of labels (as data.csv in params.yaml; each default is the model's own data.csv value)")
    table.add_argument("--images", metavar="DIR", help="folder searched for the CSV's image files (any depth)")
    table.add_argument("--id", metavar="COLUMN", help="column with the image id or file name")
    table.add_argument("--label", metavar="COLUMN", help=(
        "column of class names, or comma-separated one-hot columns (MEL,NV,BCC,...)"))
    table.add_argument("--classes", action="append", metavar="LABEL=CLASS", help=(
        "rename/merge a label as written in the CSV (repeatable); when given, every label must be "
        "listed or excluded"))
    table.add_argument("--exclude", action="append", metavar="LABEL", help="drop rows with this label (repeatable)")
    table.add_argument("--clinical-column", action="append", metavar="FIELD=COLUMN", help=(
        "a clinical column (FIELD age, sex or site; repeatable), for a model with clinical inputs "
        "and for the subgroup figures; default: the columns the model was trained from"))
    table.add_argument("--extra-csv", metavar="FILE.csv", help=(
        "a second CSV joined on the id column, for columns the first lacks (data.csv.extra_csv)"))
    evaluate.add_argument("--format", choices=("text", "json"), default="text",
                          help="text for people, json (every metric) for programs")
    evaluate.add_argument("--out", help="also write all metrics to this JSON file")
    evaluate.add_argument("--bootstrap", type=_bootstrap, help=(
        "resamples for 95%% confidence intervals, 0 = none (default: the model's evaluate.bootstrap)"))
    evaluate.add_argument("--seed", type=int, help="bootstrap seed (default: the model's seed)")
    evaluate.add_argument("--batch-size", type=_batch_size,
                          help="images per forward pass (default: the model's evaluate.batch_size)")
    _tta_option(evaluate)
    evaluate.add_argument("--workers", type=_non_negative, default=0,
                          help="image decoding processes for folders; 0 = one per CPU core")
    evaluate.set_defaults(run=run_evaluate)

    info = commands.add_parser("info", help="what a model is: classes, input size, data, params, metrics")
    _model_option(info)
    info.add_argument("--format", choices=("text", "json"), default="text")
    info.set_defaults(run=run_info)

    export = commands.add_parser("export", help="write the model as LiteRT, ONNX or a TF SavedModel",
                                 description=(
        "A self-contained file: uint8 RGB images in, class probabilities out, with preprocessing, "
        "logit adjustment and the model's TTA inside; class names and metadata in FILE.json. "
        "The file is checked against Keras before the command succeeds."))
    _model_option(export)
    export.add_argument("--format", required=True, choices=("litert", "onnx", "saved_model"))
    export.add_argument("--quantize", default="none", choices=("none", "float16", "int8"), help=(
        "none (default); float16 weights; int8 weights and activations, calibrated on training "
        "images (LiteRT only)"))
    export.add_argument("--calibration", metavar="DIR", help=(
        "a folder written by `prepare`: int8 calibrates on its train.npz (int8's default: "
        "data/prepared), and the export is checked against Keras on its images; without it a "
        "float export is checked on 64 generated images"))
    export.add_argument("--out", required=True,
                        help="the file to write (.tflite for litert, .onnx for onnx, a folder for saved_model)")
    export.set_defaults(run=run_export)

    serve = commands.add_parser("serve", help="a local web page: upload a photo, see classes and Grad-CAM",
                                description="Serve one web page to try the model on photos (top classes "
                                            "and the Grad-CAM overlay). No authentication: keep it local.")
    _model_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME", help=(
        "a host name clients may use besides localhost and --host (repeatable); requests naming "
        "any other Host are refused"))
    serve.set_defaults(run=run_serve)
    return parser


def run_serve(args) -> int:
    try:
        from .server import serve
        import fastapi, python_multipart, uvicorn  # noqa: E401, F401  all three serve uploads
    except ImportError as err:
        raise SkinSageError(f"`skinsage serve` needs {err.name}: pip install -r requirements.txt") from None
    serve(args.model, args.host, args.port, tuple(args.allow_host))
    return 0


def run_predict(args) -> int:
    from ..log import progress
    from .classifier import Classifier, PredictError
    from .files import collect_images
    from .console import predictions_csv, predictions_json, predictions_table

    if args.renamed_metadata:
        raise PredictError("--metadata was renamed to --clinical: pass --clinical FILE.csv")
    found = collect_images(args.inputs)
    if not found.files:
        _report_skipped(found.problems)
        raise PredictError("no image files to predict")
    clf = Classifier.load(args.model, tta=args.tta)  # once per command
    values = {name: getattr(args, name) for name in ("age", "sex", "site") if getattr(args, name) is not None}
    clinical = clf.clinical_for_files(len(found.files), csv_path=args.clinical, values=values, where=args.model)
    outcomes = []
    with progress(total=len(found.files), desc="predict") as bar:
        for outcome in clf.predict_files(found.files, args.top_k, args.batch_size, clinical=clinical):
            outcomes.append(outcome)
            bar.update()
    predictions = [o.prediction for o in outcomes if o.prediction]
    skipped = found.problems + [(o.path, o.error) for o in outcomes if o.error]
    _report_skipped(skipped)
    if not predictions:
        raise PredictError(f"none of the {len(found.files)} file(s) could be read as an image")
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "table":
        print(predictions_table(clf, predictions))
    elif fmt == "csv":
        print(predictions_csv(predictions), end="")
    else:
        print(predictions_json(clf, predictions, skipped))
    return 0


def run_explain(args) -> int:
    from pathlib import Path

    from PIL import Image

    from ..data.images import ImageError
    from ..fileio import atomic_path, write_json
    from ..model.decision import OUT_OF_DISTRIBUTION
    from .classifier import Classifier, PredictError
    from .files import collect_images

    found = collect_images(args.inputs)
    _report_skipped(found.problems)
    if not found.files:
        raise PredictError("no image files to explain")
    _check_out_folder(args.out)
    clf = Classifier.load(args.model, tta=args.tta)
    out, records, skipped = Path(args.out), [], []
    out.mkdir(parents=True, exist_ok=True)
    names = _overlay_names(found.files)
    for path in found.files:
        try:
            explanation = clf.explain(path, args.class_name, args.top_k)
        except ImageError as err:
            skipped.append((str(path), str(err).removeprefix(f"{path}: ")))
            continue
        with atomic_path(out / names[path]) as tmp:
            Image.fromarray(explanation.overlay).save(tmp, format="PNG")
        records.append({**explanation.to_dict(), "overlay": names[path]})
        print(f"{path}: {explanation.prediction.label} ({explanation.prediction.probability:.3f}, "
              f"{explanation.prediction.status}); map of {explanation.explained} -> {out / names[path]}"
              + (OOD_MAP_NOTE if explanation.prediction.status == OUT_OF_DISTRIBUTION else ""))
    _report_skipped(skipped)
    if not records:
        raise PredictError(f"none of the {len(found.files)} file(s) could be read as an image")
    write_json(out / EXPLANATIONS_FILE, {"model": clf.path, "tta": clf.tta, "layer": records[0]["layer"],
                                        "images": records,
                                        "skipped": [{"path": p, "reason": r} for p, r in skipped]})
    print(f"wrote {len(records)} overlay(s) and {out / EXPLANATIONS_FILE}")
    return 0


OOD_MAP_NOTE = ("\n  warning: this image does not look like a dermoscopic image of a skin lesion "
                "(out_of_distribution): the map explains a class it does not belong to; do not read it as "
                "a finding")


def _overlay_names(files) -> dict:
    """<stem>_gradcam.png per file; a stem seen before gets _2, _3 ... (photos from two folders)."""
    names, used = {}, set()
    for path in files:
        stem, n = path.stem, 1
        while (name := f"{stem}{'' if n == 1 else f'_{n}'}_gradcam.png") in used:
            n += 1
        used.add(name)
        names[path] = name
    return names


def run_evaluate(args) -> int:
    from ..contracts.evaluation import json_safe, scalar_metrics
    from ..evaluate.scoring import evaluate_split
    from ..fileio import write_json
    from ..model.decision import STATUSES
    from .classifier import Classifier
    from .console import metrics_text, model_line, referral_line
    from .evaluation_data import load_labelled

    _check_out(args.out)  # before loading anything: a bad --out must not cost the whole run
    clf = Classifier.load(args.model, tta=args.tta)
    recorded = (clf.metadata.get("params") or {}).get("evaluate") or {}
    bootstrap = args.bootstrap if args.bootstrap is not None else recorded.get("bootstrap", 0)
    seed = args.seed if args.seed is not None else (clf.metadata.get("params") or {}).get("seed", 0)
    batch_size = args.batch_size or recorded.get("batch_size", 256)
    ece = {"ece_bins": recorded["ece_bins"]} if "ece_bins" in recorded else {}
    data = load_labelled(args.data, clf.classes, clf.image_size, split=args.split,
                         renames=_parse_maps(args.map), workers=args.workers, csv=_csv_description(args, clf))
    _report_skipped(data.skipped, at_most=10)
    clf.require_clinical_data(data.split, args.data)
    metrics, matrix, _ = evaluate_split(clf.model, data.split, clf.classes, batch_size, tta=clf.runtime_tta,
                                        temperature=clf.runtime_temperature,
                                        bootstrap=bootstrap, seed=seed, **ece, referral=clf.referral,
                                        subgroups=_subgroup_params(recorded), decision=clf.decision)
    metrics.pop("per_image", None)
    document = json_safe({
        "model": clf.path, "data": data.description, "tta": clf.tta, "bootstrap": bootstrap,
        "seed": seed, "skipped_files": [{"path": p, "reason": r} for p, r in data.skipped],
        "metrics": scalar_metrics(metrics), "per_class": metrics["per_class"], "confusion": matrix})
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        print(f"{model_line(clf)}\n{referral_line(clf)}\ndata {data.description}\n\n{metrics_text(metrics)}")
        print("\nstatus: " + ", ".join(f"{name} {metrics[f'share_{name}']:.1%}" for name in STATUSES)
              + f"; accuracy on ok {metrics['accuracy_ok']:.4f}; AURC {metrics['aurc']:.4f}")
    if args.out:
        write_json(args.out, document)
        print(f"\nwrote {args.out}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def _csv_description(args, clf):
    """The CsvParams a CSV given as --data is read with: the options, else the model's own
    data.csv values (the columns it was trained from); None when --data is not a CSV."""
    from ..params import ParamsError, csv_params_from_dict
    from .evaluation_data import LabelledDataError

    if not str(args.data).lower().endswith(".csv"):
        for option in ("images", "id", "label", "classes", "exclude", "clinical_column", "extra_csv"):
            if getattr(args, option):
                raise LabelledDataError(f"--{option.replace('_', '-')} describes a CSV of labels, but "
                                        f"--data {args.data} is not a .csv file")
        return None
    if not args.images:
        raise LabelledDataError(f"--data {args.data} is a CSV of labels: give the folder of its images "
                                "with --images DIR")
    trained = ((clf.metadata.get("params") or {}).get("data") or {}).get("csv") or {}
    clinical = _pairs(args.clinical_column, "--clinical-column", "FIELD=COLUMN") if args.clinical_column else (
        clf.clinical_columns or trained.get("clinical"))
    raw = {"path": str(args.data), "images": args.images, "id": args.id or trained.get("id", "image"),
           "label": args.label.split(",") if args.label and "," in args.label else (
               args.label or trained.get("label", "label")),
           "group": None, "extra_csv": args.extra_csv,
           "classes": _pairs(args.classes, "--classes", "LABEL=CLASS") if args.classes else (
               None if args.label else trained.get("classes")),
           "exclude": args.exclude or (None if args.label else trained.get("exclude")),
           "clinical": None if not clinical else {**dict.fromkeys(("age", "sex", "site")), **clinical}}
    try:  # the checks params.yaml's data.csv gets, named by this command's options
        return csv_params_from_dict(raw, where="--csv")
    except ParamsError as err:
        message = str(err)
        for key, option in CSV_PARAM_OPTIONS:
            message = message.replace(key, option)
        raise LabelledDataError(message) from None


# params.py's messages about the description, named by this command's options
CSV_PARAM_OPTIONS = (("--csv.clinical", "--clinical-column"), ("--csv.extra_csv", "--extra-csv"), ("--csv.", "--"))


def _pairs(values: list[str], option: str, form: str) -> dict[str, str]:
    from .evaluation_data import LabelledDataError

    pairs = {}
    for value in values:
        key, sep, name = value.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise LabelledDataError(f"{option} {value!r}: expected {form}")
        pairs[key.strip()] = name.strip()
    return pairs


def _subgroup_params(recorded: dict):
    """The model's recorded evaluate.subgroups; a model recorded before they existed gets the
    committed params.yaml values."""
    from ..evaluate.subgroups import DEFAULT_SUBGROUPS
    from ..params import SubgroupParams

    saved = recorded.get("subgroups") or {}
    if not saved:
        return DEFAULT_SUBGROUPS
    return SubgroupParams(min_images=int(saved["min_images"]), age_bands=tuple(saved["age_bands"]))


def run_info(args) -> int:
    from ..model.model_file import check_metadata, read_metadata
    from .console import info_text
    from .model_info import model_info

    from ..export.formats import exported_format
    from ..export.runtime import read_sidecar

    # no need to load the network to describe it
    metadata = read_sidecar(args.model) if exported_format(args.model) else read_metadata(args.model)
    check_metadata(metadata, args.model)
    info = model_info(args.model, metadata)
    print(json.dumps(info, indent=2) if args.format == "json" else info_text(info))
    return 0


def run_export(args) -> int:
    from ..export.convert import check_request, export_files

    check_request(args.format, args.quantize, args.out)  # before loading anything
    if args.format == "saved_model":  # a folder: never put in place of a file
        _check_out_folder(args.out)
    else:
        _check_out(args.out)
    [result] = export_files(args.model, [(args.out, args.format, args.quantize)], args.calibration)
    check = result.verification
    print(f"wrote {result.path} and {result.sidecar}\n"
          f"checked against Keras on {check['images']} {check['data']} images: top-1 agreement "
          f"{check['top1_agreement']:.2%}, max |Δp| {check['max_abs_diff']:.2g}")
    return 0


class OutputError(SkinSageError):
    """An output file given on the command line cannot be written."""


def _check_out(out: str | None) -> None:
    from ..fileio import writable_problem

    problem = out and writable_problem(out)
    if problem:
        raise OutputError(f"--out {out}: {problem}")


def _check_out_folder(out: str) -> None:
    from ..fileio import folder_problem

    problem = folder_problem(out)
    if problem:
        raise OutputError(f"--out {out}: {problem}")


def _model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"a .keras file written by the train stage (default {DEFAULT_MODEL})")


def _images_options(parser: argparse.ArgumentParser) -> None:
    """What `predict` and `explain` share: the model, the images and how many classes to list."""
    _model_option(parser)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument("--top-k", type=_positive, default=3, help="classes listed per image (default 3)")


def _tta_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", choices=TTA_CHOICES, help=(
        "test-time augmentation; default: what the model was evaluated with (recorded in the file)"))


def _report_skipped(skipped: list[tuple[str, str]], at_most: int | None = None) -> None:
    from .console import printable

    for path, reason in skipped[:at_most]:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    if at_most is not None and len(skipped) > at_most:
        print(f"... and {len(skipped) - at_most} more skipped files (all listed in --out)",
              file=sys.stderr)


def _parse_maps(pairs: list[str]) -> dict[str, str]:
    from .evaluation_data import LabelledDataError

    renames = {}
    for pair in pairs:
        folder, sep, name = pair.partition("=")
        if not sep or not folder or not name:
            raise LabelledDataError(f"--map {pair!r}: expected FOLDER=CLASS")
        renames[folder] = name
    return renames


def _whole_number(low: int, high: int | None = None, what: str = ""):
    """An argparse type: a whole number from `low` up to `high` (None: no upper bound)."""
    def check(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(
                f"must be {what or ('at least ' + str(low) if low else '0 or more')}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}" if what
                                             else f"must be at most {high:,}, got {value:,}")
        return value
    return check


_positive = _whole_number(1)
_non_negative = _whole_number(0)
_port = _whole_number(0, 65535, "a port number 0-65535")
_batch_size = _whole_number(1, MAX_BATCH_SIZE)
_bootstrap = _whole_number(0, MAX_BOOTSTRAP)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
