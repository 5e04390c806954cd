"""The study's comparison: collect every results/<model>/, score it again from its predictions.

``build_report`` reads each model folder, recomputes the scores from predictions.csv with
``metrics.compute_metrics`` (and checks them against metrics.json), adds seeded bootstrap
intervals and pairwise McNemar tests; ``write_summary`` writes results/summary.csv and
results/summary.md, html_report the page. report.py's command line is results.report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from microplastics.results import caveats, metrics, stats
from microplastics.data import dataset
from microplastics.core import fileio, layout, provenance
from microplastics.core.errors import InputError

SCORE_LABELS = {
    "accuracy": "accuracy", "macro_precision": "macro precision", "macro_recall": "macro recall",
    "macro_f1": "macro F1", "weighted_f1": "weighted F1", "mean_iou": "mean IoU",
}
RANK_BY = "macro_f1"  # the study's classes are very unequal in size: accuracy alone flatters "hard"
WHOLE_NUMBERS = ("n", "epochs_run", "best_epoch")
SETTING_KEYS = ("image_size", "epochs", "batch_size", "aug_views", "finetune", "balance", "features", "augment",
                "input_norm", "val_augment", "shape_cues", "scale_augment", "swap_background", "weights", "seed",
                "device")
# settings left out of the one-line description when they are a family's default (the study's)
QUIET_SETTINGS = {"augment": ("none", "study"), "input_norm": ("imagenet",), "val_augment": ("off",),
                  "shape_cues": ("off",), "scale_augment": (1, 1.0), "swap_background": (0, 0.0)}


@dataclass
class ModelResult:
    """One model folder, read and scored again."""
    name: str
    folder: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    classes: list[str]
    predictions: pd.DataFrame | None
    scores: dict[str, float]
    intervals: dict[str, stats.Interval] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return model_settings(self.metrics, self.config)

    @property
    def is_deep(self) -> bool:
        return "epochs_run" in self.metrics or (self.folder / layout.HISTORY_NAME).is_file()


@dataclass
class Cautions:
    """What keeps the table from misleading (see caveats.py): the data banner, the majority-class
    row, the models that collapsed onto one class, and the classes too small to rank on."""
    banner: str | None = None
    baseline: ModelResult | None = None
    collapsed: dict[str, caveats.Collapse] = field(default_factory=dict)
    small_classes: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    """Everything the summary files and the HTML page show."""
    results_dir: Path
    data_dir: Path
    models: list[ModelResult]            # ranked, best first
    classes: list[str]
    table: pd.DataFrame                  # summary.csv
    mcnemar: dict[tuple[str, str], stats.McNemar]
    data_counts: pd.DataFrame | None     # class x split
    data_summary: dict[str, Any]         # <data>/summary.json as written by data-preprocessing.py ({} if none)
    notes: list[str]
    n_boot: int
    seed: int
    cautions: Cautions = field(default_factory=Cautions)
    run: dict[str, Any] | None = None    # this report's own run record (provenance.run_record)


# ---------------------------------------------------------------- reading model folders

def read_json_or_empty(path: Path) -> dict[str, Any]:
    return fileio.read_json_dict(path, "rerun the stage that wrote it")


def read_model_predictions(folder: Path) -> pd.DataFrame | None:
    path = folder / layout.PREDICTIONS_NAME
    return metrics.read_predictions(path) if path.is_file() else None


def load_model(folder: Path, n_boot: int, seed: int) -> tuple[ModelResult, list[str]]:
    """Read one model folder, rescore it and bootstrap its intervals."""
    stored = metrics.load_metrics(folder)
    config = read_json_or_empty(folder / layout.CONFIG_NAME)
    name = str(stored.get("model") or folder.name)
    predictions = read_model_predictions(folder)
    classes = metrics.model_classes(stored, predictions)
    notes: list[str] = []
    if predictions is None:
        notes.append(f"{name}: no predictions.csv, so its figures are metrics.json's, without intervals "
                     "or significance tests")
        scores = {k: math.nan if stored.get(k) is None else float(stored[k]) for k in stats.SCORES} \
            | {"n": stored.get("n")}
        return ModelResult(name, folder, stored, config, classes, None, scores), notes
    try:
        scores = metrics.compute_metrics(predictions["true"], predictions["pred"], classes)
        intervals = score_intervals(predictions, classes, n_boot, seed)
    except ValueError as err:
        raise InputError(f"{folder / layout.PREDICTIONS_NAME}: {err}") from err
    metrics.check_agreement(name, scores, stored)
    return ModelResult(name, folder, stored, config, classes, predictions, scores, intervals), notes


def score_intervals(predictions: pd.DataFrame, classes: Sequence[str], n_boot: int,
                    seed: int) -> dict[str, stats.Interval]:
    """Bootstrap intervals of every score; the exact binomial one for accuracy where the bootstrap's has
    zero width (an accuracy of 0 or 1)."""
    intervals = stats.bootstrap_intervals(predictions["true"], predictions["pred"], classes, n_boot, seed)
    correct = int((predictions["true"] == predictions["pred"]).sum())
    return stats.with_exact_accuracy(intervals, correct, len(predictions))


def model_settings(metrics_json: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Image size, epochs, weights... as the run resolved them (config.json, then metrics.json)."""
    flat: dict[str, Any] = {}
    for source in (metrics_json, *[v for v in config.values() if isinstance(v, dict)], config):
        flat.update({k: source[k] for k in SETTING_KEYS if source.get(k) is not None})
    return flat


