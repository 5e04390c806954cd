"""Reading DeepParticle TSVs and YOLO exports into BoxRecords: tolerant where data varies, strict where it matters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from microplastics.data.annotations import BoxRecord, crop_box, read_annotations
from microplastics.core.cli import UserError

HEADER = "ID\tminr\tminc\tmaxr\tmaxc\tclass\n"


def write_photo(path: Path, height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    """A random RGB photo; returned so tests can compare crops with it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def write_micro(root: Path, tsvs: dict[str, str], photos: dict[str, tuple[int, int]]) -> Path:
    """A MICRO folder: ``photos`` name -> (height, width) in raw_img/, ``tsvs`` name -> text in annotation/."""
    (root / "raw_img").mkdir(parents=True, exist_ok=True)
    for i, (name, (height, width)) in enumerate(photos.items()):
        write_photo(root / "raw_img" / name, height, width, seed=i)
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    for name, text in tsvs.items():
        (root / "annotation" / name).write_text(text, encoding="utf-8")
    return root


def rows(*boxes: tuple) -> str:
    return HEADER + "".join("\t".join(str(v) for v in box) + "\n" for box in boxes)


def reasons(result) -> dict[str, str]:
    return dict(result.skipped)


def test_reads_boxes_labels_and_safe_crop_names(tmp_path):
    micro = write_micro(tmp_path, {"a b.jpg.tsv": rows((0, 1, 2, 11, 22, "line/2022-03-28 12:01:02.jpg"),
                                                       (7, 5, 5, 9, 9, "hard/x.jpg"))},
                        {"a b.jpg": (40, 60)})
    result = read_annotations(micro)
    assert result.format == "deepparticle"
    assert result.skipped == []
    first, second = result.records
    assert first == BoxRecord(micro / "raw_img" / "a b.jpg", "0", 1, 2, 11, 22, "line", "a_b__0.png")
    assert (second.label, second.box_id, second.crop_name) == ("hard", "7", "a_b__7.png")


def test_tolerates_column_case_extra_columns_and_name_variants(tmp_path):
    text = "id\tMINR\tMinC\tmaxr\tmaxc\tCLASS\tarea\n0\t1\t1\t5\t5\tfoam/c.jpg\t16\n"
    micro = write_micro(tmp_path, {"x.JPG.tsv": text, "y.tsv": text},
                        {"x.jpg": (20, 20), "y.png": (20, 20)})
    result = read_annotations(micro)
    assert result.skipped == []
    assert sorted(r.photo.name for r in result.records) == ["x.jpg", "y.png"]
    assert {r.label for r in result.records} == {"foam"}


def test_missing_column_is_named_and_other_files_still_read(tmp_path):
    micro = write_micro(tmp_path, {"bad.png.tsv": "ID\tminr\tminc\tmaxr\tclass\n0\t1\t1\t5\tfoam/a\n",
                                   "good.png.tsv": rows((0, 1, 1, 5, 5, "foam/a"))},
                        {"bad.png": (20, 20), "good.png": (20, 20)})
    result = read_annotations(micro)
    assert reasons(result) == {"annotation/bad.png.tsv": "missing column(s): maxc"}
    assert [r.photo.name for r in result.records] == ["good.png"]


def test_bad_numbers_skip_only_their_row(tmp_path):
    micro = write_micro(tmp_path, {"p.png.tsv": rows((0, "abc", 1, 5, 5, "foam/a"), (1, 1, 1, "", 5, "foam/b"),
                                                     (2, 2.5, 1, 5, 5, "foam/c"), (3, 1, 1, 5, 5, "foam/d"))},
                        {"p.png": (20, 20)})
    result = read_annotations(micro)
    assert [r.box_id for r in result.records] == ["3"]
    assert reasons(result) == {"annotation/p.png.tsv row 1": "bad number: minr='abc'",
                               "annotation/p.png.tsv row 2": "bad number: maxr=''",
                               "annotation/p.png.tsv row 3": "bad number: minr='2.5'"}


def test_boxes_are_clamped_and_empty_boxes_skipped(tmp_path):
    micro = write_micro(tmp_path, {"p.png.tsv": rows((0, -5, -3, 50, 70, "foam/a"), (1, 30, 5, 30, 9, "foam/b"),
                                                     (2, 45, 5, 60, 9, "foam/c"))},
                        {"p.png": (40, 60)})
    result = read_annotations(micro)
    (rec,) = result.records
    assert (rec.minr, rec.minc, rec.maxr, rec.maxc) == (0, 0, 40, 60)
    assert result.clamped == ["annotation/p.png.tsv row 1"]
    assert [reason.split(":")[0] for _, reason in result.skipped] == ["empty box", "empty box"]


def test_empty_tsv_unreadable_photo_and_unpaired_files_are_skipped(tmp_path):
    micro = write_micro(tmp_path, {"empty.png.tsv": "", "header.png.tsv": HEADER,
                                   "orphan.png.tsv": rows((0, 1, 1, 5, 5, "foam/a")),
                                   "broken.png.tsv": rows((0, 1, 1, 5, 5, "foam/a")),
                                   "ok.png.tsv": rows((0, 1, 1, 5, 5, "foam/a"))},
                        {"empty.png": (20, 20), "header.png": (20, 20), "lonely.png": (20, 20), "ok.png": (20, 20)})
    (micro / "raw_img" / "broken.png").write_bytes(b"not a png at all")
    result = read_annotations(micro)
    assert [r.photo.name for r in result.records] == ["ok.png"]
    assert reasons(result) == {
        "annotation/orphan.png.tsv": "no photo for this annotation file",
        "raw_img/broken.png": "unreadable image: UnidentifiedImageError",
        "annotation/empty.png.tsv": "empty file",
        "annotation/header.png.tsv": "no boxes",
        "raw_img/lonely.png": "no annotation file",
    }


