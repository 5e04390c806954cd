"""DistributedDataParallel: the real scripts under torchrun, 2 CPU processes, gloo backend."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microplastics.core import fileio
from microplastics.deep.checkpoint import load_classifier
from microplastics.core.images import read_rgb
from microplastics.results.metrics import read_predictions
from microplastics.deep.stage import OUTPUT_FILES

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ROOT / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("script,arch,mode", [("resnet50.py", "resnet18", "head"), ("vits.py", "vit_tiny", "full")])
def test_two_processes_train_and_rank0_writes(script, arch, mode, processed_dir, tmp_path):
    proc = torchrun(script, "--data", str(processed_dir), "--results", str(tmp_path), "--arch", arch,
                    "--weights", "none", "--image-size", "32", "--epochs", "2", "--workers", "0",
                    "--aug-views", "1", "--finetune", mode, "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / arch
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert proc.stdout.count("test: accuracy") == 1  # only rank 0 reports and writes
    metrics = fileio.read_json(out / "metrics.json")
    assert metrics["world_size"] == 2 and metrics["finetune"] == mode
    assert fileio.read_json(out / "config.json")["world_size"] == 2
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert "device cpu x2" in proc.stdout and proc.stdout.count("epoch 1/2") == 1
    preds = read_predictions(out / "predictions.csv")
    clf = load_classifier(out)
    probs = clf.predict_proba([read_rgb(processed_dir / p) for p in preds["path"]])
    assert np.allclose(probs, preds[[f"prob_{c}" for c in clf.classes]].to_numpy(), atol=1e-4)
