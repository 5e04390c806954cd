"""Hostile model files and faults, each run through the real script in a subprocess.

Every refusal must end with exit status 2 and exactly one ``error:`` line, no traceback, and
leave every file that was there before as it was (nothing written anywhere, outputs included).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

from microplastics.data import extraction, preprocessing as preprocess
from microplastics.core import fileio
from microplastics.explain import grad_cam as gradcam
from microplastics.classical import iou
from microplastics.predict import prediction as predict, robustness
from microplastics.results import report as reports
from microplastics.classical.baselines import main as baselines_main
from microplastics.core.cli import run
from microplastics.deep.stage import main_for

ROOT = Path(__file__).resolve().parents[1]
DEEP = "resnet18"
TINY_DEEP = ["--arch", DEEP, "--image-size", "32", "--weights", "none", "--workers", "0", "--device", "cpu",
             "--aug-views", "0"]


class Payload:
    """Unpickling this creates ``marker``: what a malicious pickle would do, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# ---------------------------------------------------------------- helpers

def run_script(script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, stderr exactly one line ``error: ...`` holding every needle, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its hash (folders: '')."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            for p in sorted(root.rglob("*"))}


def in_process(main, argv: list[str], capsys, script: str = "script.py") -> tuple[int, str]:
    """A stage's main run as ``script`` runs it (``cli.run``, that name in sys.argv[0]): exit status and stderr."""
    with pytest.raises(SystemExit) as info, mock.patch.object(sys, "argv", [script, *argv]):
        run(main, argv)
    return int(info.value.code), capsys.readouterr().err


def assert_one_error_in_process(main, argv: list[str], capsys, *needles: str, script: str = "script.py") -> str:
    """``assert_one_error`` for a stage's main run in this process (saves an interpreter start)."""
    code, err = in_process(main, argv, capsys, script)
    assert code == 2 and "Traceback" not in err, (code, err[-2000:])
    assert err.count("\n") == 1 and err.startswith("error: "), err[-2000:]
    for needle in needles:
        assert needle in err, (needle, err)
    return err.strip()


STAGE_MAINS = {"data-extraction.py": extraction.main, "data-preprocessing.py": preprocess.main,
               "ml-baselines.py": baselines_main, "ml-IOU.py": iou.main, "vgg16.py": main_for("vgg16"),
               "resnet50.py": main_for("resnet50"), "vits.py": main_for("vit_b_16"),
               "efficientnet.py": main_for("efficientnet_lite0"), "prediction.py": predict.main,
               "grad-cam.py": gradcam.main, "report.py": reports.main, "robustness.py": robustness.main}


@pytest.fixture(scope="module")
def trained(processed_dir, tmp_path_factory) -> Path:
    """A finished deep run and a finished Random Forest, trained tiny through the scripts' main functions."""
    out = tmp_path_factory.mktemp("safety_results")
    main_for("resnet50")(["--data", str(processed_dir), "--results", str(out), *TINY_DEEP, "--epochs", "1"])
    baselines_main(["--data", str(processed_dir), "--results", str(out), "--models", "rf", "--workers", "1",
                    "--grid-size", "0", "--no-cache", "--augment", "none"])
    return out


@pytest.fixture
def results(trained, tmp_path) -> Path:
    """A private copy of the trained results, so that a test may tamper with it."""
    return Path(shutil.copytree(trained, tmp_path / "results"))


def crop_of(processed_dir: Path) -> str:
    return str(next(processed_dir.glob("test/*/*.png")))


# ---------------------------------------------------------------- classical models never run code

def test_a_malicious_model_joblib_never_runs(results, processed_dir, tmp_path):
    marker = tmp_path / "pwned"
    rf = results / "rf"
    (rf / "model.skops").unlink()
    (rf / "model.joblib").write_bytes(pickle.dumps({"pipeline": Payload(marker)}))
    before = snapshot(tmp_path)
    runs = [run_script("prediction.py", "--model", str(rf), "--input", crop_of(processed_dir), "--device", "cpu"),
            run_script("prediction.py", "--models", "rf", "--results", str(results), "--data", str(processed_dir),
                       "--device", "cpu"),
            run_script("robustness.py", "--data", str(processed_dir), "--results", str(results), "--model", "rf",
                       "--apply-to", "crop", "--device", "cpu")]
    for proc in runs:
        assert_one_error(proc, "model.joblib", "pickle", "retrain")
    assert not marker.exists(), "the pickle's code ran"
    assert snapshot(tmp_path) == before


def test_a_skops_file_with_foreign_types_is_refused_unread(results, processed_dir, tmp_path):
    """Even with the foreign class importable, skops' type list stops it before anything is built."""
    marker = tmp_path / "pwned"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "evilmod.py").write_text(
        "class Evil:\n"
        "    def __setstate__(self, state):\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "        self.__dict__.update(state)\n")
    model = results / "rf" / "model.skops"
    build = ("import sys, skops.io as sio, evilmod\n"
             "payload = {'format': 2, 'name': 'rf', 'classes': ['a', 'b'], 'pipeline': evilmod.Evil()}\n"
             f"sio.dump(payload, {str(model)!r})\n")
    env = {**os.environ, "PYTHONPATH": str(module_dir)}
    subprocess.run([sys.executable, "-c", build], check=True, env=env, capture_output=True)
    assert not marker.exists()
    before = snapshot(tmp_path)
    proc = run_script("prediction.py", "--model", str(results / "rf"), "--input", crop_of(processed_dir),
                      "--device", "cpu", env={"PYTHONPATH": str(module_dir)})
    assert_one_error(proc, "evilmod.Evil", "not loaded")
    assert not marker.exists() and snapshot(tmp_path) == before


def test_a_renamed_pickle_as_model_skops_is_one_line(results, processed_dir, tmp_path):
    marker = tmp_path / "pwned"
    (results / "rf" / "model.skops").write_bytes(pickle.dumps(Payload(marker)))
    proc = run_script("prediction.py", "--model", str(results / "rf"), "--input", crop_of(processed_dir),
                      "--device", "cpu")
    assert_one_error(proc, "not a readable model.skops")
    assert not marker.exists()


# ---------------------------------------------------------------- deep checkpoints

def _tampered_best(best: dict, kind: str, marker: Path) -> dict:
    if kind == "malicious":
        return {**best, "extra": Payload(marker)}
    if kind == "no-arch":
        return {k: v for k, v in best.items() if k != "arch"}
    return {**best, "classes": [*best["classes"], "extra_class"]}  # one class more than its weights


@pytest.mark.parametrize("kind,needles", [
    ("malicious", ("not a checkpoint of this project", "must not be loaded unsafely")),
    ("no-arch", ("'arch' is missing",)),
    ("class-count", ("do not fit", "5 classes")),
])
def test_a_bad_best_pt_is_one_line(results, processed_dir, tmp_path, kind, needles, capsys):
    marker = tmp_path / "pwned"
    path = results / DEEP / "best.pt"
    torch.save(_tampered_best(torch.load(path, weights_only=True), kind, marker), path)
    assert not marker.exists()
    before = snapshot(tmp_path)
    argv = ["--model", str(results / DEEP), "--input", crop_of(processed_dir), "--device", "cpu"]
    if kind == "malicious":
        line = assert_one_error(run_script("prediction.py", *argv), *needles)
    else:
        line = assert_one_error_in_process(predict.main, argv, capsys, *needles)
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert not marker.exists() and snapshot(tmp_path) == before


def test_a_malicious_weights_file_is_one_line(processed_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    torch.save({"conv1.weight": Payload(marker)}, evil)
    code, err = in_process(main_for("resnet50"), ["--data", str(processed_dir), "--results", str(tmp_path / "r"),
                                                  *TINY_DEEP, "--weights", str(evil)], capsys)
    assert code == 2 and err.count("\n") == 1 and "must not be loaded unsafely" in err
    assert "weights_only" not in err and not marker.exists() and not (tmp_path / "r" / DEEP).exists()


# ---------------------------------------------------------------- grad-cam never deletes what it did not write

def test_grad_cam_keeps_files_it_did_not_write(results, processed_dir, tmp_path, capsys):
    model = str(results / DEEP)
    flags = ["--n", "2", "--device", "cpu", "--data", str(processed_dir)]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    afile = tmp_path / "afile.png"
    afile.write_bytes(b"my picture")
    before = snapshot(tmp_path)
    assert_one_error(run_script("grad-cam.py", "--model", model, "--out", str(mine), *flags),
                     "not an earlier Grad-CAM output")
    assert_one_error_in_process(gradcam.main, ["--model", model, "--out", str(afile), *flags], capsys, "is a file")
    assert snapshot(tmp_path) == before
    # its own output, and a rerun over it, are fine; another model's output is refused
    for _ in range(2):
        assert in_process(gradcam.main, ["--model", model, *flags], capsys)[0] == 0
    owner = json.loads((results / DEEP / "gradcam" / "gradcam.json").read_text())
    assert owner["model"] == str((results / DEEP).resolve()) and "overview.png" in owner["files"]
    other = Path(shutil.copytree(results / DEEP, tmp_path / "other_model"))
    shutil.rmtree(other / "gradcam")
    kept = snapshot(results / DEEP / "gradcam")
    assert_one_error_in_process(gradcam.main, ["--model", str(other), "--out", str(results / DEEP / "gradcam"),
                                               *flags], capsys, "not an earlier Grad-CAM output")
    assert snapshot(results / DEEP / "gradcam") == kept


# ---------------------------------------------------------------- an interrupted run loses nothing

def _kill_when_checkpointed(cmd: list[str], results: Path) -> Path:
    """Start a long training run, SIGKILL it once it has checkpointed two epochs; its staging folder."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staged = [d for d in results.glob(f".{DEEP}.partial.*") if (d / "last.pt").is_file()]
            history = staged[0] / "history.csv" if staged else None
            if history is not None and history.is_file() and len(history.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    (staging,) = [d for d in results.glob(f".{DEEP}.partial.*")]
    return staging


def test_a_killed_run_keeps_the_finished_one_and_resumes(results, processed_dir):
    (results / DEEP / "external").mkdir()  # what a later stage wrote into the model folder
    (results / DEEP / "external" / "particles.csv").write_text("photo,pred\n")
    finished = snapshot(results / DEEP)
    cmd = [sys.executable, str(ROOT / "resnet50.py"), "--data", str(processed_dir), "--results", str(results),
           *TINY_DEEP, "--epochs", "100000", "--patience", "100000", "--lr", "1e-3"]
    staging = _kill_when_checkpointed(cmd, results)
    assert snapshot(results / DEEP) == finished, "the finished run was touched"
    assert (staging / "last.pt").is_file() and not (staging / "metrics.json").exists()
    epochs_done = torch.load(staging / "last.pt", weights_only=True)["epoch"]
    assert epochs_done >= 2

    # --resume finds the stopped run and swaps it in once it has finished (--epochs 1: nothing more to train)
    resumed = run_script("resnet50.py", "--data", str(processed_dir), "--results", str(results), *TINY_DEEP,
                         "--epochs", "1", "--patience", "100000", "--lr", "1e-3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {epochs_done}" in resumed.stdout
    assert not staging.exists() and not list(results.glob(f".{DEEP}.partial.*"))
    assert len(pd.read_csv(results / DEEP / "history.csv")) == epochs_done
    assert json.loads((results / DEEP / "metrics.json").read_text())["epochs_run"] == epochs_done
    assert (results / DEEP / "external" / "particles.csv").read_text() == "photo,pred\n"  # carried over

    # a killed run's staging folder is removed, with a note, by the next fresh run
    staging = _kill_when_checkpointed(cmd, results)
    fresh = run_script("resnet50.py", "--data", str(processed_dir), "--results", str(results), *TINY_DEEP,
                       "--epochs", "1")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert f"note: removed {staging}" in fresh.stderr
    assert not staging.exists() and not list(results.glob(".*.partial.*"))
    assert json.loads((results / DEEP / "metrics.json").read_text())["epochs_run"] == 1


def test_only_the_staging_folders_of_dead_processes_are_removed(tmp_path, capsys):
    final = tmp_path / "model"
    make = f"from microplastics.core import fileio; print(fileio.staging_dir({str(final)!r}), flush=True)"
    live_proc = subprocess.Popen([sys.executable, "-c", make + "; import time; time.sleep(120)"], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
    try:
        live = Path(live_proc.stdout.readline().strip())
        dead = Path(subprocess.run([sys.executable, "-c", make], cwd=ROOT, capture_output=True, text=True,
                                   check=True).stdout.strip())
        assert live.is_dir() and dead.is_dir() and live != dead
        assert fileio.stale_staging_dirs(final) == [dead]
        mine = fileio.staging_dir(final)
        assert f"note: removed {dead}" in capsys.readouterr().err
        assert not dead.exists() and live.is_dir() and mine.is_dir()
        fileio.replace_dir(mine, final)
        assert final.is_dir() and not list(final.iterdir())  # the lock file does not travel with the folder
    finally:
        live_proc.kill()
        live_proc.wait()
    assert fileio.stale_staging_dirs(final) == [live]  # its process is gone now


# ---------------------------------------------------------------- only finished runs are models

def test_a_half_trained_folder_is_not_a_model(results, processed_dir, tmp_path, capsys):
    (results / DEEP / "metrics.json").unlink()  # best.pt and last.pt, but the run never finished
    before = snapshot(tmp_path)
    runs = [run_script("prediction.py", "--model", str(results / DEEP), "--input", crop_of(processed_dir),
                       "--device", "cpu"),
            run_script("robustness.py", "--data", str(processed_dir), "--results", str(results), "--model", DEEP,
                       "--apply-to", "crop", "--device", "cpu")]
    for proc in runs:
        assert_one_error(proc, "did not finish")
    assert_one_error_in_process(predict.main, ["--models", DEEP, "--results", str(results), "--device", "cpu"],
                                capsys, "did not finish")
    assert_one_error_in_process(gradcam.main, ["--model", str(results / DEEP), "--device", "cpu"], capsys,
                                "did not finish")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- numbers that do not follow from the files

def test_a_truncated_predictions_csv_is_refused_by_iou_and_report(results, processed_dir, tmp_path):
    path = results / "rf" / "predictions.csv"
    lines = path.read_text().splitlines()
    assert len(lines) == 13  # header and 12 test crops
    path.write_text("\n".join(lines[:3]) + "\n")
    before = snapshot(tmp_path)
    for proc in (run_script("ml-IOU.py", "--results", str(results)),
                 run_script("report.py", "--results", str(results), "--data", str(processed_dir))):
        assert_one_error(proc, "rf: metrics.json says n = 12.000000 but its predictions.csv gives 2.000000")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name,content,needle", [
    ("metrics.json", b"{not json", "not valid JSON"),
    ("metrics.json", b"", "not valid JSON"),
    ("metrics.json", b"[1, 2]", "holds a JSON list"),
    ("metrics.json", None, "accuracy is 'high', not a number"),
    ("predictions.csv", bytes(range(256)) * 8, "not a readable predictions.csv"),
    ("predictions.csv", b"a,b\n1,2\n", "lacks column(s) path, pred, true"),
])
def test_bad_metrics_or_predictions_are_one_line(results, processed_dir, tmp_path, name, content, needle,
                                                  capsys):
    path = results / "rf" / name
    if content is None:
        content = json.dumps({**json.loads(path.read_text()), "accuracy": "high"}).encode()
    path.write_bytes(content)
    before = snapshot(tmp_path)
    if name == "predictions.csv" or content == b"":  # through the script; the others in-process
        assert_one_error(run_script("ml-IOU.py", "--results", str(results)), needle)
    else:
        assert_one_error_in_process(iou.main, ["--results", str(results)], capsys, needle)
    assert_one_error_in_process(reports.main, ["--results", str(results), "--data", str(processed_dir)], capsys,
                                needle)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- the embedding cache

@pytest.mark.parametrize("damage,why", [
    ("truncate", "is unreadable"),
    ("malicious", "holds objects other than tensors"),
    ("wrong-shape", "has train embeddings of shape (1, 3, 7)"),
])
def test_a_bad_embedding_cache_is_rebuilt_and_said(results, processed_dir, tmp_path, damage, why, capsys):
    (cache,) = (results / ".embeddings").glob(f"{DEEP}-32px-*.pt")
    good = torch.load(cache, weights_only=True)
    marker = tmp_path / "pwned"
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:1000])
    elif damage == "malicious":
        torch.save({**good, "extra": Payload(marker)}, cache)
    else:
        torch.save({**good, "train": torch.zeros(1, 3, 7)}, cache)
    argv = ["--data", str(processed_dir), "--results", str(results), *TINY_DEEP, "--epochs", "1"]
    if damage == "malicious":  # through the script itself; the others in-process, to save interpreter starts
        proc = run_script("resnet50.py", *argv)
        code, err = proc.returncode, proc.stderr
    else:
        code, err = in_process(main_for("resnet50"), argv, capsys)
    assert code == 0, err[-2000:]
    assert f"warning: embedding cache {cache} {why}" in err and "rebuilding it" in err
    assert not marker.exists()
    metrics = json.loads((results / DEEP / "metrics.json").read_text())
    assert metrics["timing"]["embedding_cached"] is False
    rebuilt = torch.load(cache, weights_only=True)
    assert all(torch.equal(rebuilt[k], good[k]) for k in good)


# ---------------------------------------------------------------- command lines

def test_float_flags_must_be_finite(tmp_path, processed_dir, capsys):
    results = tmp_path / "r"
    proc = run_script("resnet50.py", "--data", str(processed_dir), "--results", str(results), *TINY_DEEP,
                      "--lr", "nan")
    assert_one_error(proc, "argument --lr: 'nan' is not a finite number", "see resnet50.py --help")
    cases = [("resnet50.py", ["--results", str(results), "--lr", "inf"]),
             ("grad-cam.py", ["--model", str(tmp_path), "--alpha", "nan"]),
             ("prediction.py", ["--model", str(tmp_path), "--input", "x", "--margin", "inf"]),
             ("robustness.py", ["--results", str(tmp_path), "--margin", "NaN"]),
             ("data-preprocessing.py", ["--output", str(results), "--val-fraction", "inf"])]
    for script, argv in cases:
        assert_one_error_in_process(STAGE_MAINS[script], argv, capsys, f"{argv[-1]!r} is not a finite number",
                                    f"see {script} --help", script=script)
    assert list(tmp_path.iterdir()) == []


def test_argparse_errors_are_one_line(capsys):
    for script in ("ml-IOU.py", "vits.py"):
        proc = run_script(script, "--no-such-flag", timeout=120)
        assert_one_error(proc, "unrecognized arguments: --no-such-flag", f"see {script} --help")
    for script in sorted(p.name for p in ROOT.glob("*.py")):  # every stage script there is
        if script not in STAGE_MAINS:
            assert_one_error(run_script(script, "--no-such-flag", timeout=120), f"see {script} --help")
            continue
        code, err = in_process(STAGE_MAINS[script], ["--no-such-flag"], capsys, script)
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {script}: "), (script, err)
        assert err.rstrip().endswith(f"see {script} --help") and "usage:" not in err


def test_output_paths_under_a_file_are_one_line(results, processed_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    before = snapshot(tmp_path)
    crop = crop_of(processed_dir)
    cases = [
        (run_script("ml-baselines.py", "--data", str(processed_dir), "--results", str(afile), "--models", "rf"),
         "--results"),
        (run_script("resnet50.py", "--data", str(processed_dir), "--results", str(afile), *TINY_DEEP), "--results"),
        (run_script("prediction.py", "--model", str(results / "rf"), "--input", crop, "--out", str(afile)), "--out"),
    ]
    for proc, flag in cases:
        assert_one_error(proc, flag, f"{afile} is a file")
    assert_one_error_in_process(predict.main, ["--model", str(results / "rf"), "--input", crop, "--csv",
                                               str(tmp_path)], capsys, f"--csv {tmp_path} is a folder")
    assert_one_error_in_process(predict.main, ["--model", str(results / "rf"), "--photos", str(tmp_path), "--out",
                                               str(afile / "sub")], capsys, f"{afile} is a file")
    assert snapshot(tmp_path) == before
