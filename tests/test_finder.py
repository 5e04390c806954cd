"""The classical finder, the measures and the --find run of prediction.py on drawn photos."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from microplastics.find import detection, finder, measure, samples
from microplastics.classical.baselines import main as baselines_main
from microplastics.core.cli import UserError
from photodraw import draw_photo, fibre_mask, paper, paste, touching_discs

ROOT = Path(__file__).resolve().parents[1]


def found_boxes(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    _, found = finder.find_particles(image)
    return [(f.minr, f.minc, f.maxr, f.maxc) for f in found]


# ----------------------------------------------------------------------------- finding

@pytest.mark.parametrize("seed", [0, 1])
def test_finder_finds_the_drawn_particles_and_nothing_else(seed):
    drawn = draw_photo(seed)
    found = found_boxes(drawn.image)
    pairs = detection.match_boxes(found, drawn.boxes, 0.3)
    assert len(pairs) == len(drawn.boxes), f"recall {len(pairs)}/{len(drawn.boxes)}"  # the faint film too
    assert len(pairs) == len(found), f"precision {len(pairs)}/{len(found)}"
    # the scale bar and its text are not a particle, and nothing lies in the dark surround
    assert (detection.box_iou(found, [drawn.overlay_box]) < 0.1).all()
    centre, radius = np.array(drawn.image.shape[:2]) / 2, 0.47 * min(drawn.image.shape[:2])
    for minr, minc, maxr, maxc in found:
        assert math.dist(((minr + maxr) / 2, (minc + maxc) / 2), centre) < radius


def test_dark_surround_of_a_round_field_is_masked():
    image = draw_photo(0).image
    lit = finder.field_of_view(image)
    assert 0.5 < lit.mean() < 0.69  # the disc of radius 0.47 covers 69 % of the photo, less its rim
    assert not lit[0, 0] and lit[160, 160]
    assert finder.field_of_view(draw_photo(0, round_field=False).image).all()


def test_a_curved_fibre_is_one_particle_with_its_drawn_length():
    canvas = paper(200, 260, seed=3)
    mask, drawn_length = fibre_mask((200, 260), (30.0, 100.0), 190.0, 25.0, 1.2, thickness=2)
    paste(canvas, mask, (50, 45, 40))
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    labels, found = finder.find_particles(image)
    assert len(found) == 1
    f = found[0]
    length, width = measure.fibre_length(labels[f.minr:f.maxr, f.minc:f.maxc] == f.label)
    assert abs(length - drawn_length) / drawn_length < 0.10
    assert 1 <= width <= 8  # drawn about 3 px wide; the blurred edge adds a pixel or two on each side


def test_touching_particles_are_split():
    image, boxes = touching_discs()
    labels, found = finder.find_particles(image)
    assert len(found) == 2
    pairs = detection.match_boxes([(f.minr, f.minc, f.maxr, f.maxc) for f in found], boxes, 0.5)
    assert len(pairs) == 2


# ----------------------------------------------------------------------------- measuring

def test_measures_equal_hand_computations_at_a_scale():
    labels = np.zeros((80, 100), np.int32)
    labels[10:30, 5:45] = 1                      # a 20 x 40 px rectangle
    rows, cols = np.mgrid[0:80, 0:100]
    labels[(rows - 55) ** 2 + (cols - 70) ** 2 <= 15 ** 2] = 2  # a disc of radius 15
    image = np.full((80, 100, 3), 200, np.uint8)
    image[labels == 1] = (40, 90, 210)
    image[labels == 2] = (120, 120, 120)
    um = 2.5
    frame = measure.measure_particles(labels, image, [(1, 10, 5, 30, 45), (2, 40, 55, 71, 86)], um)
    rect, disc = frame.iloc[0], frame.iloc[1]
    assert rect["area_um2"] == pytest.approx(800 * um ** 2)
    assert rect["feret_max_um"] == pytest.approx(math.hypot(20, 40) * um)
    assert rect["feret_min_um"] == pytest.approx(20 * um)
    assert rect["equivalent_diameter_um"] == pytest.approx(math.sqrt(4 * 800 / math.pi) * um)
    assert rect["aspect_ratio"] == pytest.approx(math.hypot(20, 40) / 20)
    assert rect["solidity"] == pytest.approx(1.0)
    assert rect["colour"] == "blue" and disc["colour"] == "grey"
    area = (labels == 2).sum()
    assert disc["area_um2"] == pytest.approx(area * um ** 2)
    assert disc["feret_max_um"] == pytest.approx(31 * um, rel=0.02)  # 31 pixel squares across
    assert disc["circularity"] > 0.85 and rect["circularity"] < disc["circularity"]
    assert "area_px" not in frame.columns


def test_size_classes_and_scale_parsing(tmp_path):
    assert samples.size_class([50, 100, 299, 4000, 6000], [100, 300, 1000, 5000], "um") == \
        ["<100um", "100-300um", "100-300um", "1000-5000um", ">5000um"]
    assert measure.parse_scale("0.5") == 0.5
    csv = tmp_path / "scale.csv"
    csv.write_text("photo,um_per_px\na.jpg,2.0\n")
    assert measure.parse_scale(str(csv)) == {"a.jpg": 2.0}
    assert measure.scale_for("sub/a.jpg", {"a.jpg": 2.0}) == 2.0


# ----------------------------------------------------------------------------- the --find run

@pytest.fixture(scope="module")
def model(processed_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("find_model")
    baselines_main(["--data", str(processed_dir), "--results", str(out), "--models", "rf", "--workers", "1",
                    "--grid-size", "0", "--no-cache", "--augment", "none"])
    return out / "rf"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A plain folder (no raw_img/, no annotation/): two samples as sub-folders, three photos
    and one file that is not a photo at all."""
    root = tmp_path_factory.mktemp("plain") / "photos"
    for sample, seeds in (("site_a", (0, 1)), ("site_b", (2,))):
        (root / sample).mkdir(parents=True)
        for seed in seeds:
            Image.fromarray(draw_photo(seed).image).save(root / sample / f"p{seed}.png")
    (root / "site_b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def find(model: Path, photos: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "prediction.py"), "--model", str(model), "--photos",
                           str(photos), "--find", "--out", str(out), "--device", "cpu", *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def plain_run(model, photos, tmp_path_factory) -> tuple[Path, str]:
    """One uncalibrated run over the plain folder, read by several tests: (out, stderr)."""
    out = tmp_path_factory.mktemp("plain_run") / "found"
    done = find(model, photos, out)
    assert done.returncode == 0, done.stderr
    return out, done.stderr


def test_an_unreadable_photo_is_skipped_and_the_others_processed(plain_run):
    out, stderr = plain_run
    assert "skipped site_b/broken.jpg" in stderr
    assert pd.read_csv(out / "particles.csv")["photo"].nunique() == 3
    assert json.loads((out / "metrics.json").read_text())["skipped"][0]["item"] == "site_b/broken.jpg"


def test_find_run_writes_the_sample_report_in_pixels_when_uncalibrated(plain_run):
    out = plain_run[0]
    particles = pd.read_csv(out / "particles.csv")
    table = pd.read_csv(out / "samples.csv")
    assert set(table["sample"]) == {"site_a", "site_b"}
    assert table["particles"].sum() == len(particles) > 0
    for sample, rows in particles.groupby("sample"):
        row = table.set_index("sample").loc[sample]
        assert row["particles"] == len(rows)
        assert sum(row[f"n_{c}"] for c in rows["class"].unique()) == len(rows)
        assert sum(v for k, v in row.items() if k.startswith("n_<") or k.startswith("n_>") or
                   (k.startswith("n_") and k[2].isdigit())) == len(rows)
    # uncalibrated: pixels in every column name, in the CSV, the metrics and the page
    assert {"area_px", "feret_max_px", "length_px"} <= set(particles.columns)
    assert not [c for c in particles.columns if c.endswith("_um") or c.endswith("_um2")]
    assert particles["size_class"].str.endswith("px").all()
    assert (particles["scale_source"] == "none: sizes in pixels").all()
    assert json.loads((out / "metrics.json").read_text())["calibration"]["unit"] == "px"
    page = (out / "report.html").read_text()
    assert "every size is in pixels" in page and "data:image/png;base64," in page
    assert (out / "size_distribution.png").is_file()
    assert len(list((out / "overlays").rglob("*.png"))) == 3
    top = particles[[c for c in particles.columns if c.startswith("prob_")]].max(axis=1)
    assert (particles["uncertain"] == (top < 0.6)).all()
    assert (out / "review_sheet.png").is_file() == bool(particles["uncertain"].any())
    assert ((particles["maxr"] > particles["minr"]) & (particles["maxc"] > particles["minc"])).all()


def test_find_run_with_a_scale_and_a_sample_pattern(model, photos, plain_run, tmp_path):
    out = tmp_path / "found"
    done = find(model, photos, out, "--um-per-px", "4", "--sample-pattern", r"p(\d)", "--min-diameter-um", "0")
    assert done.returncode == 0, done.stderr
    particles = pd.read_csv(out / "particles.csv", dtype={"sample": str})
    assert set(particles["sample"]) == {"0", "1", "2"}
    assert {"area_um2", "feret_max_um", "feret_min_um", "length_um", "width_um"} <= set(particles.columns)
    assert (particles["um_per_px"] == 4).all()
    px = pd.read_csv(plain_run[0] / "particles.csv")
    assert np.allclose(np.sort(particles["feret_max_um"]), np.sort(px["feret_max_px"]) * 4)


def test_find_scores_the_finder_on_annotated_photos(model, tmp_path):
    micro = tmp_path / "MICRO"
    (micro / "raw_img").mkdir(parents=True)
    (micro / "annotation").mkdir()
    drawn = draw_photo(0)
    Image.fromarray(drawn.image).save(micro / "raw_img" / "a.png")
    lines = ["ID\tminr\tminc\tmaxr\tmaxc\tclass"] + [f"{i}\t{b[0]}\t{b[1]}\t{b[2]}\t{b[3]}\tx/{i}.png"
                                                      for i, b in enumerate(drawn.boxes)]
    (micro / "annotation" / "a.png.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "found"
    done = find(model, micro, out)
    assert done.returncode == 0, done.stderr
    scores = json.loads((out / "metrics.json").read_text())["finder_scores"]
    assert scores["iou"]["0.3"]["recall"] == 1.0 and scores["iou"]["0.3"]["precision"] == 1.0
    assert set(scores["iou"]) == {"0.3", "0.5"} and scores["count_error"]["median"] == 0.0
    assert "recall_per_class" in scores["iou"]["0.5"] and "Finder against the annotations" in \
        (out / "report.html").read_text()


@pytest.mark.parametrize("extra,make,needle", [
    ([], "empty", "holds no photos"),
    (["--um-per-px", "-1"], "photos", "--um-per-px must be a positive number"),
    (["--um-per-px", "nonsense"], "photos", "neither a number nor a CSV"),
    ([], "unreadable", "could be read"),
])
def test_bad_find_input_is_one_line_and_exit_2(model, photos, tmp_path, extra, make, needle):
    folder = {"photos": photos, "empty": tmp_path / "empty", "unreadable": tmp_path / "bad"}[make]
    folder.mkdir(exist_ok=True)
    if make == "unreadable":
        (folder / "x.png").write_bytes(b"not a png")
    done = find(model, folder, tmp_path / "found", *extra)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()  # an unreadable photo is warned about first
    assert lines[-1].startswith("error: ") and needle in lines[-1] and sum(x.startswith("error") for x in lines) == 1
    assert not (tmp_path / "found").exists()


def test_finder_on_real_photos_finds_most_annotated_particles(mp100):
    from microplastics.core.images import read_rgb

    tsvs = sorted((mp100 / "MICRO" / "annotation").glob("*.tsv"))[::80]
    found, truth, hits = 0, 0, 0
    for tsv in tsvs:
        table = pd.read_csv(tsv, sep="\t")
        boxes = list(zip(table["minr"], table["minc"], table["maxr"], table["maxc"]))
        got = found_boxes(read_rgb(mp100 / "MICRO" / "raw_img" / tsv.name[:-4]))
        hits += len(detection.match_boxes(got, boxes, 0.3))
        found, truth = found + len(got), truth + len(boxes)
    assert hits / truth >= 0.7 and hits / found >= 0.35


def test_reference_objects_calibrate_their_photos_and_the_others_get_the_median(capsys):
    import argparse

    from microplastics.find.sample_report import calibrate

    particles = pd.DataFrame({"photo": ["a", "a", "b", "b", "c"], "class": ["reference", "fiber", "reference",
                                                                           "reference", "fiber"],
                              "feret_max_px": [50.0, 10.0, 100.0, 300.0, 20.0], "area_px": [1.0] * 5})
    for name in measure.LENGTH_NAMES:
        particles[f"{name}_px"] = particles["feret_max_px"]
    photos = pd.DataFrame({"photo": ["a", "b", "c"]})
    args = argparse.Namespace(reference_size_um=1000.0, reference_class="reference")
    out, calibration = calibrate(particles, photos, None, args)
    scale = calibration["um_per_px"]
    assert scale["a"] == pytest.approx(20.0) and scale["b"] == pytest.approx(1000 / 200)  # median of 100 and 300
    assert scale["c"] == pytest.approx(np.median([20.0, 5.0]))
    assert "median scale" in capsys.readouterr().err
    assert out.loc[1, "feret_max_um"] == pytest.approx(10 * 20.0) and out.loc[1, "area_um2"] == pytest.approx(400.0)
    assert set(out["scale_source"]) == {"reference", "reference (median of other photos)"}
    no_refs = particles.assign(**{"class": "fiber"})
    with pytest.raises(UserError, match="no particle was classified as 'reference'"):
        calibrate(no_refs, photos, None, args)


def test_end_to_end_macro_f1_skips_classes_nobody_annotated():
    box = (0, 0, 10, 10)
    other = (20, 20, 30, 30)
    photos = {"a": detection.PhotoBoxes(found=[box, other], found_class=["fiber", "noise"],
                                        truth=[box, other], truth_class=["fiber", "film"])}
    entry = detection.score_finder(photos, thresholds=[0.5], classes=["fiber", "film", "noise"])["iou"]["0.5"]
    per_class = entry["end_to_end"]["per_class"]
    assert per_class["fiber"]["f1"] == 1.0 and per_class["film"]["f1"] == 0.0
    assert per_class["noise"]["n_truth"] == 0
    assert entry["end_to_end"]["macro_f1"] == 0.5      # fiber and film; noise has no annotated particle
