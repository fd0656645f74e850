"""Does the model know when not to answer? Lesion photos against pictures that are not lesions.

    .venv/bin/python benchmarks/ood.py models/model.keras [--prepared data/prepared] [--split test]
    .venv/bin/python benchmarks/ood.py OLD.keras --fit   # attach train's detector to a model file
                                                           # from before it (train's own code)

Every picture reaches the model as a user's upload does: `Classifier.predict` (load_image, the TTA
and temperature recorded in the model, the one inference path), so `status` and `ood_score` are
what `skinsage predict` prints. In-distribution: the prepared `--split` lesions (test: reported once
for a final configuration; choose on val), and the same lesions decoded from their JPEG files when
../shared/data is present. Out-of-distribution: the groups of benchmarks/ood_sets.py, built offline
and never used to fit anything. Per group: AUROC of ood_score (scikit-learn), the share accepted
(not out_of_distribution) at the model's threshold; the share of lesions refused; the max-probability
AUROC for comparison; and the cost of the detector: the same forward passes with and without the
ood_score output, timed in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = ROOT.parent / "shared" / "data"

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--prepared", default=None, help="data/prepared of the model (default: beside it, "
                        "else data/prepared)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--fit", action="store_true", help="fit train's detector and thresholds on the "
                        "prepared train/val splits first (a model file from before the detector)")
    parser.add_argument("--retain", type=float, nargs="*", default=[],
                        help="also show the shares at these validation-retain levels")
    args = parser.parse_args()
    prepared = Path(args.prepared or (Path(args.model).parent / "prepared"
                                      if (Path(args.model).parent / "prepared").is_dir() else "data/prepared"))
    from skinsage.app.classifier import Classifier
    from skinsage.prepared import load_prepared

    data = load_prepared(prepared, splits=("train", "val", args.split) if args.fit else ("val", args.split))
    model_path = args.model
    if args.fit:
        model_path = fit_detector(args.model, data)
    clf = Classifier.load(model_path)
    if clf.decision["ood"] is None:
        sys.exit(f"{model_path}: no out-of-distribution detector; retrain it or pass --fit")
    import ood_sets

    results = {}
    lesions = data.splits[args.split]
    results[f"lesions ({args.split})"] = run(clf, list(lesions.images))
    jpegs = lesion_jpegs(args.split, len(lesions))
    if jpegs:
        results[f"lesions ({args.split}, from JPEG files)"] = run(clf, jpegs)
    groups = ood_sets.build()
    print("out-of-distribution groups built: " + ", ".join(f"{g} ({len(p)})" for g, p in groups.items()))
    for group, lack in ood_sets.missing_sources().items():
        print(f"  incomplete: {group}: {lack}")
    for group, pictures in groups.items():
        results[group] = run(clf, pictures)
    report(clf, results, f"lesions ({args.split})", data.splits["val"], args.retain)
    cost(clf, lesions.images[:256])


def fit_detector(path: str, data) -> str:
    """The model of `path` with train's detector and thresholds (trainer._fit_decision), saved to a
    temporary file."""
    from skinsage.model.model_file import load_model, save_model
    from skinsage.params import params_from_dict
    from skinsage.train.trainer import _fit_decision

    model, metadata = load_model(path)
    raw = metadata["params"]  # a file from before the detector: this code's defaults for its knobs
    raw["train"].setdefault("ood", {"method": "feature_stats", "retain": 0.95, "stages": 2})
    raw["train"].setdefault("uncertain", {"coverage": 0.9})
    params = params_from_dict(raw)
    temperature = metadata.get("inference", {}).get("temperature", 1.0)
    model, decision = _fit_decision(model, params, data, temperature)
    metadata["inference"] = {**metadata.get("inference", {}), **decision["decision"]}
    out = Path(tempfile.mkdtemp()) / "model_with_detector.keras"
    save_model(model, out, metadata)
    return str(out)


def lesion_jpegs(split: str, count: int) -> list:
    """The split's lesions opened from their JPEG files (the real-data manifest), as uploads."""
    manifest = SHARED / "ham10000_28_manifest.csv"
    if not manifest.is_file():
        return []
    import pandas as pd

    rows = pd.read_csv(manifest)
    rows = rows[rows.split == split].sort_values("index")
    files = {p.stem: p for p in (SHARED / "ham10000_jpg").rglob("*.jpg")}
    paths = [files[i] for i in rows.image_id if i in files]
    return paths if len(paths) == count else []


def run(clf, pictures) -> dict:
    from skinsage.data.images import load_image

    arrays = np.stack([load_image(p, clf.image_size) if not isinstance(p, np.ndarray) else p for p in pictures])
    probs, scores, statuses = clf.outputs(arrays)
    return {"score": scores, "msp": probs.max(axis=1), "status": np.asarray(statuses)}


