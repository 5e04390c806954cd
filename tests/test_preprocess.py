"""data-preprocessing.py end to end: crops, split, manifest, summary, atomic rebuild, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microplastics.data.dataset import MANIFEST_COLUMNS, load_manifest
from microplastics.core.fileio import read_json
from microplastics.core.images import read_rgb
from microplastics.data.preprocessing import main
from test_annotations import rows, write_micro

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("foam", "hard", "line")


def small_micro(root: Path, n_photos: int = 12) -> Path:
    """``n_photos`` 60x80 photos with two boxes of each class: 2 * n_photos crops a class."""
    tsvs, photos = {}, {}
    for p in range(n_photos):
        boxes = [(i, 5 + 8 * i, 3 + 5 * i, 15 + 8 * i, 20 + 7 * i, f"{CLASSES[i % 3]}/c {p}:{i}.jpg")
                 for i in range(6)]
        tsvs[f"{p:02d}_photo.png.tsv"] = rows(*boxes)
        photos[f"{p:02d}_photo.png"] = (60, 80)
    return write_micro(root, tsvs, photos)


def run_main(micro: Path, out: Path, *extra: str) -> dict:
    assert main(["--input", str(micro), "--output", str(out), "--workers", "1", *extra]) == 0
    return read_json(out / "summary.json")


def test_crops_manifest_and_summary_agree_with_the_photos(tmp_path, capsys):
    micro, out = small_micro(tmp_path / "MICRO"), tmp_path / "processed"
    summary = run_main(micro, out)
    manifest = load_manifest(out)
    assert tuple(manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert len(manifest) == 72 and list(manifest["path"]) == sorted(manifest["path"])
    assert set(summary["classes"]) == set(CLASSES) and summary["totals"]["total"] == 72
    assert summary["counts"]["foam"]["total"] == 24
    for row in manifest.sample(10, random_state=0).itertuples():
        assert row.path == f"{row.split}/{row.label}/{Path(row.path).name}"
        photo = read_rgb(micro / "raw_img" / row.source_image)
        assert np.array_equal(read_rgb(out / row.path), photo[row.minr:row.maxr, row.minc:row.maxc])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(manifest["path"])  # nothing more, nothing less on disk
    assert " " not in "".join(files) and ":" not in "".join(files)
    assert "total" in capsys.readouterr().out  # the counts table


def test_no_photo_in_two_splits_and_same_seed_same_manifest(tmp_path):
    micro = small_micro(tmp_path / "MICRO", n_photos=20)
    run_main(micro, tmp_path / "a")
    assert main(["--input", str(micro), "--output", str(tmp_path / "b"), "--workers", "2"]) == 0
    manifest = load_manifest(tmp_path / "a")
    assert manifest.groupby("source_image")["split"].nunique().max() == 1
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    run_main(micro, tmp_path / "c", "--seed", "3")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() != (tmp_path / "c" / "manifest.csv").read_bytes()


def test_group_by_none_splits_crops_of_one_photo(tmp_path):
    micro = small_micro(tmp_path / "MICRO", n_photos=20)
    summary = run_main(micro, tmp_path / "out", "--group-by", "none")
    manifest = load_manifest(tmp_path / "out")
    assert manifest.groupby("source_image")["split"].nunique().max() > 1
    assert summary["fractions"]["per_class"]["foam"] == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_bad_rows_and_a_corrupt_image_are_skipped_counted_and_the_rest_processed(tmp_path):
    micro = small_micro(tmp_path / "MICRO")
    (micro / "annotation" / "00_photo.png.tsv").write_text(
        rows((0, "x", 1, 5, 5, "foam/a"), (1, -4, -4, 10, 10, "foam/b"), (2, 1, 1, 5, 5, "foam/c")))
    (micro / "annotation" / "01_photo.png.tsv").write_text("ID\tminr\tminc\tmaxc\tclass\n0\t1\t1\t5\tfoam/a\n")
    truncated = micro / "raw_img" / "02_photo.png"  # header intact, pixels cut off
    truncated.write_bytes(truncated.read_bytes()[:200])
    summary = run_main(micro, tmp_path / "out")
    assert summary["skipped"]["by_reason"] == {"bad number": 1, "missing column(s)": 1, "unreadable image": 1}
    items = {d["item"]: d["reason"] for d in summary["skipped"]["items"]}
    assert items["annotation/01_photo.png.tsv"] == "missing column(s): maxr"
    assert summary["clamped_boxes"] == 1
    manifest = load_manifest(tmp_path / "out")
    assert len(manifest) == 72 - 4 - 6 - 6  # 00: 2 rows of 6 kept; 01 and 02: none
    assert not manifest["source_image"].isin(["01_photo.png", "02_photo.png"]).any()
    clamped = manifest[(manifest["source_image"] == "00_photo.png") & (manifest["box_id"] == 1)]
    assert clamped[["minr", "minc", "maxr", "maxc"]].values.tolist() == [[0, 0, 10, 10]]


def test_too_small_class_is_left_out_with_a_warning(tmp_path, capsys):
    micro = small_micro(tmp_path / "MICRO")
    (micro / "annotation" / "00_photo.png.tsv").write_text(rows((0, 1, 1, 9, 9, "rare/a"), (1, 2, 2, 9, 9, "foam/b")))
    summary = run_main(micro, tmp_path / "out")
    assert "rare" not in summary["classes"] and "rare" in summary["left_out_classes"]
    assert summary["skipped"]["by_reason"]["class too small to split"] == 1
    assert "warning: class 'rare' left out" in capsys.readouterr().err


def test_rebuild_replaces_the_whole_output(tmp_path):
    micro, out = small_micro(tmp_path / "MICRO"), tmp_path / "out"
    run_main(micro, out)
    (out / "train" / "foam" / "stale.png").write_bytes(b"old")
    run_main(micro, out, "--margin", "0.5")
    assert not (out / "train" / "foam" / "stale.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind
    assert read_json(out / "summary.json")["settings"]["margin"] == 0.5


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    micro, out = small_micro(tmp_path / "MICRO", n_photos=4), tmp_path / "mine"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = subprocess.run([sys.executable, str(ROOT / "data-preprocessing.py"), "--input", str(micro),
                             "--output", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "did not write" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_missing_input_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "data-preprocessing.py"), "--input",
                             str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: input folder")
    assert not (tmp_path / "out").exists()


def test_synthetic_round_trip(tmp_path):
    synthetic = pytest.importorskip("microplastics.data.synthetic",
                                    reason="microplastics/data/synthetic.py not present")
    micro = tmp_path / "MICRO"
    synthetic.write_synthetic_micro(micro, n_images=30, seed=42)
    summary = run_main(micro, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    tsv = pd.concat([pd.read_csv(p, sep="\t").assign(source_image=p.name[: -len(".tsv")])
                     for p in sorted((micro / "annotation").glob("*.tsv"))])
    tsv["label"] = tsv["class"].str.split("/").str[0]
    tsv = tsv[~tsv["label"].isin(summary["left_out_classes"])]
    assert summary["totals"]["total"] == len(manifest) == len(tsv)
    assert summary["skipped"]["count"] == sum(summary["skipped"]["by_reason"].values())
    # every TSV row became one crop with its box and class, whatever the split
    key = ["source_image", "ID", "label", "minr", "minc", "maxr", "maxc"]
    as_rows = lambda frame: sorted(map(tuple, frame[key].astype(str).values.tolist()))  # noqa: E731
    assert as_rows(manifest.rename(columns={"box_id": "ID"})) == as_rows(tsv)
    assert manifest.groupby("source_image")["split"].nunique().max() == 1
    assert all((tmp_path / "out" / p).is_file() for p in manifest["path"])


@pytest.mark.slow
def test_mp100_tsv_and_yolo_layouts_give_the_same_manifest(mp100, tmp_path):
    assert main(["--input", str(mp100 / "MICRO"), "--output", str(tmp_path / "tsv"), "--workers", "2"]) == 0
    assert main(["--input", str(mp100 / "yolo"), "--output", str(tmp_path / "yolo"), "--workers", "2"]) == 0
    tsv_manifest = (tmp_path / "tsv" / "manifest.csv").read_bytes()
    assert tsv_manifest == (tmp_path / "yolo" / "manifest.csv").read_bytes()
    summary = read_json(tmp_path / "tsv" / "summary.json")
    assert summary["classes"] == ["fiber", "film", "fragment", "pallet"]
    assert summary["totals"]["total"] > 3700
    for shares in summary["fractions"]["per_class"].values():
        assert abs(shares["test"] - 0.15) < 0.02