# ---------------------------------------------------------------- checks across models

def check_same_split(models: Sequence[ModelResult]) -> None:
    """Refuse to rank models scored on different test splits, naming each group."""
    metrics.refuse_mixed_splits({m.name: metrics.split_key(m.metrics) for m in models}, "be ranked together")


def data_fingerprint(data_dir: Path) -> str | None:
    """The test split fingerprint of a processed data folder; None without a manifest."""
    if not (data_dir / dataset.MANIFEST_NAME).is_file():
        return None
    return dataset.split_fingerprint(dataset.load_manifest(data_dir))


def data_split_note(models: Sequence[ModelResult], data_dir: Path, fingerprint: str | None) -> list[str]:
    """A note when the data folder shown is not the one the models were scored on."""
    if fingerprint is None or not models or models[0].metrics.get("split_fingerprint") == fingerprint:
        return []
    return [f"the models' test split ({models[0].metrics.get('split_fingerprint')}) is not that of {data_dir} "
            f"({fingerprint}): the data summary below describes other data than the scores"]


def weights_note(models: Sequence[ModelResult]) -> list[str]:
    """Say plainly when deep models did not start from ImageNet weights or ran a short schedule."""
    untrained = [m for m in models if m.is_deep and str(m.settings.get("weights", "")).lower() == "none"]
    if not untrained:
        return []
    described = ", ".join(f"{m.name} ({describe_settings(m)})" for m in untrained)
    return [f"started from random weights (--weights none), not ImageNet: {described}. "
            "These scores show that the pipeline runs end to end; they say nothing about the architectures."]


def describe_settings(model: ModelResult) -> str:
    """One line of how a model ran: '64 px, 2 epochs max, head, weights none' or 'full features, smote'.

    A non-default augmentation or input normalisation is named too ('augment robust, input norm crop').
    """
    s = model.settings
    hardening = [f"{key.replace('_', ' ')} {s[key]}" for key, quiet in QUIET_SETTINGS.items()
                 if key in s and s[key] not in quiet]
    if not model.is_deep:
        parts = [f"{s['features']} features" if "features" in s else "handcrafted features"]
        parts += [f"balance {s['balance']}"] if s.get("balance") not in (None, "none") else []
        return ", ".join(parts + hardening)
    parts = [f"{s['image_size']} px"] if "image_size" in s else []
    parts += [f"{s['epochs']} epochs max"] if "epochs" in s else []
    parts += [f"{s['finetune']} fine-tuning"] if "finetune" in s else []
    parts += hardening
    parts.append(f"weights {s.get('weights', model.metrics.get('weights', '?'))}")
    return ", ".join(parts)


# ---------------------------------------------------------------- tables

def rank_models(models: Sequence[ModelResult]) -> list[ModelResult]:
    """Best macro F1 first; NaN last; ties by name."""
    def key(m: ModelResult) -> tuple[float, str]:
        v = m.scores.get(RANK_BY, math.nan)
        return (-v if v == v else math.inf, m.name)
    return sorted(models, key=key)


