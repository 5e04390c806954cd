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


# -- shape cues in the deep heads ------------------------------------------------------------------
def line_crop(shape: tuple[int, int] = (40, 120), light: int = 200, ink: int = 60) -> np.ndarray:
    """A straight fibre along a long thin crop: stretched to a square, it would fill it."""
    import cv2

    img = np.full((*shape, 3), light, np.uint8)
    cv2.line(img, (8, shape[0] // 2), (shape[1] - 9, shape[0] // 2 - 4), (ink, ink, ink), 3)
    return img


def disc_crop(size: int = 60, light: int = 200, ink: int = 60) -> np.ndarray:
    import cv2

    img = np.full((size, size, 3), light, np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 4, (ink, ink, ink), -1)
    return img


def test_shape_cue_channels_are_measured_on_the_crop_as_photographed():
    import cv2

    from microplastics.deep.transforms import SHAPE_CUE_CHANNELS, cue_vector

    fibre = line_crop()
    x = EvalPreset(32, shape_cues=True)(fibre)
    assert x.shape == (3 + SHAPE_CUE_CHANNELS, 32, 32)
    assert torch.equal(x[:3], EvalPreset(32)(fibre)), "the image channels are the plain preset's"
    cues = cue_vector(fibre)
    assert torch.allclose(x[3:], torch.from_numpy(cues)[:, None, None].expand(-1, 32, 32))
    # measured before the square resize: the fibre stays elongated and slender, the disc does not
    disc = cue_vector(disc_crop())
    assert cues[0] > 0.8 > 0.2 > disc[0]
    assert cues[1] > disc[1] + 1.5
    # the same particle at twice the magnification, under dimmer light and another ink: nearly the same cues
    other = cue_vector(cv2.resize(line_crop(light=120, ink=30), None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR))
    assert np.allclose(other[:3], cues[:3], atol=0.1)
    # the training preset appends them too, constant over the image whatever it flips or crops
    aug = TrainPreset(32, augment="strong", shape_cues=True)(fibre, seed=3)
    assert aug.shape == x.shape and float(aug[3:].std(dim=(1, 2)).max()) == 0.0


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny", "efficientnet_lite0"])
def test_shape_cue_model_appends_the_cues_and_starts_as_its_own_head(arch):
    from microplastics.explain import cam as explain

    torch.manual_seed(0)
    spec = get_spec(arch)
    model = spec.build(3, "none", 32, shape_cues=True).eval()
    x = torch.randn(2, 3, 32, 32)
    cues = torch.tensor([[0.9, 2.0, 0.1, 0.7], [0.1, 0.2, 0.0, 0.0]])
    with_cues = torch.cat([x, cues[:, :, None, None].expand(-1, -1, 32, 32)], dim=1)
    with torch.no_grad():
        emb = model.embed(with_cues)
        assert torch.allclose(emb[:, :-4], model.backbone(x)) and torch.equal(emb[:, -4:], cues)
        # the cue network's last layer starts at zero: the logits are the architecture's head's alone
        assert torch.allclose(model(with_cues), model.head.head(model.backbone(x)))
        nn.init.normal_(model.head.cues[-1].weight)
        other = with_cues.clone()
        other[:, 3:] = 0.0
        assert not torch.allclose(model(with_cues), model(other)), "the logits depend on the cues"
    maps = explain.explain(model, spec, with_cues, "gradcam")  # Grad-CAM reads the backbone, as without cues
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_shape_cues_refuse_a_backbone_whose_embedding_is_a_feature_map():
    with torch.device("meta"), pytest.raises(UserError, match="shape-cues"):
        get_spec("convnext_tiny").build(3, "none", 32, shape_cues=True)
