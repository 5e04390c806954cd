"""Heat maps: every method on VGG-, ResNet- and ViT-shaped models, attention rollout, grad-cam.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torchvision.models import VGG
from torchvision.models.vgg import make_layers

from microplastics.explain import cam as explain, grad_cam as gradcam
from microplastics.core.cli import run
from microplastics.deep.models import ArchSpec, get_spec
from microplastics.deep.stage import main_for


def tiny_vgg(image_size: int) -> VGG:
    """VGG's class and attribute names (features, avgpool, classifier) at a few thousand weights."""
    net = VGG(make_layers([8, "M", 16, "M", 16, 16, "M"]), num_classes=10)
    net.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    net.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))
    return net


# (spec, input size): sizes at which the target layer still has a grid of at least 2x2.
ARCHS = {
    "vgg": (ArchSpec("vgg_tiny", "cnn", default_image_size=32, factory=tiny_vgg), 32),
    "resnet": (get_spec("resnet18"), 64),
    "vit": (get_spec("vit_tiny"), 32),
}
CASES = [(arch, method) for arch, (spec, _) in ARCHS.items() for method in explain.methods_for(spec.family)]


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[nn.Module, ArchSpec, torch.Tensor]]:
    """Each tiny model after one optimiser step on a small batch (not a freshly initialised one)."""
    torch.manual_seed(0)
    out = {}
    for arch, (spec, size) in ARCHS.items():
        model = spec.build(4, "none", size)
        x = torch.randn(4, 3, size, size)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        model.eval()
        out[arch] = (model, spec, x[:2])
    return out


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("arch,method", CASES)
def test_each_method_gives_finite_nonconstant_map_of_input_size(trained, arch, method):
    model, spec, x = trained[arch]
    maps = explain.explain(model, spec, x, method)
    assert maps.shape == (2, x.shape[2], x.shape[3])
    assert np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    for m in maps:  # the original's ViT maps were all zero: each map must vary
        assert m.std() > 1e-3
    assert hook_count(model) == 0  # every hook removed afterwards


@pytest.mark.parametrize("arch", list(ARCHS))
def test_gradcam_follows_the_requested_class(trained, arch):
    model, spec, x = trained[arch]
    a = explain.explain(model, spec, x, "gradcam", targets=[0, 0])
    b = explain.explain(model, spec, x, "gradcam", targets=[3, 3])
    assert not np.allclose(a, b)


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_aug_smooth_is_the_mean_of_the_eight_views_turned_back(trained, arch):
    model, spec, x = trained[arch]
    by_hand = []
    for flip in (False, True):
        for k in range(4):
            view = torch.rot90(torch.flip(x, dims=[3]) if flip else x, k, dims=(2, 3))
            m = torch.from_numpy(explain.explain(model, spec, view, "gradcam", targets=[1, 2]))
            back = torch.rot90(m, -k, dims=(1, 2))
            by_hand.append((torch.flip(back, dims=[2]) if flip else back).numpy())
    smoothed = explain.explain(model, spec, x, "gradcam", targets=[1, 2], aug_smooth=True)
    plain = explain.explain(model, spec, x, "gradcam", targets=[1, 2])
    np.testing.assert_allclose(smoothed, np.mean(by_hand, axis=0), atol=1e-5)
    assert not np.allclose(smoothed, plain, atol=1e-3)   # a model that is not symmetric: the views differ
    assert hook_count(model) == 0


def test_cam_works_with_frozen_weights(trained):
    model, spec, x = trained["resnet"]
    model.requires_grad_(False)
    try:
        maps = explain.explain(model, spec, x, "gradcam")
    finally:
        model.requires_grad_(True)
    assert maps.std() > 1e-3


def test_target_layers_of_the_study_architectures():
    with torch.device("meta"):  # no memory, no random initialisation
        vgg = get_spec("vgg16").build(4, "none", 224)
        resnet = get_spec("resnet50").build(4, "none", 224)
        vit = get_spec("vit_b_16").build(4, "none", 224)
    convs = [m for m in vgg.backbone.features if isinstance(m, nn.Conv2d)]
    assert get_spec("vgg16").cam_target_layers(vgg) == [convs[-1]]  # not the final max-pool
    assert get_spec("resnet50").cam_target_layers(resnet) == [resnet.backbone.layer4[-1]]
    last_block = vit.backbone.encoder.layers[-1]
    layer = get_spec("vit_b_16").cam_target_layers(vit)[0]
    assert any(layer is m for m in last_block.modules())
    tokens = torch.randn(2, 1 + 14 * 14, 768)
    grid = get_spec("vit_b_16").reshape_transform(tokens)
    assert grid.shape == (2, 768, 14, 14)
    assert torch.equal(grid[:, :, 0, 0], tokens[:, 1])  # class token dropped, patches in row order


