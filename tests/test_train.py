"""The three study scripts end to end at tiny sizes: files, reloading, determinism, resume, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datagen import make_processed
from microplastics.deep import engine
from microplastics.core import fileio
from microplastics.deep.checkpoint import load_classifier
from microplastics.core.cli import UserError
from microplastics.core.images import read_rgb
from microplastics.results.metrics import read_predictions
from microplastics.deep.stage import OUTPUT_FILES, get_args_parser, main_for

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--weights", "none", "--image-size", "32", "--workers", "0"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> Path:
    """Unequal classes, so SMOTE and class weights have something to do."""
    return make_processed(tmp_path_factory.mktemp("imb"), per_class=[12, 20, 8, 10], size=40, seed=1)


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("timing", "train_seconds")}


def assert_reloads_and_reproduces(model_dir: Path, data: Path) -> None:
    preds = read_predictions(model_dir / "predictions.csv")
    clf = load_classifier(model_dir)
    probs = clf.predict_proba([read_rgb(data / p) for p in preds["path"]])
    assert np.allclose(probs, preds[[f"prob_{c}" for c in clf.classes]].to_numpy(), atol=1e-4)
    assert [clf.classes[i] for i in probs.argmax(1)] == preds["pred"].tolist()


@pytest.mark.parametrize("preset,folder", [
    ("resnet50", "resnet50"),
    pytest.param("vgg16", "vgg16", marks=pytest.mark.slow),
    pytest.param("vit_b_16", "vit_b_16", marks=pytest.mark.slow),
])
def test_study_script_writes_everything_and_reloads(preset, folder, processed_dir, tmp_path):
    main_for(preset)(["--data", str(processed_dir), "--results", str(tmp_path), *TINY, "--epochs", "1",
                      "--aug-views", "0"])
    out = tmp_path / folder
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    metrics = fileio.read_json(out / "metrics.json")
    cfg = fileio.read_json(out / "config.json")
    assert metrics["model"] == folder and metrics["n"] == 12 and metrics["epochs_run"] == 1
    assert metrics["weights"] == cfg["weights_used"] == "none" and metrics["finetune"] == "head"
    assert list(pd.read_csv(out / "history.csv").columns) == list(engine.HISTORY_COLUMNS)
    report = (out / "classification_report.txt").read_text()
    assert report.count("0.") > 4 and "weights: none" in report
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["arch"] == folder and best["classes"] == ["foam", "hard", "line", "pellet"]
    assert best["image_size"] == 32 and len(best["mean"]) == 3 and best["config"]["preset"] == preset
    # head mode: last.pt holds the trainable head and optimizer, never the frozen backbone
    last = torch.load(out / "last.pt", weights_only=True)
    assert not any(k.startswith("backbone.") for k in last["trainable_state"])
    assert_reloads_and_reproduces(out, processed_dir)


def test_crop_input_norm_travels_with_the_checkpoint(processed_dir, tmp_path):
    run = main_for("resnet50")
    flags = ["--data", str(processed_dir), "--results", str(tmp_path), *TINY, "--arch", "resnet18", "--epochs", "1",
             "--aug-views", "0"]
    run([*flags, "--input-norm", "crop"])
    out = tmp_path / "resnet18"
    best = torch.load(out / "best.pt", weights_only=True)
    metrics = fileio.read_json(out / "metrics.json")
    assert best["input_norm"] == best["config"]["input_norm"] == metrics["input_norm"] == "crop"
    assert "input norm: crop" in (out / "classification_report.txt").read_text()
    clf = load_classifier(out)
    assert clf.input_norm == clf.preset.input_norm == "crop"
    assert_reloads_and_reproduces(out, processed_dir)  # the reloaded model normalises as in training
    with pytest.raises(UserError, match="input_norm"):
        run([*flags, "--resume"])  # the interrupted run used --input-norm crop
    run(flags)
    assert len(list((tmp_path / ".embeddings").glob("*.pt"))) == 2, "each normalisation has its own cache"
    del best["input_norm"]  # a checkpoint from before the option existed
    torch.save(best, tmp_path / "old.pt")
    assert load_classifier(tmp_path / "old.pt").input_norm == "imagenet"


def test_same_seed_same_results(imbalanced, tmp_path):
    flags = ["--data", str(imbalanced), *TINY, "--arch", "resnet18", "--epochs", "2", "--aug-views", "1"]
    for name in ("a", "b"):  # separate folders, so the embeddings are computed twice
        main_for("resnet50")([*flags, "--results", str(tmp_path / name)])
    a, b = (fileio.read_json(tmp_path / n / "resnet18" / "metrics.json") for n in ("a", "b"))
    assert a["balance"] == "smote" and comparable(a) == comparable(b)
    assert read_predictions(tmp_path / "a/resnet18/predictions.csv").equals(
        read_predictions(tmp_path / "b/resnet18/predictions.csv"))


def _interrupt_after(monkeypatch, epochs: int) -> None:
    """Simulate a kill right after epoch ``epochs`` has been checkpointed."""
    real, calls = engine.write_history, []

    def write_then_die(out_dir, history):
        real(out_dir, history)
        calls.append(1)
        if len(calls) == epochs:
            raise KeyboardInterrupt
    monkeypatch.setattr(engine, "write_history", write_then_die)


@pytest.mark.parametrize("arch,extra", [
    ("resnet18", ["--aug-views", "1", "--lr", "1e-3"]),  # head mode: SMOTE, dropout
    ("vit_tiny", ["--finetune", "full", "--batch-size", "8", "--lr", "1e-3"]),  # end to end, class weights
])
def test_resume_ends_where_an_unbroken_run_ends(arch, extra, imbalanced, tmp_path, monkeypatch):
    flags = ["--data", str(imbalanced), *TINY, "--arch", arch, "--epochs", "3", "--patience", "2", *extra]
    run = main_for("resnet50")
    run([*flags, "--results", str(tmp_path / "whole")])
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            run([*flags, "--results", str(tmp_path / "broken")])
    broken = tmp_path / "broken" / arch
    (staged,) = broken.parent.glob(f".{arch}.partial.*")  # the stopped run, kept aside for --resume
    assert len(pd.read_csv(staged / "history.csv")) == 2 and not (staged / "metrics.json").exists()
    assert not broken.exists()
    run([*flags, "--results", str(tmp_path / "broken"), "--resume"])
    assert not staged.exists() and (broken / "metrics.json").is_file()
    whole = tmp_path / "whole" / arch
    h1, h2 = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (whole, broken))
    assert h1.equals(h2)
    m1, m2 = (fileio.read_json(d / "metrics.json") for d in (whole, broken))
    assert comparable(m1) == comparable(m2)
    assert read_predictions(whole / "predictions.csv").equals(read_predictions(broken / "predictions.csv"))


def test_bad_combinations_are_user_errors(processed_dir, tmp_path):
    run = main_for("resnet50")
    base = ["--data", str(processed_dir), "--results", str(tmp_path), *TINY, "--arch", "resnet18"]
    with pytest.raises(UserError, match="smote needs --finetune head"):
        run([*base, "--finetune", "full", "--balance", "smote"])
    with pytest.raises(UserError, match="last.pt not found"):
        run([*base, "--resume"])
    with pytest.raises(UserError, match="no ImageNet weights"):
        run([*base, "--arch", "vit_tiny", "--weights", "imagenet"])
    with pytest.raises(UserError, match="between 0"):
        run([*base, "--swap-background", "1.5"])


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / name), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.slow  # two fresh interpreters importing torch
def test_scripts_fail_with_one_line_and_status_2(processed_dir, tmp_path):
    bad_arch = _script("vgg16.py", "--data", str(processed_dir), "--results", str(tmp_path), "--arch", "vgg61")
    bad_data = _script("vits.py", "--data", str(tmp_path / "missing"), "--results", str(tmp_path))
    for proc, words in ((bad_arch, "unknown --arch 'vgg61'"), (bad_data, "does not exist")):
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and words in proc.stderr
    helped = get_args_parser("resnet50").format_help()
    for flag in ("--finetune", "--balance", "--aug-views", "--resume", "--weights", "--deterministic"):
        assert flag in helped


@pytest.mark.parametrize("finetune", ["full", "head"])
def test_augmented_validation_adds_one_fixed_augmented_copy_of_val(finetune, processed_dir, tmp_path, monkeypatch):
    """--val-augment on: early stopping sees the clean val crops and one seeded augmented copy of them."""
    seen = []

    def capture(**kw):  # stop at the epoch loop: what it would validate on is all this test needs
        seen.append(kw["val_loader"])
        raise KeyboardInterrupt
    monkeypatch.setattr(engine, "fit", capture)
    flags = ["--data", str(processed_dir), *TINY, "--arch", "resnet18", "--finetune", finetune, "--augment", "strong",
             "--aug-views", "0", "--results", str(tmp_path)]
    for value in ("off", "on", "on"):
        with pytest.raises(KeyboardInterrupt):
            main_for("resnet50")([*flags, "--val-augment", value])
    (xs_off, ys_off), (xs_on, ys_on), (xs_again, _) = (
        (torch.cat([x for x, _ in loader]), torch.cat([y for _, y in loader])) for loader in seen)
    n = len(xs_off)
    assert n > 0 and len(xs_on) == 2 * n
    assert torch.equal(ys_on, torch.cat([ys_off, ys_off]))
    assert torch.allclose(xs_on[:n], xs_off, atol=1e-5), "the first copy is the clean val set"
    assert not torch.allclose(xs_on[n:], xs_off, atol=1e-3), "the second copy is augmented"
    assert torch.equal(xs_on, xs_again), "the augmented copy is drawn once, from the seed"
    if finetune == "head":
        assert len(list((tmp_path / ".embeddings").glob("*.pt"))) == 2, "the augmented val set has its own cache"


@pytest.mark.parametrize("finetune", ["head", "full"])
def test_shape_cues_train_with_the_head_and_travel_in_the_checkpoint(finetune, processed_dir, tmp_path):
    """--shape-cues on: the head takes the crops' shape cues; best.pt says so and reloads to the same predictions."""
    from microplastics.data.dataset import load_manifest, split_frame
    from microplastics.deep.checkpoint import load as load_checkpoint
    from microplastics.deep.transforms import cue_vector

    main_for("resnet50")(["--data", str(processed_dir), "--results", str(tmp_path), *TINY, "--arch", "resnet18",
                          "--finetune", finetune, "--epochs", "2", "--aug-views", "1", "--shape-cues", "on",
                          "--swap-background", "0.5"])
    out = tmp_path / "resnet18"
    best = load_checkpoint(out / "best.pt")
    assert best["shape_cues"] is True and best["config"]["shape_cues"] == "on"
    metrics = fileio.read_json(out / "metrics.json")
    assert metrics["shape_cues"] == "on" and metrics["swap_background"] == 0.5 == best["config"]["swap_background"]
    assert "shape cues: on" in (out / "classification_report.txt").read_text()
    clf = load_classifier(out)
    assert clf.shape_cues and clf.preprocess([read_rgb(next(processed_dir.glob("test/*/*.png")))]).shape[1] == 7
    assert clf.model.head.cues[-1].weight.abs().sum() > 0, "the cue network trained"
    groups = load_checkpoint(out / "last.pt")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-4, 1e-3], "the new cue network trains at ten times the lr"
    assert len(groups[1]["params"]) == 4  # its two layers' weights and biases
    assert_reloads_and_reproduces(out, processed_dir)
    if finetune == "head":  # the cached embeddings end in the cues of each crop as photographed
        (cache,) = (tmp_path / ".embeddings").glob("*.pt")
        train = split_frame(load_manifest(processed_dir), "train")
        clean = torch.load(cache, weights_only=True)["train"][0]
        expected = np.stack([cue_vector(read_rgb(processed_dir / p)) for p in train["path"]])
        assert np.allclose(clean[:, -4:].numpy(), expected, atol=1e-6)