def report(clf, results: dict, lesions_key: str, val, retains) -> None:

    from skinsage.model.decision import OUT_OF_DISTRIBUTION

    threshold = clf.decision["ood"]["threshold"]
    val_scores = clf.outputs(val.images)[1]
    extra = {r: float(np.quantile(val_scores, r, method="higher")) for r in retains}
    lesions = results[lesions_key]
    print(f"model {clf.path}; ood threshold {threshold:.4g} (keeps {clf.decision['ood']['retain']:.0%} "
          f"of validation lesions)\n")
    head = f"{'group':36s} {'n':>5s} {'AUROC':>7s} {'accepted':>9s} {'AUROC(max p)':>13s}"
    print(head + "".join(f" {'acc@' + str(r):>9s}" for r in retains))
    all_out = {"score": [], "msp": [], "status": []}
    for name, res in results.items():
        refused = np.mean(res["status"] == OUT_OF_DISTRIBUTION)
        if name.startswith("lesions"):
            print(f"{name:36s} {len(res['score']):5d} {'':>7s} {1 - refused:9.1%} {'':>13s}  "
                  f"(refused {refused:.1%})" + "".join(f" {np.mean(res['score'] <= t):9.1%}" for t in extra.values()))
            continue
        for key in all_out:
            all_out[key].append(res[key])
        print(line(name, res, lesions, refused, extra))
    merged = {key: np.concatenate(parts) for key, parts in all_out.items()}
    print(line("ALL non-lesion pictures", merged, lesions,
               np.mean(merged["status"] == OUT_OF_DISTRIBUTION), extra))


def line(name, res, lesions, refused, extra) -> str:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(lesions["score"])), np.ones(len(res["score"]))]
    auroc = roc_auc_score(labels, np.r_[lesions["score"], res["score"]])
    auroc_msp = roc_auc_score(labels, -np.r_[lesions["msp"], res["msp"]])
    return (f"{name:36s} {len(res['score']):5d} {auroc:7.3f} {1 - refused:9.1%} {auroc_msp:13.3f}"
            + "".join(f" {np.mean(res['score'] <= t):9.1%}" for t in extra.values()))


def cost(clf, images: np.ndarray, repeats: int = 5) -> None:
    """The same predictions with and without the ood_score output, alternating, in this run."""
    import keras

    from skinsage.model.inference import predict_outputs

    plain = keras.Model(clf.model.inputs[0], clf.model.outputs[0])
    settings = (clf.runtime_tta, clf.runtime_temperature)
    timings = {"plain": {}, "with detector": {}}
    for batch in (1, 32):
        for name, model in (("plain", plain), ("with detector", clf.model)):
            predict_outputs(model, images[:batch], batch, *settings)  # warm up
        for name in timings:
            timings[name][batch] = []
        for _ in range(repeats):
            for name, model in (("plain", plain), ("with detector", clf.model)):
                start = time.perf_counter()
                for i in range(0, len(images) if batch > 1 else 32, batch):
                    predict_outputs(model, images[i:i + batch], batch, *settings)
                timings[name][batch].append(time.perf_counter() - start)
    print(f"\ncost ({clf.runtime_tta} TTA, median of {repeats}):")
    for batch in (1, 32):
        p, d = (float(np.median(timings[n][batch])) for n in ("plain", "with detector"))
        count = len(images) if batch > 1 else 32
        print(f"  network, batch {batch:2d}: plain {1000 * p / count:.2f} ms/image, with detector "
              f"{1000 * d / count:.2f} ms/image: {d / p - 1:+.1%}")
    end_to_end(clf, plain, images[:32], repeats)


def end_to_end(clf, plain, images: np.ndarray, repeats: int) -> None:
    """`Classifier.predict` of one 600x450 JPEG file per call (what the web page and `skinsage
    predict x.jpg` do): decoding and resizing included."""
    from PIL import Image

    from skinsage.app.classifier import Classifier

    folder = Path(tempfile.mkdtemp())
    files = []
    for i, image in enumerate(images):
        files.append(folder / f"{i}.jpg")
        Image.fromarray(image).resize((600, 450), Image.Resampling.BICUBIC).save(files[-1], quality=90)
    without = Classifier(plain, {**clf.metadata, "inference": {k: v for k, v in clf.metadata["inference"].items()
                                                              if k != "ood"}})
    times = {"plain": [], "with detector": []}
    for c in (without, clf):
        c.predict(files[0])
    for _ in range(repeats):
        for name, c in (("plain", without), ("with detector", clf)):
            start = time.perf_counter()
            for f in files:
                c.predict(f)
            times[name].append(time.perf_counter() - start)
    p, d = (float(np.median(times[n])) / len(files) for n in times)
    print(f"  Classifier.predict(file), one 600x450 JPEG per call: plain {1000 * p:.2f} ms, "
          f"with detector {1000 * d:.2f} ms: {d / p - 1:+.1%}")


if __name__ == "__main__":
    main()
