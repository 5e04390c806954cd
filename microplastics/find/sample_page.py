"""The pictures and the page of a ``--find`` run: overlays, size distributions, the review sheet
and a self-contained report.html (figures embedded, so the page can be mailed on its own)."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd

from microplastics.core import fileio
from microplastics.results.grids import save_prediction_grid
from microplastics.results.html_report import CSS, esc, frame_table, section, table
from microplastics.core.plots import plt, save_figure

CLASS_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60)]
UNCERTAIN_COLOUR = (255, 255, 0)


def class_colour(classes: Sequence[str], name: str) -> tuple[int, int, int]:
    return CLASS_COLOURS[list(classes).index(name) % len(CLASS_COLOURS)] if name in classes else (255, 255, 255)


def draw_overlay(image: np.ndarray, labels: np.ndarray, frame: pd.DataFrame, classes: Sequence[str],
                 path: Path) -> None:
    """The photo with each particle's outline in its class colour and ``class prob`` beside it;
    an uncertain particle also gets a yellow box and a '?'."""
    canvas = np.ascontiguousarray(image.copy())
    for row in frame.to_dict("records"):
        top, left, bottom, right = (int(row[k]) for k in ("minr", "minc", "maxr", "maxc"))
        sub = (labels[top:bottom, left:right] == row["particle"]).astype(np.uint8)
        contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        colour = class_colour(classes, row["class"])
        cv2.drawContours(canvas, contours, -1, colour, 1, offset=(left, top))
        text = f"{row['class']} {max(row[f'prob_{c}'] for c in classes):.2f}" + ("?" if row["uncertain"] else "")
        if row["uncertain"]:
            cv2.rectangle(canvas, (left - 2, top - 2), (right + 1, bottom + 1), UNCERTAIN_COLOUR, 1)
        org = (left, max(10, top - 3))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    with fileio.atomic_path(path) as tmp:  # keeps the .png suffix that cv2 reads the format from
        if not cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def save_size_distribution(particles: pd.DataFrame, classes: Sequence[str], unit: str, path: Path) -> None:
    """One histogram of Feret max per class, on a log axis (sizes span decades)."""
    column = f"feret_max_{unit}"
    values = particles[column].to_numpy(float)
    fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 2.8), squeeze=False, sharex=True)
    if len(values) and values.max() > 0:
        lo, hi = max(values[values > 0].min(), 1e-3), values.max()
        bins = np.geomspace(lo / 1.05, hi * 1.05, 20) if hi > lo else 10
    else:
        bins = 10
    for ax, cls in zip(axes[0], classes):
        part = particles.loc[particles["class"] == cls, column].to_numpy(float)
        colour = np.array(class_colour(classes, cls)) / 255
        if len(part):
            ax.hist(part, bins=bins, color=colour, edgecolor="black", linewidth=0.4)
        if isinstance(bins, np.ndarray):
            ax.set_xscale("log")
        ax.set_title(f"{cls} (n={len(part)})")
        ax.set_xlabel(f"Feret max ({'µm' if unit == 'um' else 'px'})")
    axes[0][0].set_ylabel("particles")
    fig.suptitle("Size distribution per class" + ("" if unit == "um" else " (pixels: no scale given)"))
    save_figure(fig, path)


def save_review_sheet(review: Sequence[tuple[np.ndarray, pd.Series]], classes: Sequence[str], path: Path) -> None:
    """The uncertain particles' crops with their two most probable classes, for a person to check."""
    labels = []
    for _, row in review:
        probs = sorted(((row[f"prob_{c}"], c) for c in classes), reverse=True)[:2]
        labels.append(f"{row['photo'][-14:]}#{row['particle']}\n" + " / ".join(f"{c} {p:.2f}" for p, c in probs))
    save_prediction_grid([crop for crop, _ in review], [""] * len(review), labels, path,
                         title=f"{len(review)} uncertain particle(s): check and correct in particles.csv")


