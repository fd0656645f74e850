"""What the `skinsage` command prints: predictions as a table, CSV or JSON; a model summary; metrics."""

from __future__ import annotations

import csv
import io
import json
import unicodedata

from ..contracts.evaluation import METRIC_LABELS, PER_CLASS_LABELS, REFERRAL_LABELS, format_value
from ..fileio import csv_text
from ..model.referral import NO_RECORD_NOTE
from .classifier import Classifier, Prediction

REFER_WORDS = {True: "yes", False: "no", None: "no advice"}  # None: out of distribution
DIGITS = 4  # more than the model card's 3: people compare runs here
# Invisible characters that reorder what a terminal shows (bidirectional overrides and isolates).
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def model_line(clf: Classifier) -> str:
    return (f"model {clf.path}: {clf.kind}, {len(clf.classes)} classes, input {clf.image_size}x"
            f"{clf.image_size} px, TTA {clf.tta}, trained on {clf.metadata.get('dataset', 'unknown data')}")


def predictions_table(clf: Classifier, predictions: list[Prediction]) -> str:
    ranks = max(len(p.top_k) for p in predictions)
    header = ["path", "status", "ood_score"] + [f"#{i + 1}" for i in range(ranks)] + ["refer"]
    rows = [[printable(p.source or "-"), p.status, _score(p.ood_score)]
            + [f"{printable(name)} {prob:6.1%}" for name, prob in p.top_k] + [refer_text(p)] for p in predictions]
    return model_line(clf) + "\n" + _columns([header, *rows]) + "\n" + referral_line(clf)


def refer_text(p: Prediction) -> str:
    """The referral cell: yes/no with P(refer), or why there is no advice."""
    if p.refer_probability is None:
        return "-"
    return f"{REFER_WORDS[p.refer]} (P {p.refer_probability:.3f})"


def referral_line(clf: Classifier) -> str:
    r = clf.referral
    if r is None:
        return f"referral: none ({NO_RECORD_NOTE})"
    return (f"referral: refer when P({printable(' + '.join(r['classes']))}) >= {r['threshold']:.4f} (chosen on "
            f"validation for sensitivity {r['target_sensitivity']:g}); not a diagnosis")


def referral_json(clf: Classifier) -> dict:
    r = clf.referral
    if r is None:
        return {"note": NO_RECORD_NOTE}
    return {key: r.get(key) for key in ("classes", "threshold", "target_sensitivity")}


def predictions_csv(predictions: list[Prediction]) -> str:
    ranks = max(len(p.top_k) for p in predictions)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "image_size", "status", "ood_score"]
                    + [f"{col}_{i}" for i in range(1, ranks + 1) for col in ("label", "probability")]
                    + ["refer", "refer_probability"])
    for p in predictions:  # refer: true/false, empty when there is no advice
        score = "" if p.ood_score is None else f"{p.ood_score:.6g}"
        writer.writerow([csv_text(p.source), p.image_size, p.status, score]
                        + [v for name, prob in p.top_k for v in (csv_text(name), f"{prob:.6f}")]
                        + [{True: "true", False: "false", None: ""}[p.refer],
                           "" if p.refer_probability is None else f"{p.refer_probability:.6f}"])
    return buffer.getvalue()


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters (escape sequences, newlines, bells)
    and bidirectional overrides in a file name are shown escaped (\\x1b, \\n) instead of acting."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) == "Cc" or ch in BIDI_CONTROLS else ch for ch in text)


def predictions_json(clf: Classifier, predictions: list[Prediction],
                     skipped: list[tuple[str, str]]) -> str:
    document = {"model": clf.path, "model_kind": clf.kind, "image_size": clf.image_size, "tta": clf.tta,
                "temperature": clf.temperature, "referral": referral_json(clf),
                "classes": clf.classes, "predictions": [p.to_dict() for p in predictions],
                "skipped": [{"path": path, "reason": reason} for path, reason in skipped]}
    return json.dumps(document, indent=2)


def info_text(info: dict) -> str:
    lines = [f"model file:   {info['path']}",
             f"kind:         {info['model']}",
             f"input size:   {info['image_size']}x{info['image_size']} px RGB",
             f"trained on:   {info['dataset']}",
             f"inference:    TTA {info['tta']}, temperature {info['temperature']:.3f}",
             "referral:     " + _operating_point_text(info.get("referral")),
             "refuses:      " + _decision_text(info.get("decision") or {}),
             "inputs:       image" + "".join(f" + {field} (column {column})" for field, column
                                             in (info.get("clinical_inputs") or {}).items()),
             f"params hash:  {info['params_hash']}",
             f"classes ({len(info['classes'])}):"]
    lines += [f"  {i}  {name}" for i, name in enumerate(info["classes"])]
    if info["params"]:
        lines.append("params:")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in info["params"].items()]
    if info["train_summary"]:
        lines.append("training:     " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                  for k, v in info["train_summary"].items()
                                                  if not isinstance(v, dict)))  # e.g. the clinical encoding
    if info["test_metrics"]:
        lines.append(f"test metrics (from {info['test_metrics_source']}):")
        lines.append(metrics_text(info["test_metrics"], indent="  "))
    else:
        lines.append("test metrics: not recorded for this file (run `dvc repro`, or "
                     "`skinsage evaluate --model ... --data ...`)")
    return "\n".join(lines)