def test_record_attention_restores_the_model(trained):
    model, spec, x = trained["vit"]
    with torch.no_grad():
        before = model(x)
        with explain.record_attention(model) as weights:
            during = model(x)
        after = model(x)
    layers = len(model.backbone.encoder.layers)
    tokens = 1 + (x.shape[-1] // spec.patch_size) ** 2
    assert len(weights) == layers
    assert weights[0].shape == (2, model.backbone.encoder.layers[0].num_heads, tokens, tokens)
    assert torch.allclose(weights[0].sum(-1), torch.ones(2, 2, tokens), atol=1e-5)
    assert torch.allclose(before, during, atol=1e-5) and torch.allclose(before, after, atol=1e-6)
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError), explain.record_attention(model):
        raise RuntimeError("boom")
    assert hook_count(model) == 0


def test_rollout_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    raw = [rng.random((1, 2, 3, 3)) for _ in range(2)]
    attn = [a / a.sum(-1, keepdims=True) for a in raw]
    expected = None
    for a in attn:
        m = a.mean(axis=1)[0] + np.eye(3)
        m = m / m.sum(-1, keepdims=True)
        expected = m if expected is None else m @ expected
    got = explain.rollout([torch.tensor(a) for a in attn])[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    identity = explain.rollout([torch.eye(3).expand(1, 2, 3, 3)] * 4)[0]
    assert torch.allclose(identity, torch.eye(3))


def test_rollout_refuses_a_cnn(trained):
    model, spec, x = trained["resnet"]
    with pytest.raises(ValueError, match="vision transformer"):
        explain.explain(model, spec, x, "rollout")


def test_overlay_keeps_the_crop_size():
    image = np.full((30, 50, 3), 128, np.uint8)
    heat = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = explain.overlay(image, heat)
    assert out.shape == (30, 50, 3) and out.dtype == np.uint8
    assert out[:, :, 0].std() > 0


# ----------------------------------------------------------------------------- grad-cam.py

@pytest.fixture(scope="module")
def deep_results(processed_dir, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("gradcam_results")
    common = ["--data", str(processed_dir), "--results", str(results), "--epochs", "1", "--weights", "none",
              "--workers", "0", "--device", "cpu", "--aug-views", "0"]
    main_for("vit_b_16")([*common, "--arch", "vit_tiny", "--image-size", "32"])
    main_for("resnet50")([*common, "--arch", "resnet18", "--image-size", "64"])
    return results


def exit_code(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        run(gradcam.main, argv)
    return int(info.value.code), capsys.readouterr().err


@pytest.mark.parametrize("arch,methods", [("vit_tiny", ["all"]), ("resnet18", ["gradcam", "eigencam"])])
def test_grad_cam_cli_writes_panels_and_overview(deep_results, arch, methods, capsys):
    model_dir = deep_results / arch
    code, err = exit_code(["--model", str(model_dir), "--per-class", "1", "--device", "cpu",
                           "--method", *methods], capsys)
    assert code == 0, err
    out = model_dir / "gradcam"
    table = pd.read_csv(out / "selection.csv")
    recorded = pd.read_csv(model_dir / "predictions.csv")
    assert sorted(table["true"]) == sorted(recorded["true"].unique())  # one crop of every class
    assert (table["pred"] == table["recorded_pred"]).all()  # same model, same crops, same predictions
    assert sorted(p.name for p in out.glob("0*.png")) == sorted(table["panel"])
    assert (out / "overview.png").stat().st_size > 0
    # a second, smaller run leaves no panel of the first behind
    code, _ = exit_code(["--model", str(model_dir), "--n", "2", "--device", "cpu"], capsys)
    assert code == 0
    assert len(list(out.glob("0*.png"))) == 2


def test_grad_cam_cli_misclassified_and_seeded(deep_results, capsys):
    model_dir = deep_results / "vit_tiny"
    recorded = pd.read_csv(model_dir / "predictions.csv")
    wrong = recorded[recorded["true"] != recorded["pred"]]
    args = ["--model", str(model_dir), "--misclassified", "--n", "3", "--device", "cpu", "--seed", "7"]
    if wrong.empty:
        assert exit_code(args, capsys)[0] == 2
        return
    assert exit_code(args, capsys)[0] == 0
    first = pd.read_csv(model_dir / "gradcam" / "selection.csv")
    assert set(first["path"]) <= set(wrong["path"])
    assert exit_code(args, capsys)[0] == 0
    assert first.equals(pd.read_csv(model_dir / "gradcam" / "selection.csv"))


def test_grad_cam_cli_errors_are_one_line(deep_results, tmp_path, capsys):
    code, err = exit_code(["--model", str(deep_results / "resnet18"), "--method", "rollout"], capsys)
    assert code == 2 and "vision transformer" in err and err.count("\n") == 1
    code, err = exit_code(["--model", str(tmp_path)], capsys)
    assert code == 2 and "best.pt" in err
    code, err = exit_code(["--model", str(deep_results / "vit_tiny"), "--data", str(tmp_path / "nope")], capsys)
    assert code == 2 and "--data" in err


def test_grad_cam_cli_measures_localisation_against_the_recorded_margin(deep_results, processed_dir, tmp_path,
                                                                         capsys):
    import json
    import shutil

    from microplastics.explain import localisation
    from microplastics.deep.checkpoint import load_classifier
    from microplastics.data.dataset import manifest_digest
    from microplastics.predict.model_folder import read_crop

    # The same 48 px crops, described as 24 px particle boxes cut with margin 0.5 (12 px each side).
    data = tmp_path / "processed"
    shutil.copytree(processed_dir, data)
    manifest = pd.read_csv(data / "manifest.csv")
    manifest["maxr"], manifest["maxc"] = manifest["minr"] + 24, manifest["minc"] + 24
    manifest.to_csv(data / "manifest.csv", index=False)
    summary = json.loads((data / "summary.json").read_text())
    (data / "summary.json").write_text(json.dumps({**summary, "settings": {"margin": 0.5},
                                                   "manifest_digest": manifest_digest(data)}))

    model_dir = deep_results / "resnet18"
    with pytest.raises(SystemExit) as info:
        run(gradcam.main, ["--model", str(model_dir), "--data", str(data), "--per-class", "1", "--device", "cpu",
                           "--method", "gradcam", "eigencam"])
    printed = capsys.readouterr()
    assert info.value.code == 0, printed.err
    assert "gradcam: mass inside box" in printed.out and "pointing game" in printed.out
    out = model_dir / "gradcam"
    selection = pd.read_csv(out / "selection.csv")
    table = pd.read_csv(out / localisation.CSV_NAME)
    assert table["method"].tolist() == ["gradcam"] * len(selection) + ["eigencam"] * len(selection)
    assert table["path"].tolist() == selection["path"].tolist() * 2
    assert (table[["box_top", "box_left", "box_bottom", "box_right"]] == [12, 12, 36, 36]).all().all()
    assert table["box_fraction"].tolist() == pytest.approx([0.25] * len(table))
    # the figures are those of the maps the model gives for these crops
    clf = load_classifier(model_dir)
    images = [read_crop(data, p) for p in selection["path"]]
    maps = explain.explain(clf.model, clf.spec, clf.preprocess(images), "gradcam",
                           [clf.classes.index(p) for p in selection["pred"]])
    expected = [localisation.localise(m, localisation.Box(12, 12, 36, 36), (48, 48)) for m in maps]
    first = table[table["method"] == "gradcam"]
    assert first["mass_inside"].tolist() == pytest.approx([e[0] for e in expected], abs=1e-5)
    assert first["peak_inside"].tolist() == [e[1] for e in expected]
    summary = json.loads((out / localisation.JSON_NAME).read_text())
    assert summary["method"] == "gradcam" and summary["n"] == len(selection) and summary["margin"] == 0.5
    assert summary["pointing_hit_rate"] == pytest.approx(first["peak_inside"].mean())
    assert summary["by_method"]["eigencam"]["n"] == len(selection)
