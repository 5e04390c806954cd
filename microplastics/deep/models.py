"""Architecture registry: every deep model is a frozen-able backbone plus a small head.

The backbones are torchvision's classifiers, and EfficientNet-Lite0 from timm whose ImageNet
weights install with the requirements (``microplastics.deep.lite0``): the one pretrained network
that needs no download.

``get_spec(name).build(num_classes, weights, image_size)`` returns a ``Classifier`` whose
``backbone`` maps normalised images to an embedding and whose ``head`` maps the embedding
to logits. That split is what lets the engine cache embeddings when the backbone is frozen.

``model.backbone`` is the torchvision (or timm) model itself with its original head replaced by
``nn.Identity``, so its usual attribute names (``features``, ``layer4``, ``encoder``, ``blocks``...) hold.

Built with ``shape_cues=True`` the classifier takes the cue channels that the presets append
(``transforms.with_cue_channels``): ``embed`` gives the backbone the RGB channels and appends the
cues to its embedding, and the head is a ``CueFusionHead``, the architecture's own head plus a small
network of the cues whose logits add to it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import vision_transformer as tv_vit

from microplastics.data.shape_cues import SHAPE_CUE_NAMES
from microplastics.deep import lite0
from microplastics.core.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LITE0 = "efficientnet_lite0"  # timm's tf_efficientnet_lite0, ImageNet weights from an installed package

# Families whose heads or feature maps this registry does not know how to split or explain.
_UNSUPPORTED_PREFIXES = ("swin", "maxvit", "inception", "googlenet")


def load_weights_only(path: str | Path, remedy: str) -> Any:
    """``torch.load(path, weights_only=True)``; a file it refuses or cannot read is one InputError line
    ending in ``remedy`` (never torch's advice to retry with weights_only=False, which runs the file's code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path} is not a checkpoint of this project: it holds objects other than tensors and "
                        f"plain values, and must not be loaded unsafely; {remedy}") from None
    except Exception as err:
        raise InputError(f"{path} is not a readable checkpoint (truncated or damaged: {type(err).__name__}); "
                        f"{remedy}") from None


