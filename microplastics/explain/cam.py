"""Heat maps of what a trained network looks at: Grad-CAM family maps and ViT attention rollout.

``explain(model, spec, batch, method)`` returns one (H, W) map in [0, 1] per input image, H and W
the input tensor's size. The CAM methods run through the grad-cam package (pytorch-grad-cam) on
the target layers the architecture registry names (``spec.cam_target_layers``), with the ViT
tokens laid back on their patch grid (``spec.reshape_transform``). ``aug_smooth=True`` averages
each CAM map over the crop's eight flips and quarter turns, every view's map turned back onto the
crop first (pytorch-grad-cam's augmentation smoothing with those views, through ttach): a particle
has no up or down, and the mean cancels where the coarse grid of the last layer falls on the
particle. ``rollout`` multiplies the
attention matrices of all ViT blocks, recorded by :func:`record_attention`, a context manager
that leaves the model exactly as it found it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import ttach
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

CAM_METHODS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}
ROLLOUT = "rollout"
METHODS = (*CAM_METHODS, ROLLOUT)


def dihedral_views() -> ttach.Compose:
    """The eight symmetries of the square (mirror, then 0-270 degree turns), the views of ``aug_smooth``."""
    return ttach.Compose([ttach.HorizontalFlip(), ttach.Rotate90(angles=[0, 90, 180, 270])])


class ExplainSpec(Protocol):
    """What an architecture must tell the explainer (``models.ArchSpec`` fits)."""

    name: str
    family: str

    @property
    def reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None: ...

    def cam_target_layers(self, model: nn.Module) -> list[nn.Module]: ...


def methods_for(family: str) -> list[str]:
    """The methods that apply to an architecture family ("cnn" or "vit")."""
    return list(METHODS) if family == "vit" else list(CAM_METHODS)


def check_method(method: str, spec: ExplainSpec) -> None:
    """A ValueError naming the valid choices when ``method`` does not apply to ``spec``."""
    allowed = methods_for(spec.family)
    if method not in allowed:
        why = " (attention rollout needs a vision transformer)" if method == ROLLOUT else ""
        raise ValueError(f"method {method!r} does not apply to {spec.name}{why}; choose from {', '.join(allowed)}")


def explain(model: nn.Module, spec: ExplainSpec, batch: torch.Tensor, method: str = "gradcam",
            targets: Sequence[int] | None = None, aug_smooth: bool = False) -> np.ndarray:
    """Heat maps (B, H, W), float32 in [0, 1], for a normalised batch (B, 3, H, W).

    ``targets`` are the class indices to explain, one per image (default: each image's
    predicted class). Rollout does not depend on a class and ignores them, and ``aug_smooth``
    (the CAM methods' mean over the eight flips and quarter turns of a square input) too.
    """
    check_method(method, spec)
    if targets is not None and len(targets) != len(batch):
        raise ValueError(f"{len(targets)} targets for {len(batch)} images")
    model.eval()
    if method == ROLLOUT:
        return attention_rollout(model, batch)
    return cam_maps(model, spec, batch, method, targets, aug_smooth)


def cam_maps(model: nn.Module, spec: ExplainSpec, batch: torch.Tensor, method: str,
             targets: Sequence[int] | None = None, aug_smooth: bool = False) -> np.ndarray:
    """Grad-CAM, Grad-CAM++ or EigenCAM through pytorch-grad-cam; its hooks are gone on return."""
    if aug_smooth and batch.shape[-1] != batch.shape[-2]:
        raise ValueError(f"aug_smooth needs square inputs, not {tuple(batch.shape[-2:])}")
    cam_class = CAM_METHODS[method]
    layers = spec.cam_target_layers(model)
    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    # The input asks for a gradient, so the target layer's output has one even when every
    # weight is frozen (a head-mode checkpoint may be loaded with requires_grad off).
    batch = batch.detach().clone().requires_grad_(True)
    with torch.enable_grad(), cam_class(model=model, target_layers=layers,
                                        reshape_transform=spec.reshape_transform) as cam:
        if aug_smooth:
            cam.tta_transforms = dihedral_views()  # the CAM classes take no views argument of their own
        maps = cam(input_tensor=batch, targets=cam_targets, aug_smooth=aug_smooth)
    model.zero_grad(set_to_none=True)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


# ----------------------------------------------------------------------------- attention rollout

def attention_modules(model: nn.Module) -> list[nn.MultiheadAttention]:
    """The self-attention of every encoder block, in order (torchvision's ViT layout)."""
    found = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.MultiheadAttention: rollout needs a vision transformer")
    return found


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect each block's attention weights (B, heads, T, T) while the context is open.

    torchvision's EncoderBlock calls ``self_attention(x, x, x, need_weights=False)``, so a
    forward pre-hook rewrites that call to ask for per-head weights and a forward hook keeps
    them. Both hooks are removed on exit, also when the body raises.
    """
    recorded: list[torch.Tensor] = []
    handles = []

    def ask_for_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def keep_weights(module: nn.Module, args: tuple, output: tuple) -> None:
        if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
            recorded.append(output[1].detach())

    try:
        for module in attention_modules(model):
            handles.append(module.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
            handles.append(module.register_forward_hook(keep_weights))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020) of per-block weights (B, heads, T, T).

    Each block's heads are averaged, the residual connection is added as the identity and
    the rows renormalised; the blocks are then multiplied through, first block rightmost.
    Returns the joint attention (B, T, T).
    """
    if not attentions:
        raise ValueError("no attention weights were recorded")
    joint = None
    for weights in attentions:
        a = weights.float().mean(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint


@torch.no_grad()
def attention_rollout(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """Rollout maps (B, H, W) in [0, 1]: how much the class token draws on each patch."""
    with record_attention(model) as recorded:
        model(batch)
    joint = rollout(recorded)
    patches = joint[:, 0, 1:]  # the class token's row, without itself
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
    maps = patches.reshape(-1, 1, grid, grid)
    maps = F.interpolate(maps, size=tuple(batch.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return normalise(maps.cpu().numpy())


def normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (min to max); a constant map becomes all zeros."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


# ----------------------------------------------------------------------------- drawing

def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An RGB uint8 ``image`` with a jet-coloured ``heat`` map in [0, 1] blended over it.

    ``heat`` is resized to the image, so a map of the model's input size fits any crop.
    """
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    height, width = image.shape[:2]
    heat = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=1 - alpha)
