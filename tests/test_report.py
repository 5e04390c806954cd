"""report.py: the comparison table, significance matrix, split checks and the HTML page."""
import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datagen import make_processed
from microplastics.data import dataset
from microplastics.results import metrics, report as reports, stats
from microplastics.core.cli import UserError

ROOT = Path(__file__).resolve().parents[1]
SCORES = list(stats.SCORES)


def tiny_png(path: Path, colour=(200, 80, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path)


def fake_model(results: Path, processed: Path, name: str, accuracy: float, seed: int, deep: bool = False,
               fingerprint: str | None = None) -> Path:
    """A model folder as a stage would leave it, from made-up predictions on the real test crops."""
    manifest = dataset.load_manifest(processed)
    test = dataset.split_frame(manifest, "test")
    classes = dataset.class_names(manifest)
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(test)) > accuracy
    y_pred = np.where(wrong, rng.choice(classes, len(test)), test["label"])
    probs = rng.dirichlet(np.ones(len(classes)), len(test))
    extra = {"epochs_run": 3, "best_epoch": 2, "image_size": 64} if deep else None
    folder = results / name
    metrics.write_evaluation(folder, model=name, classes=classes, paths=test["path"], y_true=test["label"],
                             y_pred=y_pred, probs=probs,
                             split_fingerprint=fingerprint or dataset.split_fingerprint(manifest),
                             weights="none" if deep else "n/a", train_seconds=12.5 + seed, extra=extra)
    if deep:
        (folder / "config.json").write_text(json.dumps({"arch": name, "image_size": 64, "epochs": 3,
                                                        "weights": "none", "batch_size": 8}))
        tiny_png(folder / "curves.png")
        tiny_png(folder / "gradcam" / "overview.png")
    tiny_png(folder / "predictions_grid.png", (40, 80, 200))
    return folder


@pytest.fixture()
def results(tmp_path, processed_dir) -> Path:
    root = tmp_path / "results"
    fake_model(root, processed_dir, "rf", 0.6, seed=1)
    fake_model(root, processed_dir, "svm", 0.7, seed=2)
    fake_model(root, processed_dir, "vgg16", 0.9, seed=3, deep=True)
    return root


def run_report(results: Path, data: Path, *extra: str) -> None:
    assert reports.main(["--results", str(results), "--data", str(data), "--n-boot", "200", *extra]) == 0


def test_summary_figures_equal_those_recomputed_from_predictions(results, processed_dir):
    run_report(results, processed_dir)
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary["model"]) == {"rf", "svm", "vgg16"}
    for _, row in summary.iterrows():
        pred = metrics.read_predictions(results / row["model"] / "predictions.csv")
        stored = metrics.load_metrics(results / row["model"])
        fresh = metrics.compute_metrics(pred["true"], pred["pred"], stored["classes"])
        for score in SCORES:
            assert row[score] == pytest.approx(fresh[score], abs=1e-6)
            assert row[score] == pytest.approx(stored[score], abs=1e-6)
            assert row[f"{score}_low"] - 1e-9 <= row[score] <= row[f"{score}_high"] + 1e-9
        assert row["n"] == len(pred)
    # ranked by macro F1, best first
    assert summary["macro_f1"].is_monotonic_decreasing
    assert summary["rank"].tolist() == [1, 2, 3]
    vgg = summary.set_index("model").loc["vgg16"]
    assert (vgg["epochs_run"], vgg["best_epoch"], vgg["weights"], vgg["image_size"]) == (3, 2, "none", 64)


def test_markdown_holds_the_table_and_the_mcnemar_matrix(results, processed_dir):
    run_report(results, processed_dir)
    md = (results / "summary.md").read_text()
    summary = pd.read_csv(results / "summary.csv").set_index("model")
    acc = summary.loc["vgg16"]
    assert f"{acc['accuracy']:.3f} [{acc['accuracy_low']:.3f}, {acc['accuracy_high']:.3f}]" in md
    assert "McNemar" in md
    preds = {m: metrics.read_predictions(results / m / "predictions.csv") for m in ("rf", "vgg16")}
    t = stats.mcnemar_exact(*stats.paired_outcomes(preds["rf"], preds["vgg16"]))
    row = next(line for line in md.splitlines() if line.startswith("| rf |") and "(" in line)
    assert f"({t.only_a}/{t.only_b})" in row
    assert "random weights" in md and "vgg16 (64 px, 3 epochs max, weights none)" in md


