"""results/report.html: one page with inline CSS; figures are referenced relative to the page.

Sections follow the study: data, comparison table, significance, confusion matrices,
training curves, per-class IoU, prediction grids, Grad-CAM, robustness. A figure a stage did
not write is left out and listed under "missing figures"; classes keep one order everywhere.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

import pandas as pd

from microplastics.results import caveats, robustness_table, stats
from microplastics.core import fileio, layout
from microplastics.explain import localisation
from microplastics.results.comparison import (SCORE_LABELS, SETTING_KEYS, ModelResult, Report, baseline_row,
                                          baseline_settings, fmt, fmt_p, fmt_seconds, interval_remark, is_exact,
                                          missing, per_class_frame)
from microplastics.results.comparison import class_report_frame, describe_settings, stage_runs, unrecorded_stages

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 8px;border-bottom:2px solid #dde3ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}p{margin:6px 0}.muted{color:#5c6675}
nav{font-size:13px;margin:10px 0 0}nav a{margin-right:14px;color:#2b5fad;text-decoration:none}
.lead{font-size:16px;background:#fff;border-left:4px solid #2b8a3e;padding:10px 14px;margin:16px 0}
.notes{background:#fff8e6;border-left:4px solid #e0a100;padding:8px 14px 8px 30px;margin:12px 0}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef2f6;font-weight:600}td.name,th.name{text-align:left;font-weight:600}
td.text{text-align:left}td.best{background:#d3f0da;font-weight:700}td.sig{background:#fde2e1}
td.diag{background:#f0f0f0;color:#999}.ci{display:block;font-size:11px;color:#5c6675;font-weight:400;white-space:nowrap}
.scroll{overflow-x:auto}.gallery{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde3ea;padding:8px;max-width:100%}
figure img{display:block;max-width:100%;height:auto}figcaption{font-weight:600;margin-bottom:4px}
.banner{font-size:17px;font-weight:700;background:#fde2e1;border-left:6px solid #c92a2a;padding:12px 16px;margin:14px 0}
.warn{display:block;font-size:11px;color:#c92a2a;font-weight:600}tr.reference td{background:#f3f4f6;font-style:italic}
.gallery.small figure{width:360px}.gallery.half figure{width:calc(50% - 26px)}.gallery.wide figure{width:100%}
.gallery.third figure{width:calc(33.3% - 26px)}
figure a{display:block}.files{font-size:12px;font-weight:400}.files a{margin-left:8px;color:#2b5fad}
.reports{display:flex;flex-wrap:wrap;gap:14px}.reports>div{flex:0 1 auto}.reports table{font-size:13px}
.versions{font-size:12px;line-height:1.7}
pre.commands{background:#fff;border:1px solid #dde3ea;padding:8px 12px;white-space:pre-wrap;word-break:break-all;
font-size:12px}
@media print{
body{background:#fff;font-size:10pt}main{max-width:none;padding:0}nav{display:none}
.scroll{overflow:visible}table{font-size:7.5pt;page-break-inside:auto;max-width:100%}th,td{padding:1px 3px}
tr{break-inside:avoid}td.text{overflow-wrap:anywhere}
.ci{font-size:6.5pt;white-space:normal}figure,.reports>div,.lead,.banner,pre.commands{break-inside:avoid;page-break-inside:avoid}
figure img{max-height:24cm;width:auto;max-width:100%}h2,h3{break-after:avoid;page-break-after:avoid}
.gallery.small figure{width:calc(50% - 10px)}.gallery.half figure{width:100%}a{color:inherit;text-decoration:none}
}
"""

Figure = tuple[str, Path]


# ---------------------------------------------------------------- small helpers

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def href(path: Path, page_dir: Path) -> str:
    """A URL for ``path`` relative to the page, with unsafe characters quoted."""
    return quote(Path(os.path.relpath(path, page_dir)).as_posix())