def summary_frame(models: Sequence[ModelResult]) -> pd.DataFrame:
    """One row a model: scores with interval bounds, schedule, time, weights, settings."""
    rows = []
    for rank, m in enumerate(models, start=1):
        row: dict[str, Any] = {"rank": rank, "model": m.name, "n": m.scores.get("n")}
        for s in stats.SCORES:
            interval = m.intervals.get(s)
            row[s] = m.scores.get(s)
            row[f"{s}_low"] = interval.low if interval else None
            row[f"{s}_high"] = interval.high if interval else None
        settings = m.settings
        row.update({"epochs_run": m.metrics.get("epochs_run"), "best_epoch": m.metrics.get("best_epoch"),
                    "train_seconds": m.metrics.get("train_seconds"),
                    "weights": m.metrics.get("weights", settings.get("weights")),
                    "image_size": settings.get("image_size"), "epochs": settings.get("epochs"),
                    "split_fingerprint": m.metrics.get("split_fingerprint"), "settings": describe_settings(m),
                    "accuracy_interval": m.intervals["accuracy"].method if "accuracy" in m.intervals else None})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in WHOLE_NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def mcnemar_all(models: Sequence[ModelResult]) -> dict[tuple[str, str], stats.McNemar]:
    scored = {m.name: m.predictions for m in models if m.predictions is not None}
    try:
        return stats.mcnemar_matrix(scored)
    except ValueError as err:
        raise InputError(f"cannot pair the models' predictions: {err}") from err


def per_class_frame(models: Sequence[ModelResult], classes: Sequence[str], key: str) -> pd.DataFrame:
    """Models x classes of one per-class figure (f1, iou, recall...), classes in the given order."""
    rows = {}
    for m in models:
        per_class = metrics_per_class(m)
        rows[m.name] = [per_class.get(c, {}).get(key) for c in classes]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(classes), dtype=float)


def metrics_per_class(m: ModelResult) -> dict[str, dict[str, Any]]:
    return m.scores.get("per_class") or m.metrics.get("per_class") or {}


def all_classes(models: Sequence[ModelResult]) -> list[str]:
    """Every class of every model, sorted: the order of the manifest's class indices."""
    return sorted({c for m in models for c in m.classes})


CLASS_REPORT_COLUMNS = ("precision", "recall", "f1-score", "support")


def class_report_frame(m: ModelResult) -> pd.DataFrame | None:
    """scikit-learn's classification_report of one model as a table: a row per class, then accuracy,
    macro avg and weighted avg. Classes without true or predicted crops are left out of the means,
    as in the comparison table. None without per-class figures."""
    per_class = metrics_per_class(m)
    if not per_class:
        return None
    rows = {c: [v["precision"], v["recall"], v["f1"], v["support"]] for c, v in per_class.items()}
    n = sum(int(v["support"]) for v in per_class.values())
    rows["accuracy"] = [math.nan, math.nan, m.scores.get("accuracy"), n]
    rows["macro avg"] = [m.scores.get("macro_precision"), m.scores.get("macro_recall"), m.scores.get("macro_f1"), n]
    weights = {c: v["support"] / n if n else 0.0 for c, v in per_class.items()}
    rows["weighted avg"] = [sum(weights[c] * per_class[c][k] for c in per_class) for k in ("precision", "recall")] \
        + [m.scores.get("weighted_f1"), n]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(CLASS_REPORT_COLUMNS))
    frame["support"] = frame["support"].astype("Int64")
    return frame


# ---------------------------------------------------------------- how to reproduce

@dataclass
class StageRun:
    """One stage's command as it ran, from the run record it stored."""
    stage: str                       # what it made: "data", "rf, svm", "vgg16 Grad-CAM"...
    record: dict[str, Any]

    @property
    def command(self) -> str:
        return str(self.record["command"])


def stage_runs(report: Report) -> list[StageRun]:
    """The command of every stage behind the report, in pipeline order; runs shared by several
    models (ml-baselines.py trains rf and svm at once) are listed once."""
    summary = report.data_summary
    found: list[tuple[str, dict[str, Any] | None]] = [("raw photos", provenance.read_run(summary, "input_run")),
                                                      ("processed crops", provenance.read_run(summary))]
    found += [(m.name, provenance.read_run(m.config)) for m in report.models]
    for m in report.models:
        for what, path in (("Grad-CAM", m.folder / layout.GRADCAM_DIR / layout.GRADCAM_OWNER),
                           ("robustness", m.folder / layout.ROBUSTNESS_SUMMARY)):
            if path.is_file():
                found.append((f"{m.name} {what}", provenance.read_run(read_json_or_empty(path))))
    # data first, the report last, and the stages between in the order they ran
    data, stages = found[:2], sorted((f for f in found[2:] if f[1] is not None), key=lambda f: str(f[1].get("date")))
    runs: dict[str, StageRun] = {}
    for stage, record in [*data, *stages, ("this report", report.run)]:
        if record is None:
            continue
        if record["command"] in runs:
            runs[record["command"]].stage += f", {stage}"
        else:
            runs[record["command"]] = StageRun(stage, record)
    return list(runs.values())