class Classifier(nn.Module):
    """backbone (images -> embedding) followed by head (embedding -> logits).

    ``cue_channels`` > 0: the input's channels after the first three are shape cues, constant over
    the image; ``embed`` appends their values to the backbone's embedding."""

    def __init__(self, backbone: nn.Module, head: nn.Module, cue_channels: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.cue_channels = int(cue_channels)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the head takes: the backbone's embedding, then the shape cues when the model has them."""
        if not self.cue_channels:
            return self.backbone(x)
        cues = x[:, 3:, 0, 0].float()  # each channel holds one cue's value, everywhere
        return torch.cat([self.backbone(x[:, :3]).float(), cues], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class Embedder(nn.Module):
    """``classifier.embed`` as a module of its own: what the frozen-backbone pass runs in head mode."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.embed(x)


CUE_HIDDEN = 32


class CueFusionHead(nn.Module):
    """The architecture's head on the backbone's embedding, plus an MLP of the shape cues; their logits add.

    The architecture's head stays as it is (VGG's pretrained fc6 and fc7 included), so the cues cannot
    disturb what ImageNet taught it; the cue network learns what the cues add, from zero logits at the start."""

    def __init__(self, head: nn.Module, embed_features: int, cue_features: int, num_classes: int) -> None:
        super().__init__()
        self.head, self.embed_features = head, int(embed_features)
        self.cues = nn.Sequential(nn.Linear(cue_features, CUE_HIDDEN), nn.ReLU(), nn.Linear(CUE_HIDDEN, num_classes))
        nn.init.zeros_(self.cues[-1].weight)
        nn.init.zeros_(self.cues[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z[:, :self.embed_features]) + self.cues(z[:, self.embed_features:].float())


def vit_reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, 1+g*g, C) -> (B, C, g, g): drop the class token, lay patches on their grid."""
    patches = tokens[:, 1:, :]
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
    return patches.reshape(tokens.shape[0], grid, grid, tokens.shape[2]).permute(0, 3, 1, 2)


def _tiny_vit(image_size: int) -> tv_vit.VisionTransformer:
    # Same class and attribute names as vit_b_16, a thousand times smaller: for tests.
    return tv_vit.VisionTransformer(image_size=image_size, patch_size=8, num_layers=2, num_heads=2,
                                    hidden_dim=32, mlp_dim=64, num_classes=1000)


@dataclass(frozen=True)
class ArchSpec:
    """What the engine needs to know about one architecture."""

    name: str
    family: str  # "cnn" or "vit"
    default_image_size: int = 224
    head_kind: str = "replace_last"  # "replace_last": the torchvision head with a new last Linear; "mlp"
    patch_size: int | None = None  # ViTs: image size must be a multiple of it
    factory: Callable[[int], nn.Module] | None = field(default=None, compare=False, repr=False)
    packaged: bool = False  # --weights imagenet reads the file installed by microplastics.deep.lite0's package

    @property
    def reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return vit_reshape_transform if self.family == "vit" else None

    # -- construction -------------------------------------------------------------------------
    def build(self, num_classes: int, weights: str = "none", image_size: int | None = None,
              shape_cues: bool = False) -> Classifier:
        """The full model: backbone with ``weights`` ("imagenet", "none" or a file) and a new head;
        with ``shape_cues`` a ``CueFusionHead`` that also takes the presets' cue channels."""
        image_size = int(image_size or self.default_image_size)
        self.check_image_size(image_size)
        net = self._torchvision_model(image_size)
        if weights != "none":
            state = load_pretrained_state(self, weights, image_size)
            _load_backbone_state(self, net, state)
        head_attr = _head_attribute(net)
        old_head = getattr(net, head_attr)
        setattr(net, head_attr, nn.Identity())
        head = self._new_head(old_head, num_classes)
        if not shape_cues:
            return Classifier(net, head)
        if any(type(m).__name__ == "LayerNorm2d" for m in head.modules()):  # ConvNeXt: a (B, C, 1, 1) embedding
            raise InputError(f"--shape-cues on needs a backbone whose embedding is a vector; {self.name}'s is a "
                             "feature map")
        first = next(m for m in head.modules() if isinstance(m, nn.Linear))
        return Classifier(net, CueFusionHead(head, first.in_features, len(SHAPE_CUE_NAMES), num_classes),
                          cue_channels=len(SHAPE_CUE_NAMES))

    def check_image_size(self, image_size: int) -> None:
        if image_size < 16:
            raise InputError(f"--image-size {image_size} is too small; use at least 32")
        if self.patch_size and image_size % self.patch_size:
            raise InputError(f"--image-size {image_size} is not a multiple of {self.name}'s patch size "
                            f"{self.patch_size}; "
                            f"try {max(self.patch_size, image_size // self.patch_size * self.patch_size)}")

    def _torchvision_model(self, image_size: int) -> nn.Module:
        if self.factory is not None:
            net = self.factory(image_size)
        elif self.family == "vit":
            net = torchvision.models.get_model(self.name, weights=None, image_size=image_size)
        else:
            net = torchvision.models.get_model(self.name, weights=None)
        if self.name.startswith("vgg"):
            # In-place ReLUs overwrite the last convolution's output, which Grad-CAM hooks read.
            for m in net.features:
                if isinstance(m, nn.ReLU):
                    m.inplace = False
        return net

    def _new_head(self, old_head: nn.Module, num_classes: int) -> nn.Module:
        last = ([old_head] if isinstance(old_head, nn.Linear)
                else [m for m in old_head.modules() if isinstance(m, nn.Linear)])
        if not last:
            raise InputError(f"{self.name}: cannot find a linear head to replace")
        in_features = last[0].in_features if self.head_kind == "mlp" else last[-1].in_features
        if self.head_kind == "mlp":
            return nn.Sequential(nn.Linear(in_features, 512), nn.ReLU(), nn.Dropout(0.4), nn.Linear(512, num_classes))
        new_last = nn.Linear(in_features, num_classes)
        if isinstance(old_head, nn.Linear):
            return new_last
        _replace_last_linear(old_head, new_last)  # keeps the pretrained layers before it (VGG's fc6, fc7)
        return old_head

    # -- explanation -----------------------------------------------------------------------------
    def cam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The layer(s) Grad-CAM reads: VGG's last convolution, ResNet's last bottleneck, a ViT's last ln_1,
        timm EfficientNets' last BatchNorm-ReLU6 (after the 1x1 head convolution)."""
        net = model.backbone if isinstance(model, Classifier) else model
        if self.family == "vit":
            return [net.encoder.layers[-1].ln_1]
        if hasattr(net, "conv_head") and hasattr(net, "bn2"):
            return [net.bn2]
        if hasattr(net, "layer4"):
            return [net.layer4[-1]]
        if self.name.startswith("vgg"):
            return [[m for m in net.features if isinstance(m, nn.Conv2d)][-1]]
        if hasattr(net, "features"):
            return [net.features[-1]]
        return [[m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]]


def _head_attribute(net: nn.Module) -> str:
    for name in ("fc", "heads", "classifier"):
        if hasattr(net, name):
            return name
    raise InputError(f"{type(net).__name__}: no fc/heads/classifier attribute to replace")


def _replace_last_linear(module: nn.Module, new: nn.Linear) -> None:
    parent, key = None, None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            key = name
    *path, leaf = key.split(".")
    parent = module
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, new)


# -- pretrained weights -------------------------------------------------------------------------
def _imagenet_weights(spec: ArchSpec) -> Any:
    if spec.factory is not None:
        raise InputError(f"{spec.name} has no ImageNet weights; use --weights none or --weights PATH")
    return torchvision.models.get_model_weights(spec.name).DEFAULT