def embed(path: Path) -> str:
    """An <img> holding the PNG itself, so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt=\"{esc(path.name)}\" src=\"data:image/png;base64,{data}\">"


def write_figures_and_page(out: Path, particles: pd.DataFrame, samples_table: pd.DataFrame, classes: Sequence[str],
                           review: Sequence[tuple[np.ndarray, pd.Series]], *, scores: dict[str, Any] | None,
                           calibration: dict[str, Any], skipped: Sequence[tuple[str, str]], title: str,
                           n_overlays: int) -> None:
    unit = calibration["unit"]
    save_size_distribution(particles, classes, unit, out / "size_distribution.png")
    if review:
        save_review_sheet(review, classes, out / "review_sheet.png")
    overlays = sorted((out / "overlays").rglob("*.png"))[:max(0, n_overlays)]
    fileio.write_text(out / "report.html", render_page(out, particles, samples_table, classes, scores, calibration,
                                                       skipped, title, overlays, bool(review)))


def render_page(out: Path, particles: pd.DataFrame, samples_table: pd.DataFrame, classes: Sequence[str],
                scores: dict[str, Any] | None, calibration: dict[str, Any], skipped: Sequence[tuple[str, str]],
                title: str, overlays: Sequence[Path], has_review: bool) -> str:
    unit = calibration["unit"]
    scale_text = ("Sizes in micrometres, scale from " + ", ".join(calibration["source"]) + "." if unit == "um"
                  else "No scale was given (--um-per-px or --reference-size-um): every size is in pixels.")
    per_class = particles.groupby("class").agg(particles=("photo", "size"),
                                               median_feret_max=(f"feret_max_{unit}", "median"),
                                               uncertain=("uncertain", "sum")).reindex(classes).fillna(0)
    per_class.columns = ["particles", f"median Feret max ({unit})", "uncertain"]
    parts = [f"<h1>Sample report</h1><p class=\"muted\">{esc(title)}</p>",
             f"<div class=\"lead\">{len(particles)} particles found and classified; "
             f"{int(particles['uncertain'].sum())} below the review threshold. {esc(scale_text)}</div>",
             section("samples", "Samples", "<p>Counts per class and size class (Feret max) per sample, as in "
                     "samples.csv.</p>" + frame_table(samples_table.set_index("sample"),
                                                                            "sample", digits=0)),
             section("classes", "Classes", frame_table(per_class, "class", digits=1)
                     + f"<figure>{embed(out / 'size_distribution.png')}</figure>")]
    if scores:
        parts.append(section("finder", "Finder against the annotations", scores_html(scores)))
    if has_review:
        parts.append(section("review", "Review sheet", f"<figure>{embed(out / 'review_sheet.png')}</figure>"))
    if overlays:
        figures = "".join(f"<figure><figcaption>{esc(p.relative_to(out / 'overlays').as_posix()[:-4])}</figcaption>"
                          f"{embed(p)}</figure>" for p in overlays)
        parts.append(section("overlays", "Overlays", "<p>Outlines in class colours; uncertain particles boxed in "
                             "yellow with a '?'. Every photo is in overlays/.</p>"
                             f"<div class=\"gallery half\">{figures}</div>"))
    if skipped:
        parts.append(section("skipped", "Skipped photos", "<ul>" + "".join(f"<li>{esc(i)}: {esc(r)}</li>"
                                                                              for i, r in skipped) + "</ul>"))
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Sample report</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def scores_html(scores: dict[str, Any]) -> str:
    rows = []
    for t, s in scores["iou"].items():
        rows.append([f"IoU ≥ {t}", f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                     f"{s['end_to_end']['macro_f1']:.3f}"])
    median = scores["count_error"]["median"]
    recall = scores["iou"]["0.3"]["recall_per_class"]
    return (table(["match", "precision", "recall", "F1", "end-to-end macro-F1"], rows)
            + f"<p>{scores['n_found']} found, {scores['n_truth']} annotated in {scores['n_photos']} photos; "
            f"median per-photo count error {'' if median is None else f'{100 * median:.1f}%'}.</p>"
            + table(["class", "recall at IoU ≥ 0.3"], [[esc(c), f"{v:.3f}"] for c, v in recall.items()]))