def unrecorded_stages(report: Report) -> list[str]:
    """Models whose config.json holds no run record (trained before stages kept one)."""
    return [m.name for m in report.models if provenance.read_run(m.config) is None]


# ---------------------------------------------------------------- data summary

def read_data_summary(data_dir: Path, classes: Sequence[str]) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """Crops per class and split (from summary.json, else the manifest), and summary.json itself."""
    summary = read_json_or_empty(data_dir / dataset.SUMMARY_NAME)
    counts = counts_from_summary(summary)
    if counts is None and (data_dir / dataset.MANIFEST_NAME).is_file():
        manifest = dataset.load_manifest(data_dir)
        counts = manifest.groupby(["label", "split"]).size().unstack(fill_value=0)
    if counts is not None:
        order = list(classes) + sorted(set(counts.index) - set(classes))
        splits = [s for s in dataset.SPLITS if s in counts.columns]
        counts = counts.reindex(index=order, columns=splits).fillna(0).astype(int)
        counts = counts.loc[counts.sum(axis=1) > 0]
        counts["total"] = counts.sum(axis=1)
        counts.loc["total"] = counts.sum(axis=0)
    return counts, summary


def counts_from_summary(summary: dict[str, Any]) -> pd.DataFrame | None:
    """A class x split table from summary.json's counts, nested either way round."""
    counts = summary.get("counts")
    if not isinstance(counts, dict) or not counts:
        return None
    if not all(isinstance(v, dict) for v in counts.values()):
        return None
    frame = pd.DataFrame(counts).fillna(0)
    frame = frame.drop(index=["total"], columns=["total"], errors="ignore")
    if set(frame.columns) <= set(dataset.SPLITS):
        return frame                       # {split: {class: n}}
    if set(frame.index) <= set(dataset.SPLITS):
        return frame.T                     # {class: {split: n}}
    return None


# ---------------------------------------------------------------- markdown

def missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: floats to ``digits`` places, whole numbers as they are, a dash for none."""
    if missing(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_seconds(value: Any) -> str:
    if missing(value):
        return "–"
    v = float(value)
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def fmt_score(row: pd.Series, score: str) -> str:
    low, high = row.get(f"{score}_low"), row.get(f"{score}_high")
    point = fmt(row[score])
    if missing(low):
        return point
    return f"{point} [{fmt(low)}, {fmt(high)}]{' exact' if is_exact(row, score) else ''}"


def is_exact(row: pd.Series, score: str) -> bool:
    """Whether the row's interval of ``score`` is the exact binomial one, not the bootstrap's."""
    return score == "accuracy" and row.get("accuracy_interval") == "exact"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def comparison_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The study's table as strings: scores with intervals, schedule, time, weights."""
    header = ["rank", "model", "n", *SCORE_LABELS.values(), "epochs run", "best epoch", "training time",
              "weights", "settings"]
    rows = []
    for (_, row), m in zip(report.table.iterrows(), report.models):
        rows.append([str(row["rank"]), model_label(report, m), fmt(row["n"]),
                     *[fmt_score(row, s) for s in stats.SCORES], fmt(row["epochs_run"]), fmt(row["best_epoch"]),
                     fmt_seconds(row["train_seconds"]), fmt(row["weights"]), row["settings"]])
    baseline = baseline_row(report)
    if baseline is not None:
        rows.append(["–", report.cautions.baseline.name, fmt(baseline["n"]),
                     *[fmt_score(baseline, s) for s in stats.SCORES], "–", "–", "–", "–",
                     baseline_settings(report)])
    return header, rows