def test_head_mode_writes_the_frozen_backbone_once(processed_dir, tmp_path, monkeypatch):
    """A better epoch saves the head alone (best_head.pt); best.pt, backbone included, is written once at the end."""
    from microplastics.deep import checkpoint

    saved, save = [], checkpoint.save

    def recording_save(obj, path):
        saved.append((Path(path).name, sum(v.numel() for k, v in obj.get("state_dict", {}).items())))
        save(obj, path)
    monkeypatch.setattr(checkpoint, "save", recording_save)
    main_for("resnet50")(["--data", str(processed_dir), "--results", str(tmp_path), *TINY, "--arch", "resnet18",
                          "--epochs", "4", "--patience", "4", "--lr", "1e-3", "--aug-views", "0"])
    out = tmp_path / "resnet18"
    history = pd.read_csv(out / "history.csv")
    better = int((history["val_loss"] == history["val_loss"].cummin()).sum())
    assert better >= 2, "the test needs more than one better epoch"
    names = [name for name, _ in saved]
    assert names.count("best_head.pt") == better and names.count("last.pt") == len(history) == 4
    assert names.count("best.pt") == 1 and names[-1] == "best.pt"
    assert not (out / "best_head.pt").exists(), "the staging head is gone once best.pt holds it"
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == int(history["val_loss"].idxmin()) + 1  # the best epoch's head, not the last one's
    assert_reloads_and_reproduces(out, processed_dir)