def test_to_remove_accepts_crop_names_with_or_without_class(tmp_path):
    micro = write_micro(tmp_path, {"p.png.tsv": rows((0, 1, 1, 5, 5, "foam/2022-01-01 10:00:00.jpg"),
                                                     (1, 1, 1, 5, 5, "line/l1.jpg"),
                                                     (2, 1, 1, 5, 5, "line/l2.jpg"), (3, 1, 1, 5, 5, "foam/f.jpg"))},
                        {"p.png": (20, 20)})
    (micro / "to_remove.txt").write_text("2022-01-01 10:00:00.jpg\nline/l2.jpg\nhard/l1.jpg\n# comment\np__3\n")
    result = read_annotations(micro)
    assert [r.box_id for r in result.records] == ["1"]  # 'hard/l1.jpg' names another class: kept
    assert [reason for _, reason in result.skipped] == ["listed in to_remove.txt"] * 3


def test_clashing_crop_names_are_made_unique(tmp_path):
    micro = write_micro(tmp_path, {"p.png.tsv": rows((0, 1, 1, 5, 5, "foam/a"), (0, 2, 2, 6, 6, "foam/b")),
                                   "p.jpg.tsv": rows((0, 1, 1, 5, 5, "foam/a"))},
                        {"p.png": (20, 20), "p.jpg": (20, 20)})
    names = [r.crop_name for r in read_annotations(micro).records]
    assert len(set(names)) == 3 and "p__0.png" in names


def write_yolo(root: Path, labels: dict[str, str], names: str = "names: ['fiber', 'film']\n") -> Path:
    for i, stem in enumerate(labels):
        write_photo(root / "images" / f"{stem}.jpg", 100, 200, seed=i)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(names)
    return root


def test_yolo_boxes_round_half_to_even_like_deepparticle(tmp_path):
    # centre 0.5 x 200 = 100, width 0.0125 x 200 = 2.5 -> cols 98.75..101.25 -> 99..101;
    # rows: centre 0.505 x 100 = 50.5, height 0.03 x 100 = 3 -> 49.0..52.0 -> 49..52 exactly
    yolo = write_yolo(tmp_path, {"a": "1 0.5 0.505 0.0125 0.03\n0 0.5075 0.5 0.01 0.2"})
    result = read_annotations(yolo)
    assert result.format == "yolo"
    first, second = result.records
    assert (first.minr, first.minc, first.maxr, first.maxc, first.label) == (49, 99, 52, 101, "film")
    # cols 101.5 -+ 1 = 100.5..102.5: exact .5 edges round to even (100, 102), not up (101, 103)
    assert (second.minr, second.minc, second.maxr, second.maxc) == (40, 100, 60, 102)
    assert (second.label, second.crop_name) == ("fiber", "a__1.png")


def test_yolo_bad_lines_and_missing_names(tmp_path):
    yolo = write_yolo(tmp_path, {"a": "5 0.5 0.5 0.1 0.1\n0 x 0.5 0.1 0.1\n0 0.5 0.5\n1 0.5 0.5 0.1 0.1"})
    result = read_annotations(yolo)
    assert [r.label for r in result.records] == ["film"]
    assert [reason.split(":")[0] for _, reason in result.skipped] == ["bad class", "bad number", "bad number"]
    (yolo / "data.yaml").unlink()
    with pytest.raises(UserError, match="data.yaml"):
        read_annotations(yolo)


def test_unknown_layout_names_what_was_expected(tmp_path):
    with pytest.raises(UserError, match="raw_img/ and annotation/"):
        read_annotations(tmp_path)
    write_micro(tmp_path / "MICRO", {}, {})
    with pytest.raises(UserError, match="did you mean --input .*MICRO"):
        read_annotations(tmp_path)
    with pytest.raises(UserError, match="unknown format"):
        read_annotations(tmp_path, fmt="coco")


def test_crop_box_margin_is_a_fraction_of_the_box_clamped_to_the_image():
    image = (np.arange(40 * 60 * 3) % 251).astype(np.uint8).reshape(40, 60, 3)
    rec = BoxRecord(Path("p.png"), "0", 10, 20, 20, 40, "foam", "p__0.png")
    assert np.array_equal(crop_box(image, rec), image[10:20, 20:40])
    assert crop_box(image, rec, margin=0.5).shape == (20, 40, 3)  # 5 rows, 10 cols more each side
    edge = BoxRecord(Path("p.png"), "1", 0, 50, 10, 60, "foam", "p__1.png")
    assert crop_box(image, edge, margin=1.0).shape == (20, 20, 3)  # rows 0..20, cols 40..60: clamped


@pytest.mark.slow
def test_mp100_tsv_and_yolo_give_identical_records(mp100):
    tsv = read_annotations(mp100 / "MICRO")
    yolo = read_annotations(mp100 / "yolo")
    key = lambda r: (r.photo.name, r.box_id, r.minr, r.minc, r.maxr, r.maxc, r.label, r.crop_name)  # noqa: E731
    assert len(tsv.records) > 3000
    assert [key(r) for r in tsv.records] == [key(r) for r in yolo.records]
    assert [reason for _, reason in tsv.skipped] == [reason for _, reason in yolo.skipped]
