"""Hostile inputs to the data side, each run through the real script.

Every test builds the bad input, runs the stage as a user would (a subprocess), and checks
the exit status, that a refusal is exactly one ``error:`` line without a traceback, that
nothing appeared or changed outside the output folder, and that earlier results survive.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from fake_figshare import micro_files, tar_bytes
from microplastics.data.dataset import load_manifest, manifest_digest, split_fingerprint
from microplastics.core.images import read_rgb
from microplastics.results.metrics import write_evaluation
from test_annotations import rows, write_micro

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("fiber", "film")


# ------------------------------------------------------------------------------ helpers

def run(script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg"})


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, one ``error:`` line naming ``words``, no traceback; returns that line."""
    text = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, text
    assert len(errors) == 1 and "Traceback" not in text, text
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_ran(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in text and "error:" not in proc.stderr, text


def snapshot(folder: Path, *leave_out: Path) -> dict[str, str]:
    """Every file under ``folder`` (but ``leave_out``) with a hash of its bytes: what a run may not touch."""
    skip = [p.resolve() for p in leave_out]
    found = {}
    for path in sorted(folder.rglob("*")):
        real = path.resolve()
        if any(real == s or s in real.parents for s in skip):
            continue
        found[path.relative_to(folder).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                                      if path.is_file() else "dir")
    return found


def two_class_micro(root: Path, n_photos: int = 6, extra: tuple = ()) -> Path:
    """A DeepParticle folder, three boxes of each of two classes a photo; ``extra`` rows go into photo 0."""
    tsvs, photos = {}, {}
    for p in range(n_photos):
        boxes = [(i, 2 + 9 * i, 3 + 4 * i, 10 + 9 * i, 15 + 4 * i, f"{CLASSES[i % 2]}/c{p}_{i}.jpg")
                 for i in range(6)]
        tsvs[f"{p:02d}_photo.png.tsv"] = rows(*boxes, *(extra if p == 0 else ()))
        photos[f"{p:02d}_photo.png"] = (60, 80)
    return write_micro(root, tsvs, photos)


def yolo_export(root: Path, names_yaml: str, lines_per_photo: list[str], n_photos: int = 6,
                prefix: str = "") -> Path:
    """A YOLO export: ``n_photos`` 60x80 photos, each with the same ``lines_per_photo`` boxes."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for p in range(n_photos):
        pixels = np.random.default_rng(p).integers(0, 256, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{p:02d}_photo.png")
        (root / "labels" / f"{p:02d}_photo.txt").write_text(prefix + "\n".join(lines_per_photo), encoding="utf-8")
    (root / "data.yaml").write_text(names_yaml, encoding="utf-8")
    return root


def yolo_line(class_id: int, k: int) -> str:
    """Box number ``k`` of a photo, in YOLO's relative centre/size form; distinct boxes for distinct k."""
    return f"{class_id} {(10 + 10 * k) / 80} {(8 + 7 * k) / 60} {8 / 80} {6 / 60}"


@pytest.fixture(scope="module")
def processed_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("processed_once")
    micro = two_class_micro(root / "good")
    assert_ran(run("data-preprocessing.py", "--input", micro, "--output", root / "out", "--workers", "1", cwd=root))
    return root / "out"


@pytest.fixture()
def earlier(tmp_path, processed_once) -> Path:
    """A finished preprocessing result in ``tmp_path/out``, which a refused run must leave alone."""
    return Path(shutil.copytree(processed_once, tmp_path / "out"))


@pytest.fixture()
def earlier_results(tmp_path, earlier) -> Path:
    """``tmp_path/results/rf``: a model folder's evaluation files as a model stage writes them."""
    manifest = load_manifest(earlier)
    test = manifest[manifest["split"] == "test"]
    write_evaluation(tmp_path / "results" / "rf", model="rf", classes=list(CLASSES), paths=list(test["path"]),
                     y_true=list(test["label"]), y_pred=list(test["label"]), probs=None,
                     split_fingerprint=split_fingerprint(manifest), weights="none", train_seconds=1.0)
    return tmp_path / "results"


# ------------------------------------------------------------------------------ class names

@pytest.mark.parametrize("layout", ["yolo", "tsv"])
def test_class_names_never_become_paths(tmp_path, layout):
    # Index 0 and 1 are usable; 2..4 climb out, are absolute, or are too long for a file name.
    absolute = tmp_path / "ESCAPED_ABS"
    if layout == "yolo":
        names = json.dumps(["fiber", "film", "../../../ESCAPED", str(absolute), "L" * 300])
        src = yolo_export(tmp_path / "in", f"names: {names}\n", [yolo_line(i % 5, i) for i in range(7)])
    else:
        # A TSV class is the part before '/', so '../x' arrives as '..' and '/abs' as ''; the same check refuses both.
        extra = tuple((100 + k, 1, 1, 9, 9, f"{name}/x.jpg") for k, name in enumerate(("..", "", "L" * 300)))
        src = two_class_micro(tmp_path / "in", extra=extra)
    before = snapshot(tmp_path)
    proc = run("data-preprocessing.py", "--input", src, "--output", tmp_path / "out", "--workers", "1",
               cwd=tmp_path / "in")
    assert_ran(proc)
    assert snapshot(tmp_path, tmp_path / "out") == before  # nothing written outside --output
    # '../../../' from out/<split>/ lands above tmp_path, where a snapshot of tmp_path cannot see it.
    assert not absolute.exists()
    assert not list(tmp_path.parent.glob("ESCAPED*")) and not list(tmp_path.parent.parent.glob("ESCAPED*"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES)
    bad = [d["reason"] for d in summary["skipped"]["items"] if d["reason"].startswith("bad class")]
    assert len(bad) == (3 * 6 if layout == "yolo" else 3), summary["skipped"]
    assert any("longer than 100 bytes" in reason for reason in bad)
    on_disk = {p.relative_to(tmp_path / "out").parts[:2] for p in (tmp_path / "out").rglob("*.png")}
    assert {label for _, label in on_disk} == set(CLASSES)


def test_long_box_ids_get_short_crop_names_and_keep_the_id(tmp_path):
    long_a, long_b = "A" * 300, "A" * 299 + "B"  # the same start: only a hash of the whole tells them apart
    extra = ((long_a, 1, 1, 9, 9, "fiber/x.jpg"), (long_b, 20, 20, 29, 29, "film/y.jpg"))
    src = two_class_micro(tmp_path / "in", extra=extra)
    proc = run("data-preprocessing.py", "--input", src, "--output", tmp_path / "out", "--workers", "1", cwd=tmp_path)
    assert_ran(proc)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert len(manifest) == 6 * 6 + 2
    kept = manifest[manifest["box_id"].isin([long_a, long_b])]
    assert sorted(kept["box_id"]) == [long_a, long_b]  # the original IDs, whole
    names = [Path(p).name for p in kept["path"]]
    assert len(set(names)) == 2 and all(len(n) <= 100 for n in names)
    assert all((tmp_path / "out" / p).is_file() for p in kept["path"])


# ------------------------------------------------------------------------------ YOLO files

def test_label_files_with_a_byte_order_mark_keep_their_first_box(tmp_path):
    names = "names: [fiber, film]\n"
    lines = [yolo_line(i % 2, i) for i in range(6)]
    plain = yolo_export(tmp_path / "plain", names, lines)
    bom = yolo_export(tmp_path / "bom", "\ufeff" + names, lines, prefix="\ufeff")
    for src in (plain, bom):
        assert_ran(run("data-preprocessing.py", "--input", src, "--output", tmp_path / f"out_{src.name}",
                       "--workers", "1", cwd=tmp_path))
    summary = json.loads((tmp_path / "out_bom" / "summary.json").read_text())
    assert summary["totals"]["total"] == 36 and summary["skipped"]["count"] == 0
    assert ((tmp_path / "out_bom" / "manifest.csv").read_bytes()
            == (tmp_path / "out_plain" / "manifest.csv").read_bytes())


def test_class_indices_with_a_gap_are_mapped_by_key(tmp_path):
    # Index 1 is not named: its boxes are skipped, and 2 and 3 keep their own names.
    names = "names: {0: fiber, 2: fragment, 3: pallet}\n"
    ids = [0, 2, 3, 1, 0, 2, 3]
    src = yolo_export(tmp_path / "in", names, [yolo_line(c, k) for k, c in enumerate(ids)])
    assert_ran(run("data-preprocessing.py", "--input", src, "--output", tmp_path / "out", "--workers", "1",
                   "--min-class-crops", "1", cwd=tmp_path))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    expected = {0: "fiber", 2: "fragment", 3: "pallet"}
    for k, class_id in enumerate(ids):
        box = manifest[(manifest["source_image"] == "00_photo.png") & (manifest["box_id"] == k)]
        assert box["label"].tolist() == ([expected[class_id]] if class_id in expected else []), k
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"]["by_reason"] == {"bad class": 6}


@pytest.mark.parametrize("case", ["binary", "text keys", "negative key", "list as a name"])
def test_unusable_data_yaml_is_one_line(tmp_path, earlier, case):
    content = {"binary": bytes(range(256)) * 4,
               "text keys": b"names: {a: fiber, b: film}\n",
               "negative key": b"names: {-1: fiber, 0: film}\n",
               "list as a name": b"names: [[fiber], film]\n"}[case]
    src = yolo_export(tmp_path / "in", "names: [fiber, film]\n", [yolo_line(i % 2, i) for i in range(6)])
    (src / "data.yaml").write_bytes(content)
    before = snapshot(tmp_path)
    line = assert_refused(run("data-preprocessing.py", "--input", src, "--output", earlier, "--workers", "1",
                              cwd=tmp_path), "data.yaml")
    assert "not a text file" in line if case == "binary" else "names" in line
    assert snapshot(tmp_path) == before  # the earlier result whole, nothing else written


# ------------------------------------------------------------------------------ image bit depths

def _photo(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """(pixels as stored, the 8-bit RGB they must become, or None when the file must be refused)."""
    if kind == "grey8":
        raw = rng.integers(0, 256, (60, 80), dtype=np.uint8)
        return raw, np.repeat(raw[:, :, None], 3, 2)
    if kind == "rgb8":
        raw = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        return raw, raw
    if kind in ("grey16", "rgb16"):
        shape = (60, 80) if kind == "grey16" else (60, 80, 3)
        raw = rng.integers(0, 65536, shape, dtype=np.uint16)
        scaled = (raw >> 8).astype(np.uint8)
        return raw, scaled if kind == "rgb16" else np.repeat(scaled[:, :, None], 3, 2)
    if kind == "float01":
        raw = rng.random((60, 80), dtype=np.float32)
        return raw, np.repeat(np.round(raw * 255).astype(np.uint8)[:, :, None], 3, 2)
    return rng.random((60, 80), dtype=np.float32) * 4000, None  # float beyond 0..1: no 8-bit meaning


KINDS = ("grey8", "rgb8", "grey16", "rgb16", "float01", "float_raw")


def test_16_bit_and_float_photos_are_scaled_not_clipped(tmp_path):
    src = tmp_path / "in"
    (src / "raw_img").mkdir(parents=True)
    (src / "annotation").mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for kind in KINDS:
        raw, want = _photo(kind, rng)
        name = f"{kind}.{'png' if raw.dtype == np.uint8 else 'tif'}"
        if raw.dtype == np.uint8:
            Image.fromarray(raw).save(src / "raw_img" / name)
        else:
            tifffile.imwrite(src / "raw_img" / name, raw, photometric="rgb" if raw.ndim == 3 else "minisblack")
        expected[name] = want
        boxes = [(i, 2 + 9 * i, 3 + 4 * i, 10 + 9 * i, 15 + 4 * i, f"{CLASSES[i % 2]}/{i}.jpg") for i in range(6)]
        (src / "annotation" / f"{name}.tsv").write_text(rows(*boxes))
    assert_ran(run("data-preprocessing.py", "--input", src, "--output", tmp_path / "out", "--workers", "1",
                   "--group-by", "none", cwd=tmp_path))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(manifest["source_image"].unique()) == sorted(n for n, w in expected.items() if w is not None)
    for row in manifest.itertuples():
        want = expected[row.source_image][row.minr:row.maxr, row.minc:row.maxc]
        assert np.array_equal(read_rgb(tmp_path / "out" / row.path), want), row.path
    # A 16-bit photo of mid-grey stays mid-grey, not white (what clipping made of it).
    assert read_rgb(src / "raw_img" / "grey16.tif").mean() == pytest.approx(127.5, abs=3)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    refused = {d["item"]: d["reason"] for d in summary["skipped"]["items"]}
    assert "outside 0..1" in refused["raw_img/float_raw.tif"]


# ------------------------------------------------------------------------------ the manifest

def _tamper(folder: Path, case: str) -> None:
    manifest_path = folder / "manifest.csv"
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    if case == "test rows copied into train":
        frame = pd.concat([frame, frame[frame["split"] == "test"].assign(split="train")])
    elif case == "duplicated rows":
        frame = pd.concat([frame, frame[frame["split"] == "test"]])
    elif case == "crop moved to another split":  # the file too, so that only the grouping tells
        row = frame.index[frame["split"] == "test"][0]
        new = frame.loc[row, "path"].replace("test/", "train/", 1)
        shutil.copy(folder / frame.loc[row, "path"], folder / new)
        frame.loc[row, ["path", "split"]] = [new, "train"]
    elif case == "path outside the folder":
        (folder.parent / "outside.png").write_bytes((folder / frame.loc[0, "path"]).read_bytes())
        frame.loc[0, "path"] = f"{frame.loc[0, 'split']}/{frame.loc[0, 'label']}/../../../outside.png"
    elif case == "crop linked outside":
        outside = folder.parent / "outside.png"
        outside.write_bytes((folder / frame.loc[0, "path"]).read_bytes())
        (folder / frame.loc[0, "path"]).unlink()
        (folder / frame.loc[0, "path"]).symlink_to(outside)
    elif case == "absolute path":
        frame.loc[0, "path"] = str((folder / frame.loc[0, "path"]).resolve())
    elif case == "blank label":
        frame.loc[3, "label"] = ""
    if case in ("random bytes", "empty"):
        manifest_path.write_bytes(np.random.default_rng(0).bytes(3000) if case == "random bytes" else b"")
    else:
        frame.to_csv(manifest_path, index=False)


ROW_CASES = ("test rows copied into train", "duplicated rows", "crop moved to another split",
             "path outside the folder", "crop linked outside", "absolute path", "blank label")
WORDS = {"test rows copied into train": "is not train/", "duplicated rows": "listed more than once",
         "crop moved to another split": "grouped by photo", "path outside the folder": "leads outside",
         "crop linked outside": "through a link", "absolute path": "leads outside",
         "blank label": "label is blank", "random bytes": "not a text file",
         "empty": "is empty"}


@pytest.mark.parametrize("case", ROW_CASES + ("random bytes", "empty"))
def test_tampered_manifest_is_refused(tmp_path, earlier, earlier_results, case):
    _tamper(earlier, case)
    if case in ROW_CASES:  # summary.json rewritten to match, as a forger would: the rows themselves are refused
        summary = json.loads((earlier / "summary.json").read_text())
        summary["manifest_digest"] = manifest_digest(earlier)
        (earlier / "summary.json").write_text(json.dumps(summary))
    before = snapshot(tmp_path)
    proc = run("report.py", "--data", earlier, "--results", earlier_results, "--n-boot", "10", cwd=tmp_path)
    assert_refused(proc, "manifest.csv", WORDS[case])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("script", ["report.py", "ml-baselines.py", "resnet50.py"])
def test_every_stage_refuses_a_manifest_changed_after_preprocessing(tmp_path, earlier, earlier_results, script):
    _tamper(earlier, "test rows copied into train")
    before = snapshot(tmp_path)
    extra = {"report.py": ["--n-boot", "10"], "ml-baselines.py": ["--workers", "1"],
             "resnet50.py": ["--epochs", "1", "--weights", "none", "--device", "cpu"]}[script]
    proc = run(script, "--data", earlier, "--results", earlier_results, *extra, cwd=tmp_path)
    assert_refused(proc, "manifest.csv", "changed after data-preprocessing.py")
    assert snapshot(tmp_path) == before  # the earlier model folder as it was


def test_stages_given_a_file_for_data_say_so(tmp_path, earlier):
    # Every stage checks --data with dataset.check_data_dir; report.py is the quickest to start.
    line = assert_refused(run("report.py", "--data", earlier / "manifest.csv", "--results", tmp_path / "r",
                              cwd=tmp_path), "is a file, not a folder", f"did you mean {earlier}")
    assert "does not exist" not in line and "not found" not in line
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------ output paths

def test_output_under_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    micro = two_class_micro(tmp_path / "in")
    before = snapshot(tmp_path)
    assert_refused(run("data-extraction.py", "--synthetic", "--n-images", "2", "--out", afile / "sub", cwd=tmp_path),
                   "--out", "is a file")
    assert_refused(run("data-preprocessing.py", "--input", micro, "--output", afile / "sub", cwd=tmp_path),
                   "--output", "is a file")
    assert_refused(run("data-extraction.py", "--synthetic", "--n-images", "2", "--out", afile, "--force",
                       cwd=tmp_path), "--out", "is a file")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ archives

def _zip(path: Path, files: dict[str, bytes], big: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, size in (big or {}).items():
            with zf.open(name, "w") as out:  # streamed, so the test never holds it in memory
                for _ in range(size // 2**20):
                    out.write(bytes(2**20))
    return path


def test_compression_bomb_is_refused_before_anything_is_written(tmp_path):
    bomb = _zip(tmp_path / "MICRO.zip", micro_files(2), big={"MICRO/raw_img/huge.bmp": 80 * 2**20})
    assert bomb.stat().st_size < 2**20
    before = snapshot(tmp_path)
    assert_refused(run("data-extraction.py", "--archive", bomb, "--out", tmp_path / "MICRO", cwd=tmp_path),
                   "compression bomb")
    assert snapshot(tmp_path) == before  # no --out, no staging folder


def test_unpacked_size_cap(tmp_path):
    src = tmp_path / "MICRO.tar.gz"
    src.write_bytes(tar_bytes(micro_files(3)))
    before = snapshot(tmp_path)
    assert_refused(run("data-extraction.py", "--archive", src, "--out", tmp_path / "MICRO",
                       "--max-unpacked-gb", "0.00001", cwd=tmp_path), "more than the limit", "--max-unpacked-gb")
    assert snapshot(tmp_path) == before
    assert_ran(run("data-extraction.py", "--archive", src, "--out", tmp_path / "MICRO", cwd=tmp_path))


def test_only_image_files_count_as_photos(tmp_path):
    files = {**micro_files(3), "MICRO/raw_img/readme.txt": b"notes", "MICRO/raw_img/Thumbs.db": b"\0" * 10}
    src = tmp_path / "MICRO.tar.gz"
    src.write_bytes(tar_bytes(files))
    proc = run("data-extraction.py", "--archive", src, "--out", tmp_path / "MICRO", cwd=tmp_path)
    assert_ran(proc)
    assert "3 photos in raw_img/ (and 2 other files)" in proc.stdout


def test_archive_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "MICRO" / "raw_img").mkdir(parents=True)
    before = snapshot(tmp_path)
    line = assert_refused(run("data-extraction.py", "--archive", tmp_path / "MICRO", "--out", tmp_path / "out",
                              cwd=tmp_path), "is a folder, not an archive file")
    assert "not found" not in line and "does not exist" not in line
    assert snapshot(tmp_path) == before
