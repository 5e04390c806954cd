"""The trained particle finder (find-detector.py, prediction.py --find --finder detector), at tiny sizes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from photodraw import draw_photo
from test_finder import model  # noqa: F401  (the trained classifier --find needs)
from PIL import Image

from microplastics.deep import checkpoint, lite0
from microplastics.find import detector
from microplastics.find.detector import DetectorConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = {"image_side": 160, "crop": 96, "fpn_channels": 32, "head_convs": 1, "batch_size": 2}


def tiny_config(**kw) -> DetectorConfig:
    return DetectorConfig(**{**TINY, "pretrained": False, **kw})


def test_the_detector_builds_on_the_packaged_lite0_weights():
    net = detector.build_detector(tiny_config(pretrained=True))
    packaged = lite0.to_timm(checkpoint.load_weights_only(lite0.weights_path(), "reinstall"))
    assert torch.equal(net.backbone.body.conv_stem.weight, packaged["conv_stem.weight"])
    assert torch.equal(net.backbone.body.blocks[3][0].conv_pw.weight, packaged["blocks.3.0.conv_pw.weight"])
    net.eval()
    with torch.no_grad():
        out = net([torch.rand(3, 64, 96)])[0]
    assert set(out) == {"boxes", "scores", "labels"} and out["boxes"].shape[1] == 4


def test_a_train_step_on_two_photos_moves_the_trained_weights_only():
    torch.manual_seed(0)
    config = tiny_config(frozen_blocks=2)
    net = detector.build_detector(config)
    photos = []
    for seed in (0, 1):
        drawn = draw_photo(seed)
        image, scale = detector.prepare_image(drawn.image, config.image_side)
        photos.append((image, detector.to_xyxy(drawn.boxes, scale)))
    frozen, trained = net.backbone.body.blocks[1][0].conv_pw.weight, net.head.classification_head.cls_logits.weight
    before = frozen.clone(), trained.clone()
    optimizer, scheduler = detector.make_optimizer(net, config, steps=2)
    batches = list(detector.training_batches(photos, config, np.random.default_rng(0)))
    assert len(batches) == 2 and all(t["boxes"].shape[1] == 4 for _, ts in batches for t in ts)
    loss = detector.train_one_epoch(net, optimizer, scheduler, batches)
    assert np.isfinite(loss) and loss > 0
    assert torch.equal(frozen, before[0]) and not torch.equal(trained, before[1])


def test_training_windows_keep_their_boxes_on_the_particles():
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:30, 40:60] = 255  # one bright particle, rows 20-30, columns 40-60
    xyxy = detector.to_xyxy([(20, 40, 30, 60)])
    rng = np.random.default_rng(0)
    kept = 0
    for _ in range(20):
        window, boxes = detector.random_window(image, xyxy, 64, rng)
        assert window.shape == (64, 64, 3) and len(boxes) <= 1
        for x1, y1, x2, y2 in boxes:  # flipped and turned with the window, the box still frames the pixels
            inside = window[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
            assert inside.min() == 255 and inside.sum() == window.sum()
            kept += 1
    assert kept >= 5


class FixedBoxes(torch.nn.Module):
    """Stands in for FCOS: returns fixed boxes on the image it is given, and records that image's size."""

    def forward(self, images):
        self.seen = tuple(images[0].shape)
        return [{"boxes": torch.tensor([[5.0, 10.0, 20.0, 40.0], [0.0, 0.0, 2.0, 2.0]]),
                 "scores": torch.tensor([0.9, 0.1]), "labels": torch.zeros(2, dtype=torch.int64)}]


def test_predicted_boxes_come_back_in_photo_pixels_and_the_project_convention():
    stub = FixedBoxes()
    photo = np.zeros((200, 100, 3), np.uint8)  # resized to 100 x 50 for image_side 100
    boxes, scores = detector.predict_boxes(stub, photo, DetectorConfig(image_side=100, score_threshold=0.5))
    assert stub.seen == (3, 100, 50)
    assert boxes == [(20, 10, 80, 40)] and scores == [pytest.approx(0.9)]  # (minr, minc, maxr, maxc), max exclusive
    assert detector.from_xyxy(detector.to_xyxy([(3, 4, 9, 17)], 0.5), 0.5, (20, 20)) == [(3, 4, 9, 17)]


def test_box_labels_give_each_box_its_standing_out_pixels_best_box_first():
    mask = np.zeros((40, 40), bool)
    mask[5:10, 5:15] = True
    mask[30:33, 2:4] = True  # outside every box
    boxes = [(4, 4, 11, 16), (6, 6, 20, 20), (25, 25, 35, 31)]  # the second overlaps the first; the third: no pixels
    labels, found = detector.box_labels(boxes, mask)
    assert [(f.minr, f.minc, f.maxr, f.maxc) for f in found] == boxes
    assert (labels[5:10, 5:15] == 1).all() and found[0].area_px == 50 and (labels == 1).sum() == 50
    # the second box's standing-out pixels all went to the first: it keeps the rest of its ellipse
    second = labels == 2
    assert second.sum() == found[1].area_px > 0 and not (second & mask).any() and second[13, 13]
    ellipse = labels[25:35, 25:31] == 3
    assert ellipse[5, 3] and not ellipse[0, 0] and found[2].area_px == int(ellipse.sum())
    assert not labels[30:33, 2:4].any()
    labels, found = detector.box_labels([(4, 4, 11, 16), (5, 5, 10, 15)], mask)  # wholly covered: dropped
    assert len(found) == 1