def expected_weights_file(spec: ArchSpec) -> Path:
    """Where torchvision looks for (and caches) the ImageNet weights of ``spec``; the packaged file for Lite0."""
    if spec.packaged:
        return _packaged_file()
    url = _imagenet_weights(spec).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def describe_weights(spec: ArchSpec, weights: str) -> str:
    """One string for config.json and metrics.json: where the starting weights came from."""
    if weights == "none":
        return "none"
    if weights == "imagenet" and spec.packaged:
        path = _packaged_file()
        return f"imagenet: {lite0.WEIGHTS_PACKAGE} {lite0.package_version()} ({path.name}, sha256 {file_sha256(path)})"
    if weights == "imagenet":
        w = _imagenet_weights(spec)
        return f"imagenet: torchvision {type(w).__name__}.{w.name} ({os.path.basename(urlparse(w.url).path)})"
    path = weights_file(weights)
    return f"file: {path.resolve()} (sha256 {file_sha256(path)[:16]})"


def _packaged_file() -> Path:
    try:
        return lite0.weights_path()
    except FileNotFoundError as err:
        raise InputError(str(err)) from None


def weights_file(weights: str) -> Path:
    """``--weights PATH`` as an existing file, or one InputError line."""
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"--weights {weights}: no such file; use imagenet, none or the path of a state_dict")
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pretrained_state(spec: ArchSpec, weights: str, image_size: int) -> dict[str, torch.Tensor]:
    """State dict of the torchvision model (original head) from ImageNet or a file."""
    if weights == "imagenet" and spec.packaged:
        # read from disk, no network ever; a damaged file is one line like any other weights file
        state = lite0.to_timm(load_weights_only(_packaged_file(), f"reinstall {lite0.WEIGHTS_PACKAGE}"))
    elif weights == "imagenet":
        w = _imagenet_weights(spec)
        target = expected_weights_file(spec)
        try:
            if not target.is_file():
                print(f"downloading {w.url} to {target}", flush=True)
            # torch.hub writes its own "Downloading" line to stderr; errors must stay one line there.
            with contextlib.redirect_stderr(io.StringIO()):
                state = w.get_state_dict(progress=False, check_hash=False)
        except Exception as err:  # URLError, socket errors, HTTP errors: all mean "no file"
            raise InputError(
                f"could not download ImageNet weights for {spec.name} ({type(err).__name__}: {err}); "
                f"put the file {target.name} from {w.url} at {target} "
                f"(set TORCH_HOME to choose another cache folder: $TORCH_HOME/hub/checkpoints/{target.name}), "
                f"or use --weights PATH (a state_dict file) or --weights none") from None
    else:
        state = load_weights_only(weights_file(weights), "pass a state_dict file or a best.pt as --weights")
        if isinstance(state, dict) and "state_dict" in state and "arch" in state:
            # One of our own checkpoints: take its backbone, the head depends on the classes.
            state = {k[len("backbone."):]: v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
            return {"__backbone_only__": torch.tensor(1), **state}
    if spec.family == "vit" and "encoder.pos_embedding" in state:
        pos = state["encoder.pos_embedding"]
        grid = image_size // spec.patch_size
        if pos.shape[1] != grid * grid + 1:
            state = tv_vit.interpolate_embeddings(image_size, spec.patch_size, state)
    return state


def _load_backbone_state(spec: ArchSpec, net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    backbone_only = state.pop("__backbone_only__", None) is not None
    try:
        if backbone_only:
            head = _head_attribute(net)
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith(head + ".")]
            if missing or unexpected:
                raise RuntimeError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        else:
            net.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"the weights do not fit {spec.name}: {str(err).splitlines()[0][:300]}") from None


# -- registry -------------------------------------------------------------------------------------
def _make_spec(name: str) -> ArchSpec:
    if name == LITE0:
        return ArchSpec(name, "cnn", default_image_size=224, factory=_lite0_network, packaged=True)
    if name == "vit_tiny":
        return ArchSpec(name, "vit", default_image_size=32, patch_size=8, factory=_tiny_vit)
    if name.startswith("vit_"):
        return ArchSpec(name, "vit", default_image_size=224, patch_size=int(name.rsplit("_", 1)[1]))
    mlp = name.startswith(("resnet", "wide_resnet", "resnext"))
    return ArchSpec(name, "cnn", default_image_size=224, head_kind="mlp" if mlp else "replace_last")


def _lite0_network(image_size: int) -> nn.Module:
    return lite0.build_network()  # convolutional: any image size


def known_archs() -> list[str]:
    names = [n for n in torchvision.models.list_models(module=torchvision.models)
             if not n.startswith(_UNSUPPORTED_PREFIXES)]
    return sorted(names + ["vit_tiny", LITE0])


def get_spec(arch: str) -> ArchSpec:
    """The spec of ``arch``; an unknown name is a InputError listing the known ones."""
    known = known_archs()
    if arch not in known:
        raise InputError(f"unknown --arch {arch!r}; known: {', '.join(known)}")
    return _make_spec(arch)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
