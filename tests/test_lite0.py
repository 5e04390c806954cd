"""EfficientNet-Lite0: the key map, the packaged ImageNet weights, and efficientnet.py with no network."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata

from microplastics.explain import cam as explain
from microplastics.core import fileio
from microplastics.deep import lite0, models
from microplastics.deep.models import get_spec
from microplastics.deep.stage import main_for
from microplastics.deep.transforms import EvalPreset, batch_tensor
from test_train import assert_reloads_and_reproduces

ROOT = Path(__file__).resolve().parents[1]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = (967, 968)     # espresso, cup

# Run a script with every way out to the network closed; an attempt leaves a file behind.
BLOCKED = """
import runpy, socket, sys
marker = sys.argv.pop(1)
def refuse(*args, **kwargs):
    open(marker, "w").write(repr(args))
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """In this process: any connection attempt is recorded and fails; TORCH_HOME is empty."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    return attempts


def test_key_map_loads_every_tensor_with_no_missing_or_unexpected_key():
    original = torch.load(lite0.weights_path(), map_location="cpu", weights_only=True)
    assert len(original) == 296
    mapped = lite0.to_timm(original)
    net = lite0.build_network()
    target = net.state_dict()
    assert set(mapped) == set(target)  # a bijection onto timm's names
    assert all(mapped[k].shape == target[k].shape for k in target)
    result = net.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net.blocks[6][0].conv_pwl.weight, original["_blocks.15._project_conv.weight"])
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(4.69e6, rel=0.01)


def test_key_map_by_hand():
    assert lite0.timm_key("_conv_stem.weight") == "conv_stem.weight"
    assert lite0.timm_key("_bn0.running_var") == "bn1.running_var"
    assert lite0.timm_key("_bn1.bias") == "bn2.bias"  # the head's BatchNorm
    assert lite0.timm_key("_fc.weight") == "classifier.weight"
    # stage 0 is depthwise-separable: its _project_conv is timm's conv_pw, its _bn1 follows the depthwise
    assert lite0.timm_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert lite0.timm_key("_blocks.0._bn1.weight") == "blocks.0.0.bn1.weight"
    # later blocks are inverted residuals; _blocks.3 is the first of stage 2, _blocks.15 the only one of stage 6
    assert lite0.timm_key("_blocks.3._expand_conv.weight") == "blocks.2.0.conv_pw.weight"
    assert lite0.timm_key("_blocks.4._bn1.weight") == "blocks.2.1.bn2.weight"
    assert lite0.timm_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    with pytest.raises(KeyError):
        lite0.timm_key("_blocks.0._expand_conv.weight")  # stage 0 has no expansion


def imagenet_top1(net: torch.nn.Module) -> list[int]:
    images = [skdata.chelsea(), skdata.coffee()]
    with torch.no_grad():
        return net.eval()(batch_tensor(images, EvalPreset(224))).argmax(1).tolist()


def test_packaged_weights_know_a_cat_and_a_coffee(no_network):
    spec = get_spec("efficientnet_lite0")
    net = lite0.build_network()
    net.load_state_dict(models.load_pretrained_state(spec, "imagenet", 224))  # the registry's own path
    cat, coffee = imagenet_top1(net)
    assert cat in CATS and coffee in COFFEE
    assert not no_network
    torch.manual_seed(0)
    cat, coffee = imagenet_top1(lite0.build_network())  # the same test fails a random network
    assert not (cat in CATS and coffee in COFFEE)


def test_weights_are_described_by_file_and_sha256():
    spec = get_spec("efficientnet_lite0")
    text = models.describe_weights(spec, "imagenet")
    sha = models.file_sha256(lite0.weights_path())
    assert lite0.WEIGHTS_FILE in text and sha in text and lite0.WEIGHTS_PACKAGE in text
    assert sha.startswith("57934424")  # the hash prefix the file is named after: the file is intact
    assert models.expected_weights_file(spec) == lite0.weights_path()
    assert "efficientnet_lite0" in models.known_archs()


def test_gradcam_layer_gives_a_varying_map():
    spec = get_spec("efficientnet_lite0")
    model = spec.build(4, "imagenet", 96).eval()
    (layer,) = spec.cam_target_layers(model)
    assert layer is model.backbone.bn2
    maps = explain.explain(model, spec, batch_tensor([skdata.chelsea()], EvalPreset(96)), "gradcam")
    assert maps.shape == (1, 96, 96) and np.isfinite(maps).all() and maps.std() > 1e-3


def run_args(data: Path, results: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--results", str(results), "--image-size", "32", "--workers", "0", *extra]


def test_efficientnet_script_runs_with_the_network_blocked(processed_dir, tmp_path):
    marker = tmp_path / "network_attempt.txt"
    cmd = [sys.executable, "-c", BLOCKED, str(marker), "efficientnet.py",
           *run_args(processed_dir, tmp_path, "--finetune", "head", "--epochs", "2", "--balance", "smote")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg",
                               "HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    out = tmp_path / "efficientnet_lite0"
    sha = models.file_sha256(lite0.weights_path())
    cfg, metrics = fileio.read_json(out / "config.json"), fileio.read_json(out / "metrics.json")
    best = torch.load(out / "best.pt", weights_only=True)
    for recorded in (cfg["weights_used"], metrics["weights"], best["weights"]):
        assert recorded.startswith("imagenet:") and lite0.WEIGHTS_FILE in recorded and sha in recorded
    assert cfg["preset"] == "efficientnet_lite0" and metrics["balance"] == "smote" and metrics["finetune"] == "head"
    assert not metrics["timing"]["embedding_cached"]


def test_head_cache_and_full_mode_work_as_for_the_other_architectures(processed_dir, tmp_path, no_network):
    run = main_for("efficientnet_lite0")
    head = ("--finetune", "head", "--epochs", "2", "--cache-dir", str(tmp_path / "cache"))
    run(run_args(processed_dir, tmp_path / "a", *head))
    run(run_args(processed_dir, tmp_path / "b", *head))
    first, again = (fileio.read_json(tmp_path / r / "efficientnet_lite0" / "metrics.json") for r in ("a", "b"))
    assert not first["timing"]["embedding_cached"] and again["timing"]["embedding_cached"]
    assert first["macro_f1"] == again["macro_f1"]
    assert_reloads_and_reproduces(tmp_path / "a" / "efficientnet_lite0", processed_dir)

    # the preset's defaults: a short full fine-tuning with the strong augmentation, crop normalisation and
    # half the training crops on other filters
    run(run_args(processed_dir, tmp_path / "full", "--batch-size", "16", "--patience", "1"))
    out = tmp_path / "full" / "efficientnet_lite0"
    cfg = fileio.read_json(out / "config.json")
    assert (cfg["finetune"], cfg["augment"], cfg["input_norm"], cfg["val_augment"], cfg["lr"], cfg["epochs"],
            cfg["swap_background"]) == ("full", "strong", "crop", "off", 1e-4, 8, 0.5)
    best = torch.load(out / "best.pt", weights_only=True)
    pretrained = lite0.to_timm(torch.load(lite0.weights_path(), map_location="cpu", weights_only=True))
    # the backbone trained too, starting from the ImageNet weights
    assert not torch.equal(best["state_dict"]["backbone.conv_stem.weight"], pretrained["conv_stem.weight"])
    assert fileio.read_json(out / "metrics.json")["finetune"] == "full"
    assert_reloads_and_reproduces(out, processed_dir)
    assert not no_network