def model_label(report: Report, m: ModelResult) -> str:
    """The model's name, with the collapse warning beside it when it answers one class."""
    collapsed = report.cautions.collapsed.get(m.name)
    return f"{m.name} ⚠ {collapsed.describe()}" if collapsed else m.name


def baseline_row(report: Report) -> pd.Series | None:
    """The majority-class reference as a summary row (scores, intervals), or None without predictions."""
    baseline = report.cautions.baseline
    return None if baseline is None else summary_frame([baseline]).iloc[0]


def baseline_settings(report: Report) -> str:
    stored = report.cautions.baseline.metrics
    return (f"reference: answers {stored['label']} (the {stored['majority_of']} split's most common class) "
            "for every test crop")


def mcnemar_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    names = [m.name for m in report.models if m.predictions is not None]
    rows = []
    for a in names:
        cells = []
        for b in names:
            t = report.mcnemar.get((a, b))
            cells.append("–" if t is None else f"{fmt_p(t.p_value)} ({t.only_a}/{t.only_b})")
        rows.append([a, *cells])
    return ["", *names], rows


def render_markdown(report: Report) -> str:
    header, rows = comparison_rows(report)
    banner = report.cautions.banner
    parts = [
        "# Model comparison", "",
        *([f"> **{banner[0].upper()}{banner[1:]}.**", ""] if banner else []),
        f"Test split {report.table['split_fingerprint'].iloc[0]}, scores recomputed from each model's "
        f"predictions.csv; 95% intervals from {report.n_boot} bootstrap resamples of the test crops "
        f"(seed {report.seed}). Ranked by macro F1.{interval_remark(report)}", "",
        markdown_table(header, rows), "",
    ]
    m_header, m_rows = mcnemar_rows(report)
    if len(m_rows) > 1:
        n_pairs = len(m_rows) * (len(m_rows) - 1) // 2
        parts += ["## Pairwise McNemar exact test", "",
                  "Two-sided p-value that the row and column model err equally often on the same crops; in "
                  "brackets the crops only the row model got right / only the column model got right. "
                  f"{n_pairs} comparisons: at 5% overall (Bonferroni) a pair differs when p < "
                  f"{0.05 / n_pairs:.4f}.", "",
                  markdown_table(m_header, m_rows), ""]
    if report.notes:
        parts += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(parts) + "\n"


def interval_remark(report: Report) -> str:
    """What the table's 'exact' marks and the baseline row are, when there are any."""
    text = ""
    if any(is_exact(row, "accuracy") for _, row in report.table.iterrows()):
        text += (" An accuracy marked exact has the Clopper-Pearson interval instead: every bootstrap resample "
                 "scored the same, a zero-width interval that would claim certainty.")
    if report.cautions.baseline is not None:
        text += (f" The last row, {report.cautions.baseline.name}, is the score of answering one class for every "
                 "crop: a model must beat it to have learnt anything.")
    return text


# ---------------------------------------------------------------- cautions

def true_labels(models: Sequence[ModelResult]) -> pd.DataFrame | None:
    """path and true label of every test crop, from the first model that has predictions."""
    return next((m.predictions[["path", "true"]] for m in models if m.predictions is not None), None)


def majority_baseline(models: Sequence[ModelResult], classes: list[str], data_summary: dict[str, Any],
                      same_data: bool, results_dir: Path, n_boot: int, seed: int) -> ModelResult | None:
    """The majority-class reference, scored like the models; None when no model has predictions."""
    test = true_labels(models)
    if test is None:
        return None
    table = counts_from_summary(data_summary) if same_data else None
    counts = ({str(c): int(n) for c, n in table["train"].items()}
              if table is not None and "train" in table.columns else None)
    if counts and not set(counts) <= set(classes):
        counts = None
    label, split = caveats.majority_label(test["true"], counts)
    predictions = caveats.majority_predictions(test, label)
    scores = metrics.compute_metrics(predictions["true"], predictions["pred"], classes)
    stored = {"model": caveats.BASELINE_NAME, "label": label, "majority_of": split, "weights": "n/a"}
    return ModelResult(f"{caveats.BASELINE_NAME} ({label})", results_dir, stored, {}, classes, predictions,
                       scores, score_intervals(predictions, classes, n_boot, seed))