# ----------------------------------------------------------------------------- the stage and --find

@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> tuple[Path, Path]:
    """(a MICRO folder of three drawn photos, a processed folder whose manifest splits them 2 train / 1 val)."""
    root = tmp_path_factory.mktemp("det_micro")
    photos, data = root / "MICRO", root / "processed"
    (photos / "raw_img").mkdir(parents=True)
    (photos / "annotation").mkdir()
    data.mkdir()
    rows = []
    for seed, split in ((0, "train"), (1, "train"), (2, "val")):
        drawn = draw_photo(seed)
        name = f"p{seed}.png"
        Image.fromarray(drawn.image).save(photos / "raw_img" / name)
        lines = ["ID\tminr\tminc\tmaxr\tmaxc\tclass"]
        for i, (b, kind) in enumerate(zip(drawn.boxes, drawn.kinds)):
            lines.append(f"{i}\t{b[0]}\t{b[1]}\t{b[2]}\t{b[3]}\t{kind.split()[-1]}/{seed}_{i}.png")
            rows.append({"path": f"{split}/x/{seed}_{i}.png", "label": kind, "split": split, "source_image": name})
        (photos / "annotation" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    return photos, data


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=300)


@pytest.fixture(scope="module")
def trained(micro, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det_ckpt") / "detector.pt"
    done = run_script("find-detector.py", "--photos", str(micro[0]), "--data", str(micro[1]), "--out", str(out),
                      "--epochs", "1", "--crop", "96", "--batch-size", "2", "--image-side", "160",
                      "--fpn-channels", "32", "--head-convs", "1", "--weights", "none")
    assert done.returncode == 0, done.stderr
    assert "2 train photos" in done.stdout and "score threshold" in done.stdout
    return out


def test_the_stage_writes_a_checkpoint_that_carries_its_config(trained):
    ckpt = torch.load(trained, weights_only=True)
    assert ckpt["format"] == detector.FORMAT and ckpt["photos"] == {"train": ["p0.png", "p1.png"], "val": ["p2.png"]}
    assert ckpt["config"]["image_side"] == 160 and ckpt["config"]["fpn_channels"] == 32
    assert f"{ckpt['config']['score_threshold']:g}" in ckpt["val_f1_at_0.3"]
    net, config = detector.load_detector(trained)
    assert config.head_convs == 1 and not net.training
    boxes, _ = detector.predict_boxes(net, draw_photo(3).image, config, score_threshold=0.0)
    assert all(0 <= r0 < r1 <= 320 and 0 <= c0 < c1 <= 320 for r0, c0, r1, c1 in boxes)
    assert all(isinstance(v, int) for b in boxes for v in b)


def test_find_with_the_trained_detector_writes_and_scores_the_sample_report(model, micro, trained,  # noqa: F811
                                                                            tmp_path):
    out = tmp_path / "found"
    done = run_script("prediction.py", "--model", str(model), "--photos", str(micro[0]), "--find",
                      "--finder", "detector", "--detector", str(trained), "--out", str(out), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finder"] == "detector" and metrics["detector"] == str(trained)
    assert set(metrics["finder_scores"]["iou"]) == {"0.3", "0.5"}
    particles = pd.read_csv(out / "particles.csv")
    assert metrics["n_particles"] == len(particles)
    assert ((particles["maxr"] > particles["minr"]) & (particles["maxc"] > particles["minc"])).all()
    assert (particles["maxr"] <= 320).all() and (particles["area_px"] > 0).all()


@pytest.mark.parametrize("extra,needle", [
    (["--finder", "detector"], "--finder detector and --detector PATH go together"),
    (["--finder", "detector", "--detector", "NOFILE"], "no such file"),
    (["--finder", "detector", "--detector", "MANIFEST"], "is not a checkpoint of this project"),
])
def test_bad_detector_input_is_one_line_and_exit_2(model, micro, tmp_path, extra, needle):  # noqa: F811
    extra = [str(micro[1] / "manifest.csv") if x == "MANIFEST" else str(tmp_path / "x.pt") if x == "NOFILE" else x
             for x in extra]
    done = run_script("prediction.py", "--model", str(model), "--photos", str(micro[0]), "--find",
                      "--out", str(tmp_path / "found"), "--device", "cpu", *extra)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last
    assert not (tmp_path / "found").exists()


def test_training_without_a_split_is_one_line_and_exit_2(micro, tmp_path):
    done = run_script("find-detector.py", "--photos", str(micro[0]), "--data", str(tmp_path), "--out",
                      str(tmp_path / "d.pt"))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "manifest.csv" in done.stderr and not (tmp_path / "d.pt").exists()
