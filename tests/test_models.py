"""Architecture registry, pretrained-weight loading (offline) and the image presets."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from microplastics.deep import models
from microplastics.core.cli import UserError
from microplastics.deep.models import get_spec
from microplastics.deep.transforms import EvalPreset, TrainPreset


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def meta_build(arch: str, n: int = 4, size: int | None = None) -> nn.Module:
    # Structure only: the meta device skips allocating and initialising hundreds of MB.
    with torch.device("meta"):
        return get_spec(arch).build(n, "none", size)


def test_unknown_arch_lists_known_ones():
    with pytest.raises(UserError) as err:
        get_spec("resnet5O")
    msg = str(err.value)
    assert "resnet5O" in msg and "resnet50" in msg and "vit_b_16" in msg and "\n" not in msg


def test_study_heads_and_cam_layers():
    vgg = meta_build("vgg16")
    vgg_spec = get_spec("vgg16")
    (target,) = vgg_spec.cam_target_layers(vgg)
    assert target is vgg.backbone.features[28] and isinstance(target, nn.Conv2d)  # last conv, not the pool
    assert [type(m) for m in vgg.head if isinstance(m, nn.Linear)] == [nn.Linear] * 3  # fc6, fc7, new
    assert vgg.head[0].in_features == 25088 and vgg.head[-1].out_features == 4
    assert vgg_spec.reshape_transform is None and vgg_spec.family == "cnn"

    res = meta_build("resnet50", n=6)
    assert [type(m) for m in res.head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (res.head[0].in_features, res.head[0].out_features, res.head[2].p,
            res.head[3].out_features) == (2048, 512, 0.4, 6)
    assert get_spec("resnet50").cam_target_layers(res) == [res.backbone.layer4[-1]]

    vit = meta_build("vit_b_16", size=64)
    assert [type(m) for m in vit.head] == [nn.Linear] and vit.head[0].in_features == 768  # one new linear layer
    assert vit.backbone.encoder.pos_embedding.shape == (1, 17, 768)  # 4x4 patches + class token
    assert get_spec("vit_b_16").cam_target_layers(vit) == [vit.backbone.encoder.layers[-1].ln_1]


def test_tiny_vit_matches_vit_b_16_structure_and_reshape():
    spec = get_spec("vit_tiny")
    model = spec.build(3, "none", 32).eval()
    assert type(model.backbone) is torchvision.models.VisionTransformer
    tokens = {}
    (layer,) = spec.cam_target_layers(model)
    layer.register_forward_hook(lambda m, i, o: tokens.setdefault("t", o))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    grid = spec.reshape_transform(tokens["t"])
    assert grid.shape == (2, 32, 4, 4)  # 32 px / patch 8, class token dropped
    assert torch.equal(grid[0, :, 0, 1], tokens["t"][0, 2])  # patch (0, 1) is token 2
    with pytest.raises(UserError, match="patch size"):
        spec.build(3, "none", 36)


def test_other_torchvision_classifiers_through_the_registry():
    for arch in ("resnet18", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_small"):
        model = meta_build(arch, n=5)
        assert model.head(torch.zeros(1, *_embed_shape(model), device="meta")).shape == (1, 5), arch
        assert get_spec(arch).cam_target_layers(model)


def _embed_shape(model: nn.Module) -> tuple[int, ...]:
    first = next(m for m in model.head.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)) or
                 type(m).__name__ == "LayerNorm2d")
    n = first.in_features if isinstance(first, nn.Linear) else first.normalized_shape[0]
    return (n, 1, 1) if type(first).__name__ == "LayerNorm2d" else (n,)


def test_weights_file_keeps_pretrained_head_layers(tmp_path):
    # VGG's recipe on a small net: the layers before the last Linear keep their pretrained values.
    tv = torchvision.models.mobilenet_v3_small()
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    model = get_spec("mobilenet_v3_small").build(4, str(tmp_path / "w.pth"), 64)
    assert torch.equal(model.head[0].weight, tv.classifier[0].weight)
    assert torch.equal(model.backbone.features[0][0].weight, tv.features[0][0].weight)
    assert model.head[-1].out_features == 4
    with pytest.raises(UserError, match="do not fit"):
        get_spec("resnet18").build(4, str(tmp_path / "w.pth"), 64)


def test_vit_weights_file_is_interpolated_to_another_size(tmp_path):
    small = get_spec("vit_tiny").build(2, "none", 32)
    torch.save(small.backbone.state_dict() | {"heads.head.weight": torch.zeros(1000, 32),
                                              "heads.head.bias": torch.zeros(1000)}, tmp_path / "v.pth")
    big = get_spec("vit_tiny").build(2, str(tmp_path / "v.pth"), 64)
    assert big.backbone.encoder.pos_embedding.shape == (1, 65, 32)
    assert torch.equal(big.backbone.encoder.layers[0].mlp[0].weight, small.backbone.encoder.layers[0].mlp[0].weight)


def test_a_checkpoint_of_this_project_as_weights_gives_its_backbone(tmp_path):
    old = get_spec("resnet18").build(6, "none", 32)
    torch.save({"format": "microplastics-classifier/1", "arch": "resnet18", "state_dict": old.state_dict()},
               tmp_path / "best.pt")
    new = get_spec("resnet18").build(3, str(tmp_path / "best.pt"), 32)
    assert torch.equal(new.backbone.layer4[1].conv2.weight, old.backbone.layer4[1].conv2.weight)
    assert new.head[-1].out_features == 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """TORCH_HOME in tmp, and every download sent to a closed port on 127.0.0.1 (fails at once)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = torch.hub.download_url_to_file
    port = _closed_port()
    calls = []

    def refused(url, dst, *args, **kwargs):
        calls.append(url)
        return real(f"http://127.0.0.1:{port}/{os.path.basename(url)}", dst, *args, **kwargs)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    return tmp_path / "torch" / "hub" / "checkpoints", calls