def build_cautions(models: Sequence[ModelResult], classes: list[str], data_summary: dict[str, Any],
                   same_data: bool, results_dir: Path, n_boot: int, seed: int) -> Cautions:
    test = true_labels(models)
    totals = data_summary.get("totals") if isinstance(data_summary.get("totals"), dict) else {}
    n_test = len(test) if test is not None else totals.get("test")
    collapsed = {m.name: c for m in models if m.predictions is not None
                 and (c := caveats.collapse(m.predictions)) is not None}
    return Cautions(banner=caveats.data_banner(data_summary, n_test),
                    baseline=majority_baseline(models, classes, data_summary, same_data, results_dir, n_boot, seed),
                    collapsed=collapsed,
                    small_classes=caveats.small_classes(test["true"], classes) if test is not None else {})


def caution_notes(models: Sequence[ModelResult], cautions: Cautions) -> list[str]:
    """Notes for collapsed models, models no better than the baseline, small classes and flat intervals."""
    notes = [f"{name} {c.describe()}: it has collapsed onto one class, whatever its scores say"
             for name, c in cautions.collapsed.items()]
    baseline = cautions.baseline
    if baseline is not None:
        level = baseline.scores["accuracy"]
        weak = [m.name for m in models if not m.scores.get("accuracy", math.nan) > level]
        if weak:
            notes.append(f"not more accurate ({level:.3f}) than answering {baseline.metrics['label']} for every "
                         f"test crop: {', '.join(weak)}")
    if cautions.small_classes:
        listed = ", ".join(f"{c} ({n})" for c, n in cautions.small_classes.items())
        notes.append(f"classes with fewer than {caveats.MIN_TEST_CROPS} test crops: {listed}; their per-class "
                     "scores are too noisy to rank models on (marked † in report.html, never highlighted best)")
    flat = [f"{m.name} {SCORE_LABELS[s]}" for m in models for s, i in m.intervals.items()
            if i.method == "bootstrap" and i.width == 0]
    if flat:
        notes.append(f"zero-width bootstrap intervals: {', '.join(flat)}. Every resample of the test crops "
                     "scored the same; that is a small or easy test split, not certainty")
    return notes


# ---------------------------------------------------------------- assembling and writing

def build_report(results_dir: Path, data_dir: Path, n_boot: int, seed: int,
                 wanted: Sequence[str] | None = None, run: dict[str, Any] | None = None) -> Report:
    notes: list[str] = []
    folders = layout.find_model_dirs(results_dir, wanted, require=layout.FINISHED_RUN, notes=notes)
    models = []
    for folder in folders:
        model, model_notes = load_model(folder, n_boot, seed)
        models.append(model)
        notes += model_notes
    check_same_split(models)
    models = rank_models(models)
    classes = all_classes(models)
    counts, data_summary = read_data_summary(data_dir, classes)
    fingerprint = data_fingerprint(data_dir)
    split_note = data_split_note(models, data_dir, fingerprint)
    same_data = fingerprint is not None and not split_note
    cautions = build_cautions(models, classes, data_summary, same_data, results_dir, n_boot, seed)
    notes += weights_note(models) + split_note + caution_notes(models, cautions)
    return Report(results_dir, data_dir, models, classes, summary_frame(models), mcnemar_all(models),
                  counts, data_summary, notes, n_boot, seed, cautions, run)


def ranking_text(report: Report) -> str:
    """The ranking for a terminal: a few aligned columns, the best model first."""
    header = ["rank", "model", "macro F1 [95% CI]", "accuracy", "mean IoU", "best epoch", "training time"]
    rows = [[str(row["rank"]), m.name, fmt_score(row, "macro_f1"), fmt(row["accuracy"]), fmt(row["mean_iou"]),
             fmt(row["best_epoch"]), fmt_seconds(row["train_seconds"])]
            for (_, row), m in zip(report.table.iterrows(), report.models)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return ("\n".join(lines) + "\nRanked by macro F1 on the test split; best epoch: the epoch of the lowest "
            "validation loss, whose weights were kept.\n")


def write_summary(report: Report) -> list[Path]:
    csv_path = report.results_dir / "summary.csv"
    md_path = report.results_dir / "summary.md"
    with fileio.atomic_path(csv_path) as tmp:
        report.table.to_csv(tmp, index=False, float_format="%.6f")
    fileio.write_text(md_path, render_markdown(report))
    text_path = report.results_dir / layout.SUMMARY_TXT
    fileio.write_text(text_path, ranking_text(report))
    return [csv_path, md_path, text_path]