def test_settings_name_the_robust_options_only_when_set(results, processed_dir):
    config = results / "vgg16" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "augment": "robust", "input_norm": "crop",
                                   "val_augment": "on", "shape_cues": "on"}))
    rf_metrics = results / "rf" / "metrics.json"
    rf_metrics.write_text(json.dumps({**json.loads(rf_metrics.read_text()), "features": "robust", "augment": "robust"}))
    svm_metrics = results / "svm" / "metrics.json"
    svm_metrics.write_text(json.dumps({**json.loads(svm_metrics.read_text()), "features": "original",
                                       "augment": "none"}))
    run_report(results, processed_dir)
    settings = pd.read_csv(results / "summary.csv").set_index("model")["settings"]
    assert settings["vgg16"] == ("64 px, 3 epochs max, augment robust, input norm crop, val augment on, shape cues on, "
                                 "weights none")
    assert settings["rf"] == "robust features, augment robust"
    assert settings["svm"] == "original features", "the study's settings are not spelled out"


def test_models_on_different_test_splits_are_refused_by_name(results, processed_dir, capsys):
    fake_model(results, processed_dir, "resnet50", 0.8, seed=4, deep=True, fingerprint="0000other0000000")
    with pytest.raises(SystemExit) as exit_info:
        from microplastics.core.cli import run
        run(reports.main, ["--results", str(results), "--data", str(processed_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: models were scored on different test splits")
    assert "resnet50" in err and "rf, svm, vgg16" in err and len(err.splitlines()) == 1
    assert not (results / "summary.csv").exists()
    # choosing one group is allowed
    run_report(results, processed_dir, "--models", "rf", "vgg16")
    assert pd.read_csv(results / "summary.csv")["model"].tolist() == ["vgg16", "rf"]


def test_metrics_json_that_disagrees_with_predictions_is_refused(results, processed_dir):
    path = results / "svm" / "metrics.json"
    stored = json.loads(path.read_text())
    stored["accuracy"] = stored["accuracy"] / 2
    path.write_text(json.dumps(stored))
    with pytest.raises(UserError, match="svm: metrics.json says accuracy"):
        run_report(results, processed_dir)


def test_incomplete_folders_are_reported_not_dropped_silently(results, processed_dir):
    (results / "resnet50").mkdir()                       # a run that never finished
    (results / "svm" / "predictions.csv").unlink()       # figures only from metrics.json
    run_report(results, processed_dir)
    md = (results / "summary.md").read_text()
    page = (results / "report.html").read_text()
    for text in (md, page):
        assert "resnet50: no metrics.json" in text
        assert "svm: no predictions.csv" in text
    summary = pd.read_csv(results / "summary.csv").set_index("model")
    assert np.isnan(summary.loc["svm", "accuracy_low"]) and summary.loc["svm", "accuracy"] > 0


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.anchors: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if attrs.get("id"):
            self.anchors.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse_page(path: Path) -> References:
    parser = References()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_html_references_only_files_that_exist(results, processed_dir):
    shutil.rmtree(results / "vgg16" / "gradcam")         # a stage that did not run: no broken image
    run_report(results, processed_dir)
    page = results / "report.html"
    parsed = parse_page(page)
    local = [r for r in parsed.refs if not r.startswith("#")]
    assert all(not urlparse(r).scheme and not r.startswith("/") for r in local), local
    for ref in local:
        assert (page.parent / unquote(ref)).is_file(), ref
    for ref in (r for r in parsed.refs if r.startswith("#")):
        assert ref[1:] in parsed.anchors, ref
    expected = {"rf/confusion_matrix.png", "svm/confusion_matrix.png", "vgg16/confusion_matrix.png",
                "vgg16/curves.png", "rf/predictions_grid.png"}
    assert expected <= set(local)
    text = " ".join(parsed.text)
    assert "grad-cam: none for vgg16" in text
    assert "random weights" in text


def test_html_shows_data_summary_and_classes_in_one_order(results, processed_dir):
    run_report(results, processed_dir)
    html = (results / "report.html").read_text()
    classes = dataset.class_names(dataset.load_manifest(processed_dir))
    # the data table and both per-class tables list the classes in the same (sorted) order
    starts = [html.index(h) for h in ("id=\"data\"", "F1 per class", "IoU per class")]
    for start in starts:
        positions = [html.index(f">{c}<", start) for c in classes]
        assert positions == sorted(positions)
    assert "class=\"best\"" in html
    counts = dataset.load_manifest(processed_dir).groupby("split").size()
    assert f">{counts.sum()}<" in html                   # the grand total of crops


IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.broken = JSON.stringify(images.filter(i => !(i.complete && i.naturalWidth > 0))
                                                      .map(i => i.getAttribute("src")));
});
</script>"""


def browser_or_skip() -> str:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("no Chromium installed (.ci/run installs it); the page is still parsed by "
                    "test_html_references_only_files_that_exist")
    return browser


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--allow-file-access-from-files", *args], check=True, capture_output=True, text=True,
                          timeout=120)


def images_in_browser(browser: str, page: Path) -> tuple[int, list[str]]:
    """How many images the page has once loaded in Chromium, and the src of those that did not load.

    A copy of the page with a small script beside it: the script notes, when the page has loaded,
    each image that has no pixels, and --dump-dom prints what it noted."""
    probe = page.with_name(".browser-probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    try:
        dom = headless(browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    finally:
        probe.unlink()
    body = re.search(r"<body[^>]*data-images=\"(\d+)\"[^>]*data-broken=\"([^\"]*)\"", dom)
    assert body, "the probe did not run: " + dom[:300]
    return int(body.group(1)), json.loads(html.unescape(body.group(2)))


def test_html_renders_in_headless_chromium(results, processed_dir, tmp_path):
    browser = browser_or_skip()
    run_report(results, processed_dir)
    shot = tmp_path / "page.png"
    headless(browser, f"--screenshot={shot}", "--window-size=1280,2400", (results / "report.html").as_uri())
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50          # not a blank page
    expected = sum(1 for r in parse_page(results / "report.html").refs if r.endswith(".png")) // 2
    n_images, broken = images_in_browser(browser, results / "report.html")
    assert n_images == expected >= 6 and broken == []     # every figure loads
    (results / "rf" / "confusion_matrix.png").write_bytes(b"not a png")
    assert images_in_browser(browser, results / "report.html")[1] == ["rf/confusion_matrix.png"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    proc = subprocess.run([sys.executable, str(ROOT / "report.py"), "--results", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: results folder {tmp_path / 'nope'} does not exist; " \
                                  "run a model stage first or pass --results"
    from microplastics.core.cli import run
    (tmp_path / "empty" / "half_done").mkdir(parents=True)
    for argv in (["--results", str(tmp_path / "empty")], ["--n-boot", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            run(reports.main, argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: no <model>/metrics.json under")
    assert err[1] == "error: --n-boot must be at least 1, got 0"


def test_robustness_tables_are_summarised_when_present(results, processed_dir):
    pd.DataFrame({"corruption": ["none", "defocus_blur", "defocus_blur", "darker"], "severity": [0, 1, 3, 1],
                  "accuracy": [0.9, 0.8, 0.5, 0.85], "macro_f1": [0.8, 0.7, 0.4, 0.7], "n": [24] * 4,
                  "applied_to": ["crop"] * 4}).to_csv(results / "vgg16" / "robustness.csv", index=False)
    tiny_png(results / "vgg16" / "robustness.png")
    run_report(results, processed_dir)
    html = (results / "report.html").read_text()
    section = html[html.index("id=\"robustness\""):]
    # clean 0.8, mean corrupted (0.7 + 0.4 + 0.7) / 3 = 0.6, relative drop 0.25, worst defocus_blur@3
    for text in (">0.800<", ">0.600<", ">0.250<", "defocus_blur@3", "vgg16/robustness.png"):
        assert text in section, text
    assert "rf" not in section.split("</table>")[0].split("<tbody>")[1]   # only models that have one


def test_localisation_hit_rate_is_shown_per_deep_model(results, processed_dir):
    run_report(results, processed_dir)
    assert "id=\"localisation\"" not in (results / "report.html").read_text()  # none measured: no section
    summary = {"method": "gradcam", "n": 16, "mean_mass_inside": 0.625, "pointing_hit_rate": 0.9375,
               "mean_box_fraction": 0.25, "margin": 0.5, "target": "pred", "by_method": {}}
    (results / "vgg16" / "gradcam" / "localisation.json").write_text(json.dumps(summary))
    run_report(results, processed_dir)
    html = (results / "report.html").read_text()
    section = html[html.index("id=\"localisation\""):].split("</section>")[0]
    for text in (">vgg16<", ">gradcam<", ">16<", ">0.938<", ">0.625<", ">0.250<"):
        assert text in section, text
    assert ">rf<" not in section and "href=\"#localisation\"" in html


def test_data_summary_in_the_preprocessing_format(results, processed_dir, tmp_path):
    # summary.json as data-preprocessing.py writes it: counts by class then split, skipped items with reasons
    data = tmp_path / "processed"
    data.mkdir()
    shutil.copy(processed_dir / "manifest.csv", data / "manifest.csv")
    summary = {"settings": {"group_by": "photo", "seed": 42},
               "counts": {"foam": {"train": 7, "val": 2, "test": 3, "total": 12},
                          "hard": {"train": 7, "val": 3, "test": 2, "total": 12}},
               "photos": {"train": 4, "val": 2, "test": 2, "total": 8},
               "skipped": {"count": 2, "by_reason": {"box outside the photo": 2},
                           "items": [{"item": "p1.jpg box 3", "reason": "box outside the photo"},
                                     {"item": "p2.jpg box 9", "reason": "box outside the photo"}]}}
    (data / "summary.json").write_text(json.dumps(summary))
    run_report(results, data)
    html = (results / "report.html").read_text()
    section = html[html.index("id=\"data\""):html.index("id=\"comparison\"")]
    for text in (">7<", ">3<", ">24<", "group by photo", "Skipped: 2 item(s)", "p2.jpg box 9", "Photos per split"):
        assert text in section, text
    assert section.index(">foam<") < section.index(">hard<")


def iou_csv(results: Path, models: list[str]) -> pd.DataFrame:
    """iou.csv as ml-IOU.py writes it: classes as rows (then 'mean'), models as columns."""
    columns = {}
    for m in models:
        stored = metrics.load_metrics(results / m)
        columns[m] = [stored["per_class"][c]["iou"] for c in stored["classes"]] + [stored["mean_iou"]]
    frame = pd.DataFrame(columns, index=pd.Index(stored["classes"] + ["mean"], name="class"))
    frame.to_csv(results / "iou.csv", float_format="%.4f")
    return frame


def test_iou_table_comes_from_iou_csv_only_when_it_matches(results, processed_dir):
    iou_csv(results, ["rf", "svm", "vgg16"])
    run_report(results, processed_dir)
    html = (results / "report.html").read_text()
    assert "from results/iou.csv (ml-IOU.py)" in html and "does not match" not in html
    frame = iou_csv(results, ["rf", "svm", "vgg16"])
    frame.loc[frame.index[0], "rf"] = 0.0 if frame.iloc[0]["rf"] > 0.5 else 1.0    # a stale iou.csv
    frame.to_csv(results / "iou.csv", float_format="%.4f")
    run_report(results, processed_dir)
    html = (results / "report.html").read_text()
    assert "results/iou.csv does not match the models" in html
    assert "from each model&#x27;s predictions.csv" in html


def test_a_data_folder_of_another_split_is_flagged(results, tmp_path):
    from datagen import make_processed

    other = make_processed(tmp_path / "other", per_class=8, size=16, seed=1)
    run_report(results, other)
    assert "describes other data than the scores" in (results / "summary.md").read_text()


# ---------------------------------------------------------------- the cautions beside the table

class Cells(HTMLParser):
    """The cells of every table of a page, as (text, css class) per row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell, self.css = [], dict(attrs).get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(("".join(self.cell).strip(), self.css))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def page_tables(page: Path) -> list[list[list[tuple[str, str]]]]:
    parser = Cells()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tables


def model_with_predictions(results: Path, processed: Path, name: str, y_pred) -> Path:
    """A model folder whose test predictions are exactly ``y_pred``."""
    manifest = dataset.load_manifest(processed)
    test = dataset.split_frame(manifest, "test")
    classes = dataset.class_names(manifest)
    folder = results / name
    metrics.write_evaluation(folder, model=name, classes=classes, paths=test["path"], y_true=test["label"],
                             y_pred=list(y_pred), probs=None, split_fingerprint=dataset.split_fingerprint(manifest),
                             weights="n/a", train_seconds=1.0)
    return folder


def run_stage(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


BANNER = "these numbers test the pipeline, not the models"


def test_generated_photos_open_both_reports_with_what_they_are(tmp_path):
    run_stage("data-extraction.py", "--synthetic", "--n-images", "12", "--seed", "5", "--out", str(tmp_path / "MICRO"))
    run_stage("data-preprocessing.py", "--input", str(tmp_path / "MICRO"), "--output", str(tmp_path / "data"),
              "--workers", "1")
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert summary["origin"]["kind"] == "synthetic" and summary["origin"]["photos"] == 12
    fake_model(tmp_path / "results", tmp_path / "data", "rf", 0.8, seed=1)
    run_report(tmp_path / "results", tmp_path / "data")
    n_test = summary["totals"]["test"]
    sentence = (f"Synthetic photos from data-extraction.py --synthetic (12 photos, {n_test} test crops): "
                f"{BANNER}.")
    md = (tmp_path / "results" / "summary.md").read_text().splitlines()
    assert md[0] == "# Model comparison" and sentence in md[2], "the markdown opens with the banner"
    html = (tmp_path / "results" / "report.html").read_text()
    assert sentence in html
    assert html.index(sentence) < html.index("<nav>") < html.index("<table"), "the page opens with it"


def test_real_photos_get_no_banner(tmp_path, mp100):
    # a few whole photo series of mp100, read in place the way `make mp100` does (no origin.json)
    photos = sorted((mp100 / "MICRO" / "raw_img").iterdir())[:24]
    for photo in photos:
        for sub, name in (("raw_img", photo.name), ("annotation", f"{photo.name}.tsv")):
            (tmp_path / "MICRO" / sub).mkdir(parents=True, exist_ok=True)
            (tmp_path / "MICRO" / sub / name).symlink_to(mp100 / "MICRO" / sub / name)
    run_stage("data-preprocessing.py", "--input", str(tmp_path / "MICRO"), "--output", str(tmp_path / "data"),
              "--workers", "1")
    assert json.loads((tmp_path / "data" / "summary.json").read_text())["origin"] is None
    fake_model(tmp_path / "results", tmp_path / "data", "rf", 0.8, seed=1)
    run_report(tmp_path / "results", tmp_path / "data")
    for name in ("summary.md", "report.html"):
        text = (tmp_path / "results" / name).read_text()
        assert BANNER not in text and "ynthetic" not in text, name


def test_the_synthetic_origin_survives_an_archive(tmp_path):
    import tarfile

    from microplastics.data import synthetic

    synthetic.write_synthetic_micro(tmp_path / "drawn", n_images=2, seed=1, image_size=(200, 200))
    with tarfile.open(tmp_path / "drawn.tar", "w") as tar:
        tar.add(tmp_path / "drawn", arcname="MICRO")
    run_stage("data-extraction.py", "--archive", str(tmp_path / "drawn.tar"), "--out", str(tmp_path / "MICRO"))
    record = json.loads((tmp_path / "MICRO" / "origin.json").read_text())
    assert record["kind"] == "synthetic" and record["unpacked_from"] == str(tmp_path / "drawn.tar")


def test_majority_baseline_row_scores_the_training_majority(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[25, 12, 12, 12], size=16, seed=0)
    fake_model(tmp_path / "results", data, "rf", 0.9, seed=1)
    run_report(tmp_path / "results", data)
    test = dataset.split_frame(dataset.load_manifest(data), "test")
    accuracy = (test["label"] == "foam").mean()           # foam is the training split's largest class
    md = (tmp_path / "results" / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| – | majority class (foam) |"))
    assert f"| {len(test)} | {accuracy:.3f} [" in row
    rows = page_tables(tmp_path / "results" / "report.html")[1]
    assert [r[0][0] for r in rows[1:]] == ["rf", "majority class (foam)"], "the reference row comes last"
    assert all(css != "best" for _, css in rows[-1]), "the reference row is never the best"
    assert rows[-1][2][0].startswith(f"{accuracy:.3f}")
    assert "majority class" not in pd.read_csv(tmp_path / "results" / "summary.csv")["model"].tolist()


def test_no_baseline_row_without_predictions(results, processed_dir):
    for model in ("rf", "svm", "vgg16"):
        (results / model / "predictions.csv").unlink()
    run_report(results, processed_dir)
    assert "majority class" not in (results / "summary.md").read_text()
    assert "majority class" not in (results / "report.html").read_text()


def test_collapse_warning_from_80_percent_of_crops(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[25, 25, 25, 25], size=16, seed=0)
    test = dataset.split_frame(dataset.load_manifest(data), "test")
    n = len(test)                                         # 20 crops, 5 of each class
    k = int(np.ceil(0.8 * n))
    collapsed = ["hard"] * k + list(test["label"].iloc[k:])
    almost = ["hard"] * (k - 1) + ["foam"] * (n - k + 1)
    model_with_predictions(tmp_path / "results", data, "collapsed", collapsed)
    model_with_predictions(tmp_path / "results", data, "almost", almost)
    fake_model(tmp_path / "results", data, "fine", 0.9, seed=3)
    run_report(tmp_path / "results", data)
    warning = f"predicts hard for {k / n:.0%} of test crops (hard is 25% of them)"
    md = (tmp_path / "results" / "summary.md").read_text()
    rows = {line.split(" | ")[1].split(" ⚠")[0]: line for line in md.splitlines()
            if line.startswith("| ") and " | " in line}
    assert warning in rows["collapsed"]
    assert "⚠" not in rows["almost"] and "⚠" not in rows["fine"]
    cells = {r[0][0]: r[0][0] for r in page_tables(tmp_path / "results" / "report.html")[1][1:]}
    assert any(name.startswith("collapsed") and warning in name for name in cells)
    assert "almost" in cells and "fine" in cells and "majority class (foam)" in cells  # no warning on those


def test_exact_interval_only_where_the_bootstrap_has_zero_width(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[25, 25, 25, 25], size=16, seed=0)
    test = dataset.split_frame(dataset.load_manifest(data), "test")
    model_with_predictions(tmp_path / "results", data, "perfect", test["label"])
    fake_model(tmp_path / "results", data, "imperfect", 0.7, seed=2)
    run_report(tmp_path / "results", data)
    summary = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("model")
    n = len(test)
    perfect = summary.loc["perfect"]
    # Clopper-Pearson for n out of n: the lower bound solves p**n = 0.025
    assert perfect["accuracy_interval"] == "exact"
    assert perfect["accuracy_low"] == pytest.approx(0.025 ** (1 / n), abs=1e-6) and perfect["accuracy_high"] == 1.0
    assert perfect["macro_f1_low"] == perfect["macro_f1_high"] == 1.0, "only accuracy is a binomial proportion"
    imperfect = summary.loc["imperfect"]
    assert imperfect["accuracy_interval"] == "bootstrap" and imperfect["accuracy_high"] > imperfect["accuracy_low"]
    md = (tmp_path / "results" / "summary.md").read_text()
    assert f"1.000 [{0.025 ** (1 / n):.3f}, 1.000] exact" in md
    assert "zero-width bootstrap intervals: perfect macro precision" in md


def test_classes_with_few_test_crops_are_marked_and_never_best(tmp_path):
    data = make_processed(tmp_path / "data", per_class=[25, 12, 25, 25], size=16, seed=0)
    test = dataset.split_frame(dataset.load_manifest(data), "test")
    assert (test["label"] == "hard").sum() == 3 and (test["label"] == "foam").sum() == 5
    good = test["label"].tolist()
    worse = ["line" if t in ("foam", "line") else t for t in good]     # right on hard, wrong on most foam
    model_with_predictions(tmp_path / "results", data, "good", good)
    model_with_predictions(tmp_path / "results", data, "worse", worse)
    run_report(tmp_path / "results", data)
    html_path = tmp_path / "results" / "report.html"
    html = html_path.read_text()
    f1_table = page_tables(html_path)[[i for i, t in enumerate(page_tables(html_path))
                                       if t[0][0][0] == "model" and t[0][1][0] == "foam"][0]]
    header = [text for text, _ in f1_table[0]]
    assert header == ["model", "foam", "hard†", "line", "pellet"]
    hard, foam = header.index("hard†"), header.index("foam")
    assert all(row[hard][1] != "best" for row in f1_table[1:]), "a class of 3 test crops is never best"
    assert [row[foam][1] for row in f1_table[1:]] == ["best", ""], "a class of 5 test crops is ranked"
    assert "† fewer than 5 test crops: hard (3)" in html
    assert "classes with fewer than 5 test crops: hard (3)" in (tmp_path / "results" / "summary.md").read_text()


# ---------------------------------------------------------------- per-model tables, reproduce block, figures

def section_tables(page: Path, anchor: str) -> list[list[list[tuple[str, str]]]]:
    """The tables inside one section of the page."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f"<section id=\"{anchor}\">")
    parser = Cells()
    parser.feed(text[start:text.index("</section>", start)])
    return parser.tables


def test_per_model_tables_equal_sklearns_classification_report(results, processed_dir):
    from sklearn.metrics import classification_report

    run_report(results, processed_dir)
    page = results / "report.html"
    tables = section_tables(page, "class-reports")
    assert len(tables) == 3                                   # rf, svm, vgg16
    text = page.read_text(encoding="utf-8")
    for name, rows in zip(pd.read_csv(results / "summary.csv")["model"], tables):
        predictions = metrics.read_predictions(results / name / "predictions.csv")
        classes = sorted(set(predictions["true"]) | set(predictions["pred"]))
        expected = classification_report(predictions["true"], predictions["pred"], labels=classes,
                                         output_dict=True, zero_division=0)
        header = [text for text, _ in rows[0]]
        assert header == ["class", "precision", "recall", "f1-score", "support"]
        shown = {row[0][0]: [cell for cell, _ in row[1:]] for row in rows[1:]}
        for label in [*classes, "macro avg", "weighted avg"]:
            want = expected[label]
            assert shown[label] == [f"{want[k]:.3f}" for k in ("precision", "recall", "f1-score")] \
                + [str(int(want["support"]))], label
        assert shown["accuracy"][2] == f"{expected['accuracy']:.3f}"
        for file_name in ("classification_report.txt", "metrics.json", "predictions.csv"):
            assert f"href=\"{name}/{file_name}\"" in text


def test_every_stage_records_its_command_and_versions(tmp_path):
    import sklearn

    raw, data, out = tmp_path / "MICRO", tmp_path / "data", tmp_path / "results"
    extraction = ["--synthetic", "--n-images", "12", "--seed", "5", "--out", str(raw)]
    preprocessing = ["--input", str(raw), "--output", str(data), "--workers", "1"]
    baselines = ["--data", str(data), "--results", str(out), "--models", "rf", "--features", "original",
                 "--augment", "none", "--balance", "none", "--workers", "1", "--grid-size", "0"]
    run_stage("data-extraction.py", *extraction)
    run_stage("data-preprocessing.py", *preprocessing)
    run_stage("ml-baselines.py", *baselines)
    config = json.loads((out / "rf" / "config.json").read_text())
    summary = json.loads((data / "summary.json").read_text())
    runs = {"ml-baselines.py": (config["run"], baselines), "data-preprocessing.py": (summary["run"], preprocessing),
            "data-extraction.py": (summary["input_run"], extraction)}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    for script, (run, argv) in runs.items():
        assert run["argv"] == [script, *argv]
        assert run["versions"]["scikit-learn"] == sklearn.__version__ and "numpy" in run["versions"]
        assert run["date"].endswith("+00:00")
        if commit.strip():
            assert run["commit"].startswith(commit.strip())
    run_report(out, data)
    html = (out / "report.html").read_text()
    block = html[html.index("<section id=\"reproduce\">"):]
    import shlex
    for script, (_, argv) in runs.items():
        assert shlex.join(["python", script, *argv]).replace("'", "&#x27;") in block
    assert "python report.py" in block and f"<b>scikit-learn</b>&nbsp;{sklearn.__version__}" in block
    assert block.index("data-extraction.py") < block.index("data-preprocessing.py") < block.index("ml-baselines.py")


def test_settings_column_moves_to_the_run_settings_table(results, processed_dir):
    run_report(results, processed_dir)
    tables = section_tables(results / "report.html", "comparison")
    comparison, settings = tables[0], tables[-1]
    assert "settings" not in [text for text, _ in comparison[0]]
    assert [text for text, _ in settings[0]][:2] == ["model", "settings"]
    described = {row[0][0]: row[1][0] for row in settings[1:]}
    assert described["vgg16"] == "64 px, 3 epochs max, weights none"


def history_csv(folder: Path, best: int) -> None:
    losses = [1.0 / (1 + abs(e - best)) for e in range(1, 5)]
    pd.DataFrame({"epoch": range(1, 5), "train_loss": losses, "train_acc": 0.5, "val_loss": [2 - v for v in losses],
                  "val_acc": losses, "lr": 1e-3, "seconds": 1.0}).to_csv(folder / "history.csv", index=False)


def test_one_figure_overlays_the_deep_models_validation_curves(results, processed_dir):
    history_csv(results / "vgg16", best=2)
    run_report(results, processed_dir)
    overlay = results / "validation_curves.png"
    assert not overlay.exists(), "one deep model has nothing to compare with"
    fake_model(results, processed_dir, "resnet50", 0.8, seed=4, deep=True)
    history_csv(results / "resnet50", best=3)
    run_report(results, processed_dir)
    with Image.open(overlay) as img:
        assert img.width > 800 and len(img.convert("RGB").getcolors(maxcolors=1 << 20) or range(999)) > 50
    refs = parse_page(results / "report.html").refs
    assert refs.count("validation_curves.png") == 2, "shown, and linked to its full-size file"
    for ref in (r for r in refs if r.endswith(".png")):
        assert refs.count(ref) == 2, ref


def test_prediction_grids_mark_right_and_wrong_with_a_symbol(tmp_path, monkeypatch):
    from microplastics.results import grids

    titles = []
    real = grids._draw_tile
    monkeypatch.setattr(grids, "_draw_tile", lambda ax, *a: (real(ax, *a), titles.append(ax.get_title()))[0])
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    grids.save_prediction_grid([image] * 3, ["film", "film", ""], ["film", "fiber", "film"], tmp_path / "g.png")
    assert titles[0].startswith("✓") and titles[1].startswith("✗") and titles[2] == "P: film"