def _operating_point_text(r: dict | None) -> str:
    """The recorded referral rule and what it achieved on the validation split it was fitted on."""
    if not r:
        return "none recorded"
    text = (f"P({' + '.join(r['classes'])}) >= {r['threshold']:.4f} (target sensitivity "
            f"{r.get('target_sensitivity')}, chosen on validation")
    figures = [r.get(key) for key in ("val_sensitivity", "val_specificity", "val_images", "val_refer_images")]
    # informative only, not checked at load: printed when all four are numbers
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures):
        text += (f": there sensitivity {figures[0]:.3f}, specificity {figures[1]:.3f} on {figures[2]:g} images, "
                 f"{figures[3]:g} of a refer class")
    return text + ")"


def _decision_text(decision: dict) -> str:
    """The recorded thresholds behind each prediction's status, as `info` prints them."""
    ood, uncertain = decision.get("ood"), decision.get("uncertain")
    parts = [f"out_of_distribution when ood_score > {ood['threshold']:.4g} (keeps {ood.get('retain', 0):.0%} of "
             "validation lesions)" if ood else "no out-of-distribution detector"]
    if uncertain:
        parts.append(f"uncertain when the top probability < {uncertain['threshold']:.3f} (answers "
                     f"{uncertain.get('coverage', 0):.0%} of validation ok)")
    return "; ".join(parts)


def metrics_text(metrics: dict, indent: str = "") -> str:
    ci = metrics.get("ci95") or {}
    rows = []
    for key, label in METRIC_LABELS.items():
        if key in metrics:
            interval = (f"  95% CI {format_value(ci[key]['low'], DIGITS)}-"
                        f"{format_value(ci[key]['high'], DIGITS)}" if key in ci else "")
            rows.append([indent + label, format_value(metrics[key], DIGITS) + interval])
    text = _columns(rows)
    if metrics.get("num_images") is not None:
        text = f"{indent}images: {metrics['num_images']}\n" + text
    if metrics.get("per_class"):
        header = [indent + "class", *PER_CLASS_LABELS]
        class_rows = [[indent + name] + [format_value(stats.get(col), DIGITS) for col in PER_CLASS_LABELS]
                      for name, stats in metrics["per_class"].items()]
        text += "\n\n" + _columns([header, *class_rows])
    if metrics.get("referral"):
        text += "\n\n" + referral_text(metrics["referral"], indent)
    if metrics.get("subgroups"):
        text += "\n\n" + subgroups_text(metrics["subgroups"], indent)
    return text


def referral_text(r: dict, indent: str = "") -> str:
    ci = r.get("ci95") or {}
    rows = [[indent + label, format_value(r[key], DIGITS) + (
                f"  95% CI {format_value(ci[key]['low'], DIGITS)}-{format_value(ci[key]['high'], DIGITS)}"
                if key in ci else "")]
            for key, label in REFERRAL_LABELS.items() if key in r]
    names = printable(" + ".join(r["classes"]))
    return (f"{indent}referral at P({names}) >= {r['threshold']:.4f}: {r['images']} images, "
            f"{r['refer_images']} of a refer class\n" + _columns(rows))


def subgroups_text(table: dict, indent: str = "") -> str:
    header = [indent + "subgroup", "images", "accuracy", "bal. acc.", "refer imgs", "sensitivity (95% CI)",
              "specificity (95% CI)", "flag"]
    rows = []
    for row in table["rows"]:
        ci = row.get("ci95") or {}
        def with_ci(key):
            if key not in row:
                return "-"
            interval = ci.get(key)
            return format_value(row[key], 3) + (f" ({format_value(interval['low'], 3)}-"
                                                 f"{format_value(interval['high'], 3)})" if interval else "")
        rows.append([f"{indent}{row['field']} {printable(row['value'])}", str(row["images"]),
                     format_value(row["accuracy"], 3), format_value(row["balanced_accuracy"], 3),
                     str(row.get("refer_images", "-")), with_ci("sensitivity"), with_ci("specificity"),
                     {True: "BELOW", False: "", None: "n/a"}[row.get("flagged")]])
    left_out = ", ".join(f"{g['field']} {printable(g['value'])} ({g['images']})" for g in table["left_out"])
    return (f"{indent}subgroups (at least {table['min_images']} images; {table['rule']})\n"
            + _columns([header, *rows]) + (f"\n{indent}left out (too few images): {left_out}" if left_out else ""))


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