def best_flags(values: Sequence[Any], higher: bool = True) -> list[bool]:
    """True where a value is the column's best (ties all marked); NaN and None never are."""
    clean = [None if missing(v) else float(v) for v in values]
    present = [v for v in clean if v is not None]
    if len(present) < 2:
        return [False] * len(values)
    target = max(present) if higher else min(present)
    return [v is not None and abs(v - target) < 1e-12 for v in clean]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[Sequence[str]] | None = None) -> str:
    """An HTML table of pre-escaped cells; ``classes`` gives each cell's CSS class."""
    name_class = ' class="name"'
    head = "".join(f"<th{name_class if i == 0 else ''}>{h}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            css = classes[r][c] if classes else ("name" if c == 0 else "")
            cells.append(f"<td class=\"{css}\">{cell}</td>" if css else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def frame_table(frame: pd.DataFrame, index_name: str = "", highlight: bool = False, digits: int = 3,
                lower_better: Iterable[str] = (), unranked: dict[str, str] | None = None) -> str:
    """A DataFrame as a table; with ``highlight`` the best number of each column is marked
    (the highest, or the lowest for the columns named in ``lower_better``). The columns of
    ``unranked`` are never marked; their header gets the given (pre-escaped) mark."""
    lower, unranked = set(lower_better), unranked or {}
    flags = {c: best_flags(frame[c].tolist(), higher=c not in lower)
             if highlight and c not in unranked and pd.api.types.is_numeric_dtype(frame[c]) else [False] * len(frame)
             for c in frame.columns}
    rows, css = [], []
    for i, (idx, row) in enumerate(frame.iterrows()):
        rows.append([esc(idx)] + [esc(fmt(v, digits)) for v in row.tolist()])
        css.append(["name"] + ["best" if flags[c][i] else ("" if is_number(v) else "text")
                               for c, v in zip(frame.columns, row.tolist())])
    return table([esc(index_name)] + [esc(c) + unranked.get(c, "") for c in frame.columns], rows, css)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def gallery(figures: Sequence[Figure], page_dir: Path, size: str = "small") -> str:
    """Figures side by side, each a link to its full-size file."""
    items = [f"<figure><figcaption>{esc(caption)}</figcaption><a href=\"{href(path, page_dir)}\" "
             f"title=\"full size\"><img src=\"{href(path, page_dir)}\" alt=\"{esc(caption)}\"></a></figure>"
             for caption, path in figures]
    return f"<div class=\"gallery {size}\">{''.join(items)}</div>"


def section(anchor: str, title: str, body: str) -> str:
    return f"<section id=\"{anchor}\"><h2>{esc(title)}</h2>{body}</section>"


# ---------------------------------------------------------------- figures of the model folders

def model_figures(models: Sequence[ModelResult], pick: Callable[[Path], Path | None]) -> tuple[list[Figure], list[str]]:
    """(caption, file) of each model that has the figure, and the names of those that lack it."""
    found, missing = [], []
    for m in models:
        path = pick(m.folder)
        (found.append((m.name, path)) if path is not None else missing.append(m.name))
    return found, missing


def existing(*names: str) -> Callable[[Path], Path | None]:
    """The first of ``names`` present in a model folder."""
    return lambda folder: next((folder / n for n in names if (folder / n).is_file()), None)


def gradcam_figure(folder: Path) -> Path | None:
    """gradcam/overview.png, or else the first panel of gradcam/."""
    gradcam = folder / "gradcam"
    if (gradcam / "overview.png").is_file():
        return gradcam / "overview.png"
    return next(iter(sorted(gradcam.glob("*.png"))), None) if gradcam.is_dir() else None


def localisation_section(models: Sequence[ModelResult]) -> str:
    """The pointing-game hit rate of each deep model whose Grad-CAM run measured it (gradcam/localisation.json)."""
    rows = {}
    for m in models:
        found = localisation.read_summary(m.folder / "gradcam") if m.is_deep else None
        if found and found.get("n"):
            rows[m.name] = {"method": found["method"], "crops": found["n"],
                            "pointing hit rate": found["pointing_hit_rate"],
                            "mass inside box": found["mean_mass_inside"],
                            "box share of crop": found["mean_box_fraction"], "margin": found["margin"]}
    if not rows:
        return ""
    intro = ("<p class=\"muted\">grad-cam.py's localisation.csv, summed up: the share of explained test crops whose "
             "heat-map peak lies inside the particle's box (the crop less its margin), and the mean share of the "
             "map's mass inside it; a map spread evenly would score the box's share of the crop.</p>")
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return section("localisation", "Localisation", intro + frame_table(frame, "model"))


def overlay_figure(report: Report, page_dir: Path) -> str:
    """The models' validation curves in one figure (report.py draws it), when there is one."""
    path = report.results_dir / layout.VALIDATION_CURVES
    if not path.is_file():
        return ""
    return "<h3>Validation curves of every deep model</h3>" + gallery([("validation loss and accuracy", path)],
                                                                         page_dir, "wide")


def figure_section(anchor: str, title: str, intro: str, models: Sequence[ModelResult], page_dir: Path,
                   pick: Callable[[Path], Path | None], missing_figures: list[str], size: str = "small") -> str:
    found, missing = model_figures(models, pick)
    if missing:
        missing_figures.append(f"{title.lower()}: none for {', '.join(missing)}")
    if not found:
        return ""
    return section(anchor, title, f"<p class=\"muted\">{esc(intro)}</p>" + gallery(found, page_dir, size))


# ---------------------------------------------------------------- sections

def lead(report: Report) -> str:
    best = report.models[0]
    interval = best.intervals.get("macro_f1")
    ci = f" [{interval.low:.3f}, {interval.high:.3f}]" if interval else ""
    text = f"Best macro F1: <b>{esc(best.name)}</b>, {fmt(best.scores.get('macro_f1'))}{ci}"
    rivals = [b for (a, b), t in report.mcnemar.items() if a == best.name and t.p_value >= 0.05]
    if rivals:
        text += f"; McNemar finds no significant difference (p ≥ 0.05) from {esc(', '.join(rivals))}"
    elif len(report.models) > 1 and report.mcnemar:
        text += "; McNemar puts it ahead of every other model (p < 0.05)"
    return f"<p class=\"lead\">{text}.</p>"


def data_section(report: Report) -> str:
    if report.data_counts is None:
        return section("data", "Data", f"<p class=\"muted\">No summary.json or manifest.csv in "
                                       f"{esc(report.data_dir)}.</p>")
    summary = report.data_summary
    body = (f"<p class=\"muted\">Crops per class and split in {esc(report.data_dir)}"
            f"{esc(split_description(summary))}.</p>" + frame_table(report.data_counts, "class", digits=0))
    photos = summary.get("photos")
    if isinstance(photos, dict) and photos:
        body += "<h3>Photos per split</h3>" + table([esc(k) for k in photos], [[esc(v) for v in photos.values()]],
                                                    [[""] * len(photos)])
    left_out = summary.get("left_out_classes")
    if left_out:
        body += f"<p>Classes left out (too few crops): {esc(summarise(left_out))}.</p>"
    return section("data", "Data", body + skipped_html(summary.get("skipped")))


def split_description(summary: dict[str, Any]) -> str:
    """'; split by photo, seed 42, ...' from summary.json's settings, when it has them."""
    settings = summary.get("settings")
    if not isinstance(settings, dict) or not settings:
        return ""
    return "; " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items())


def skipped_html(skipped: Any) -> str:
    """What preprocessing left out: {count, by_reason, items}, or any other dict or list."""
    if not skipped or (isinstance(skipped, dict) and not skipped.get("count", 1) and not skipped.get("items")):
        return "<p class=\"muted\">Nothing was skipped.</p>"
    if isinstance(skipped, dict) and ("by_reason" in skipped or "items" in skipped):
        reasons = skipped.get("by_reason") or {}
        html_ = f"<h3>Skipped: {esc(skipped.get('count', len(skipped.get('items', []))))} item(s)</h3>"
        if reasons:
            html_ += table(["reason", "items"], [[esc(k), esc(v)] for k, v in reasons.items()],
                           [["text", ""]] * len(reasons))
        return html_ + skipped_items(skipped.get("items") or [])
    if isinstance(skipped, dict):
        rows = [[esc(k), esc(summarise(v))] for k, v in skipped.items()]
        return "<h3>Skipped</h3>" + table(["reason", "items"], rows, [["text", "text"]] * len(rows))
    if isinstance(skipped, list):
        return f"<h3>Skipped: {len(skipped)} item(s)</h3>" + skipped_items(skipped)
    return f"<h3>Skipped</h3><p>{esc(skipped)}</p>"


def skipped_items(items: list[Any], limit: int = 50) -> str:
    if not items:
        return ""
    frame = pd.DataFrame([s if isinstance(s, dict) else {"item": s} for s in items])
    rows = [[esc(v) for v in r] for r in frame.head(limit).astype(str).values.tolist()]
    more = f"<p class=\"muted\">… and {len(frame) - limit} more (see summary.json).</p>" if len(frame) > limit else ""
    return table([esc(c) for c in frame.columns], rows, [["text"] * len(frame.columns)] * len(rows)) + more


def summarise(value: Any, limit: int = 5) -> str:
    if isinstance(value, list):
        head = ", ".join(str(v) for v in value[:limit])
        return f"{len(value)}: {head}{' …' if len(value) > limit else ''}"
    return str(value)


def comparison_section(report: Report) -> str:
    table_frame = report.table
    flags = {s: best_flags(table_frame[s].tolist()) for s in stats.SCORES}
    header = ["model", "n", *[esc(v) for v in SCORE_LABELS.values()], "epochs run",
              "<span title=\"the epoch of the lowest validation loss, whose weights were kept\">best epoch</span>",
              "training time", "weights"]
    rows, css = [], []
    for i, (m, (_, row)) in enumerate(zip(report.models, table_frame.iterrows())):
        cells = [model_cell(report, m), esc(fmt(row["n"]))] + [score_cell(row, s) for s in stats.SCORES]
        cells += [esc(fmt(row["epochs_run"])), esc(fmt(row["best_epoch"])), esc(fmt_seconds(row["train_seconds"])),
                  short_weights(row["weights"])]
        rows.append(cells)
        css.append(["name", ""] + ["best" if flags[s][i] else "" for s in stats.SCORES] + ["", "", "", "text"])
    intro = (f"<p class=\"muted\">Test split {esc(table_frame['split_fingerprint'].iloc[0])}. Every score is "
             f"recomputed from the model's predictions.csv (and agrees with its metrics.json); under it the 95% "
             f"interval from {report.n_boot} bootstrap resamples of the test crops (seed {report.seed}). "
             f"Ranked by macro F1; the best value of each column is green.{esc(interval_remark(report))}</p>")
    body = table(header, rows, css)
    baseline = baseline_html_row(report)
    if baseline:   # the reference row goes in last, outside the ranking and the green marks
        body = body.replace("</tbody>", baseline + "</tbody>")
        body += (f"<p class=\"muted\">{esc(report.cautions.baseline.name)}: "
                 f"{esc(baseline_settings(report))}.</p>")
    return section("comparison", "Model comparison", intro + body + settings_table(report))


def model_cell(report: Report, m: ModelResult) -> str:
    """The model's name, with a warning under it when it answers one class for most test crops."""
    collapsed = report.cautions.collapsed.get(m.name)
    return esc(m.name) + (f"<span class=\"warn\">⚠ {esc(collapsed.describe())}</span>" if collapsed else "")


def score_cell(row: pd.Series, score: str) -> str:
    """A score with its 95% interval under it, marked when the interval is the exact binomial one."""
    low, high = row[f"{score}_low"], row[f"{score}_high"]
    if missing(low):
        return esc(fmt(row[score]))
    exact = " exact" if is_exact(row, score) else ""
    title = " title=\"Clopper-Pearson: every bootstrap resample scored the same\"" if exact else ""
    return f"{esc(fmt(row[score]))}<span class=\"ci\"{title}>[{low:.3f}, {high:.3f}]{exact}</span>"


def short_weights(weights: Any) -> str:
    """Where the weights came from, in a word ('imagenet'); the whole description (package, file,
    checksum) stays in the cell's tooltip and in the run-settings table."""
    text = fmt(weights)
    short = text.split(":", 1)[0].split(" (", 1)[0]
    return esc(short) if short == text else f"<span title=\"{esc(text)}\">{esc(short)}</span>"


def baseline_html_row(report: Report) -> str:
    """The majority-class reference row of the comparison table, or nothing without predictions."""
    row = baseline_row(report)
    if row is None:
        return ""
    cells = [f"<td class=\"name\">{esc(report.cautions.baseline.name)}</td>", f"<td>{esc(fmt(row['n']))}</td>"]
    cells += [f"<td>{score_cell(row, s)}</td>" for s in stats.SCORES]
    cells += ["<td>–</td>"] * 4
    return f"<tr class=\"reference\">{''.join(cells)}</tr>"


def settings_table(report: Report) -> str:
    """How each model ran: the one-line description, then each setting in a column of its own."""
    keys = [k for k in SETTING_KEYS if any(k in m.settings for m in report.models)]
    # the weights as metrics.json describes them in full (package, file, checksum), else as configured
    rows = [[describe_settings(m), *[m.metrics.get(k, m.settings.get(k)) if k == "weights" else m.settings.get(k)
                                     for k in keys]] for m in report.models]
    frame = pd.DataFrame(rows, dtype=object, index=[m.name for m in report.models],
                         columns=["settings", *[k.replace("_", " ") for k in keys]])
    return ("<h3>Run settings</h3><p class=\"muted\">As each run resolved them (config.json, metrics.json); "
            "epochs is the most a run may take (early stopping may end it sooner).</p>"
            + frame_table(frame, "model"))


def significance_section(report: Report) -> str:
    names = [m.name for m in report.models if m.predictions is not None]
    if len(names) < 2:
        return ""
    rows, css = [], []
    for a in names:
        cells, marks = [esc(a)], ["name"]
        for b in names:
            t = report.mcnemar.get((a, b))
            if t is None:
                cells.append("–")
                marks.append("diag")
                continue
            p = esc(fmt_p(t.p_value))
            cells.append(f"<span title=\"{t.only_a} crops only {esc(a)} got right, {t.only_b} only {esc(b)}, "
                         f"of {t.n}\">{p}<span class=\"ci\">{t.only_a} / {t.only_b}</span></span>")
            marks.append("sig" if t.p_value < 0.05 else "")
        rows.append(cells)
        css.append(marks)
    pairs = len(names) * (len(names) - 1) // 2
    intro = ("<p class=\"muted\">McNemar's exact test on the crops both models scored, matched by crop path: "
             "two-sided p that the row and column model err equally often. Under it: crops only the row model got "
             f"right / only the column model. Red: p &lt; 0.05. With {pairs} comparisons, a Bonferroni threshold "
             f"for 5% overall is p &lt; {0.05 / pairs:.4f}.</p>")
    return section("significance", "Pairwise significance", intro + table(["", *map(esc, names)], rows, css))


def small_class_marks(report: Report) -> dict[str, str]:
    """A dagger for each class with too few test crops to rank models on (its columns are never green)."""
    return {c: f"<sup title=\"only {n} test crop(s)\">†</sup>" for c, n in report.cautions.small_classes.items()}


def small_class_legend(report: Report) -> str:
    small = report.cautions.small_classes
    if not small:
        return ""
    listed = ", ".join(f"{c} ({n})" for c, n in small.items())
    return (f"<p class=\"muted\">† fewer than {caveats.MIN_TEST_CROPS} test crops: {esc(listed)}. Too few to rank "
            "models on; these columns are never marked best.</p>")


def per_class_section(report: Report, page_dir: Path, notes: list[str]) -> str:
    f1 = per_class_frame(report.models, report.classes, "f1")
    marks = small_class_marks(report)
    body = small_class_legend(report) + "<h3>F1 per class</h3>" + frame_table(f1, "model", highlight=True,
                                                                               unranked=marks)
    iou = per_class_frame(report.models, report.classes, "iou")
    source = "each model's predictions.csv"
    written = read_iou_table(report.results_dir / "iou.csv", report.classes)
    if written is not None and agrees(written, iou):
        iou, source = written.reindex(iou.index), "results/iou.csv (ml-IOU.py), which agrees with the predictions"
    else:
        iou["mean"] = [m.scores.get("mean_iou") for m in report.models]
        if written is not None:
            notes.append("results/iou.csv does not match the models' predictions (rerun ml-IOU.py); "
                         "the IoU table shows values recomputed from predictions.csv")
    body += f"<h3>IoU per class</h3><p class=\"muted\">Label IoU (Jaccard), from {esc(source)}.</p>"
    body += frame_table(iou, "model", highlight=True, unranked=marks)
    if (report.results_dir / "iou.png").is_file():
        body += gallery([("IoU per class", report.results_dir / "iou.png")], page_dir, "wide")
    return section("per-class", "Per class", body)


MODEL_FILES = (layout.REPORT_NAME, layout.METRICS_NAME, layout.PREDICTIONS_NAME)


def class_reports_section(report: Report, page_dir: Path) -> str:
    """Each model's classification report (precision, recall, F1, support per class), with links to
    the files it comes from."""
    blocks = []
    for m in report.models:
        frame = class_report_frame(m)
        if frame is None:
            continue
        links = "".join(f"<a href=\"{href(m.folder / name, page_dir)}\">{esc(name)}</a>" for name in MODEL_FILES
                        if (m.folder / name).is_file())
        blocks.append(f"<div><h3>{esc(m.name)}<span class=\"files\">{links}</span></h3>"
                      f"{frame_table(frame, 'class')}</div>")
    if not blocks:
        return ""
    intro = ("<p class=\"muted\">As scikit-learn's classification_report, from each model's predictions.csv: "
             "precision, recall, F1 and test crops (support) per class; macro avg is the unweighted mean over the "
             "classes with test or predicted crops, weighted avg the mean weighted by support.</p>")
    return section("class-reports", "Per model", intro + f"<div class=\"reports\">{''.join(blocks)}</div>")


def reproduce_section(report: Report) -> str:
    """How to run it all again: the commit, the date, the package versions and every stage's command."""
    runs = stage_runs(report)
    own = report.run or {}
    commit = own.get("commit") or "not a git checkout"
    body = (f"<p>Code commit <code>{esc(commit)}</code>; report written {esc(own.get('date', '–'))} with Python "
            f"{esc(own.get('python', '–'))}.</p>")
    lines = []
    for run in runs:
        record = run.record
        differs = [f"commit {record.get('commit')}"] if record.get("commit") != own.get("commit") else []
        versions = record.get("versions") or {}
        differs += [f"{k} {v}" for k, v in versions.items() if (own.get("versions") or {}).get(k) not in (None, v)]
        lines.append(f"# {run.stage} ({record.get('date', 'date unknown')}"
                     f"{'; ran with ' + ', '.join(differs) if differs else ''})\n{run.command}")
    body += f"<pre class=\"commands\">{esc(chr(10).join(lines))}</pre>"
    unrecorded = unrecorded_stages(report)
    if unrecorded:
        body += (f"<p class=\"muted\">No command recorded for {esc(', '.join(unrecorded))} (trained by a version "
                 "that did not keep one in config.json).</p>")
    versions = own.get("versions") or {}
    if versions:
        body += ("<h3>Package versions</h3><p class=\"versions\">"
                 + " · ".join(f"<b>{esc(k)}</b>&nbsp;{esc(v)}" for k, v in versions.items()) + "</p>")
    intro = ("<p class=\"muted\">Each stage stored its command line, the commit and the package versions it ran "
             "with (config.json of each model folder, summary.json of the data); a stage that ran with other "
             "versions or another commit than this report says so.</p>")
    return section("reproduce", "How to reproduce", intro + body)


def read_iou_table(path: Path, classes: Sequence[str]) -> pd.DataFrame | None:
    """ml-IOU.py's iou.csv (classes as rows, models as columns) as models x classes, then 'mean'."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError):
        return None
    if frame.empty:
        return None
    frame = frame.set_index(frame.columns[0])
    frame.index = frame.index.astype(str)
    if set(classes) & set(frame.index):
        frame = frame.T
    known = [c for c in classes if c in frame.columns]
    return frame[known + [c for c in frame.columns if c not in known]].apply(pd.to_numeric, errors="coerce")


def agrees(written: pd.DataFrame, recomputed: pd.DataFrame, tolerance: float = 1e-3) -> bool:
    """Same models and classes, and the same per-class IoU to the precision iou.csv keeps."""
    if not set(recomputed.index) <= set(written.index) or not set(recomputed.columns) <= set(written.columns):
        return False
    diff = (written.loc[recomputed.index, recomputed.columns] - recomputed).abs()
    both_nan = written.loc[recomputed.index, recomputed.columns].isna() & recomputed.isna()
    return bool(((diff <= tolerance) | both_nan).all().all())


def robustness_frame(models: Sequence[ModelResult]) -> pd.DataFrame | None:
    """Models x (clean macro F1, mean under corruption, relative drop, worst, per corruption)."""
    rows = {}
    for m in models:
        table_ = robustness_table.read_table(m.folder)
        if table_ is None or table_.empty:
            continue
        s = robustness_table.summarise(table_)
        rows[m.name] = {"clean macro F1": s["clean_macro_f1"], "mean macro F1 corrupted": s["mean_corrupted_macro_f1"],
                        "relative drop": s["relative_drop"], "worst condition": s["worst_condition"],
                        "worst macro F1": s["worst_macro_f1"],
                        **{k.replace("_", " "): v for k, v in s["per_corruption_mean_macro_f1"].items()}}
    return pd.DataFrame.from_dict(rows, orient="index") if rows else None


def robustness_section(report: Report, page_dir: Path) -> str:
    if not any((m.folder / layout.ROBUSTNESS_TABLE).is_file() for m in report.models):
        return ""
    frame = robustness_frame(report.models)
    if frame is None:
        return ""
    intro = ("<p class=\"muted\">Each model's robustness.csv (robustness.py): macro F1 on the clean test split, "
             "its mean over every corruption and severity, the relative drop, the worst condition, and the mean "
             "macro F1 per corruption. Green: best of each column (smallest drop).</p>")
    plots = [(m.name, m.folder / layout.ROBUSTNESS_PLOT) for m in report.models
             if (m.folder / layout.ROBUSTNESS_PLOT).is_file()]
    body = intro + frame_table(frame, "model", highlight=True, lower_better={"relative drop"})
    return section("robustness", "Robustness", body + (gallery(plots, page_dir) if plots else ""))


# ---------------------------------------------------------------- other photo sets (robustness.py --external)

def external_rows(models: Sequence[ModelResult], notes: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the other-photo-sets table: one row per model, set and TTA, from each external.csv."""
    from microplastics.results import external_sets

    tables = {m.name: (m, external_sets.read_table(m.folder)) for m in models}
    tables = {k: v for k, v in tables.items() if v[1] is not None and not v[1].empty}
    recalls = list(dict.fromkeys(c for _, t in tables.values() for c in external_sets.recall_columns(t)))
    header = ["model", "set", "TTA", "n", "accuracy", "macro F1",
              *[esc(f"recall {c[len(external_sets.RECALL_PREFIX):]}") for c in recalls],
              "test macro F1", "drop in macro F1", "drop in accuracy"]
    rows = []
    for name, (m, frame) in tables.items():
        for _, row in frame.iterrows():
            notes.extend(external_agreement(m, row))
            rows.append([esc(name), esc(row["set"]), esc(row["tta"]), esc(fmt(row["n"])),
                         score_cell(row, "accuracy") if "accuracy_low" in row else esc(fmt(row["accuracy"])),
                         score_cell(row, "macro_f1") if "macro_f1_low" in row else esc(fmt(row["macro_f1"])),
                         *[esc(fmt(row.get(c))) for c in recalls], esc(fmt(row.get("test_macro_f1"))),
                         esc(fmt(row.get("drop_macro_f1"))), esc(fmt(row.get("drop_accuracy")))])
    return header, rows


def external_agreement(m: ModelResult, row: pd.Series) -> list[str]:
    """A note when a row of external.csv is not what the predictions file it names gives."""
    from microplastics.results import metrics

    path = m.folder / str(row.get("predictions", ""))
    if not row.get("predictions") or not path.is_file():
        return [f"{m.name} on {row['set']}: the predictions behind its external.csv row are missing"]
    saved = metrics.read_predictions(path)
    scores = metrics.compute_metrics(saved["true"], saved["pred"], metrics.model_classes({}, saved))
    if abs(scores["macro_f1"] - float(row["macro_f1"])) > 1e-5 or int(scores["n"]) != int(row["n"]):
        return [f"{m.name} on {row['set']}: external.csv says macro F1 {float(row['macro_f1']):.4f} but {path} gives "
                f"{scores['macro_f1']:.4f}; rerun robustness.py --external"]
    return []


def external_section(report: Report, page_dir: Path, notes: list[str]) -> str:
    if not any((m.folder / "external.csv").is_file() for m in report.models):
        return ""
    header, rows = external_rows(report.models, notes)
    if not rows:
        return ""
    intro = ("<p class=\"muted\">Each model's external.csv (robustness.py --external): annotated photo sets the "
             "model was not trained on, their classes mapped to the model's. Accuracy and macro F1 with 95% "
             "bootstrap intervals over the set's crops, recall per class (empty: the set has no such crop), and the "
             "drop from the model's own test split (its metrics.json, or the test split scored in the same run "
             "with the same TTA). TTA dihedral8: probabilities averaged over the 8 flips and quarter turns.</p>")
    plots = [(m.name, m.folder / "external.png") for m in report.models if (m.folder / "external.png").is_file()]
    body = intro + table(header, rows) + (gallery(plots, page_dir) if plots else "")
    return section("external", "Other photo sets", body)


def notes_html(notes: Iterable[str]) -> str:
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f"<ul class=\"notes\">{items}</ul>" if items else ""


# ---------------------------------------------------------------- the page

def render(report: Report, page: Path) -> str:
    page_dir = page.parent
    missing: list[str] = []
    page_notes: list[str] = []
    figures = [
        figure_section("confusion", "Confusion matrices", "Counts on the test split; colour is the share of each "
                       "true class (recall), so small classes stay visible.", report.models, page_dir,
                       existing("confusion_matrix.png"), missing, "third"),
        figure_section("curves", "Training curves", "Loss and accuracy per epoch on train and validation; the "
                       "dashed line marks the chosen epoch, the one of the lowest validation loss, whose weights "
                       "were kept.", [m for m in report.models if m.is_deep], page_dir, existing("curves.png"),
                       missing, "half") + overlay_figure(report, page_dir),
    ]
    later = [
        figure_section("grids", "Prediction grids", "Test crops with true (T) and predicted (P) class, ✓ right "
                       "and ✗ wrong (prediction.py; ml-baselines.py's test_grid.png where prediction.py has not "
                       "run).", report.models,
                       page_dir, existing("predictions_grid.png", "test_grid.png"), missing, "wide"),
        figure_section("gradcam", "Grad-CAM", "Where each deep model looked (token maps for the ViT).",
                       [m for m in report.models if m.is_deep], page_dir,
                       gradcam_figure, missing, "wide"),
        localisation_section(report.models),
    ]
    sections = [data_section(report), comparison_section(report), significance_section(report), *figures,
                per_class_section(report, page_dir, page_notes), class_reports_section(report, page_dir),
                *later, robustness_section(report, page_dir), external_section(report, page_dir, page_notes),
                reproduce_section(report)]
    notes = notes_html(report.notes + page_notes + [f"missing figures: {m}" for m in missing])
    body = "".join(sections)
    nav = "".join(f"<a href=\"#{a}\">{t}</a>" for a, t in NAV if f"id=\"{a}\"" in body)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Microplastic classification: model comparison</title><style>{CSS}</style></head><body><main>"
            f"<h1>Microplastic particle classification</h1>{banner_html(report)}"
            f"<p class=\"muted\">{len(report.models)} models, "
            f"{esc(', '.join(report.classes))}; results in {esc(report.results_dir)}.</p><nav>{nav}</nav>"
            f"{lead(report)}{notes}{body}</main></body></html>\n")


def banner_html(report: Report) -> str:
    """What the data is, first thing on the page, when it was generated."""
    banner = report.cautions.banner
    return f"<p class=\"banner\">{esc(banner[0].upper() + banner[1:])}.</p>" if banner else ""


NAV = [("data", "Data"), ("comparison", "Comparison"), ("significance", "Significance"),
       ("confusion", "Confusion"), ("curves", "Curves"), ("per-class", "Per class"), ("class-reports", "Per model"),
       ("grids", "Predictions"),
       ("gradcam", "Grad-CAM"), ("localisation", "Localisation"), ("robustness", "Robustness"),
       ("external", "Other photo sets"),
       ("reproduce", "Reproduce")]


def write_html(report: Report, path: Path) -> Path:
    fileio.write_text(path, render(report, path))
    return path