def test_offline_imagenet_says_which_file_and_where(offline_hub):
    folder, calls = offline_hub
    with pytest.raises(UserError) as err:
        get_spec("resnet18").build(4, "imagenet", 32)
    msg = str(err.value)
    assert calls, "the download was attempted"
    assert "resnet18-f37072fd.pth" in msg and str(folder / "resnet18-f37072fd.pth") in msg
    assert "TORCH_HOME" in msg and "--weights PATH" in msg and "--weights none" in msg and "\n" not in msg


def test_weights_in_torch_home_are_used_without_network(offline_hub):
    folder, calls = offline_hub
    tv = torchvision.models.resnet18()
    folder.mkdir(parents=True)
    torch.save(tv.state_dict(), folder / "resnet18-f37072fd.pth")
    assert models.expected_weights_file(get_spec("resnet18")) == folder / "resnet18-f37072fd.pth"
    model = get_spec("resnet18").build(4, "imagenet", 32)
    assert not calls
    assert torch.equal(model.backbone.conv1.weight, tv.conv1.weight)
    assert "ResNet18_Weights.IMAGENET1K_V1" in models.describe_weights(get_spec("resnet18"), "imagenet")


def test_presets_share_normalisation_and_train_seed_is_reproducible():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ev = EvalPreset(32)(img)
    assert ev.shape == (3, 32, 32) and ev.dtype == torch.float32
    flat = np.full((8, 8, 3), 255, np.uint8)
    white = EvalPreset(16)(flat)[:, 0, 0]
    assert torch.allclose(white, (1 - torch.tensor(models.IMAGENET_MEAN)) / torch.tensor(models.IMAGENET_STD))
    train = TrainPreset(32)
    a, b, c = train(img, seed=5), train(img, seed=5), train(img, seed=6)
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


def test_offline_imagenet_run_ends_with_one_line_and_status_2(offline_hub, processed_dir, tmp_path, capsys):
    from microplastics.core.cli import run
    from microplastics.deep.stage import main_for

    with pytest.raises(SystemExit) as exit_info:
        run(main_for("resnet50"), ["--data", str(processed_dir), "--results", str(tmp_path), "--arch", "resnet18",
                                   "--image-size", "32", "--workers", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: could not download")
    assert "resnet18-f37072fd.pth" in err and not (tmp_path / "resnet18" / "best.pt").exists()
