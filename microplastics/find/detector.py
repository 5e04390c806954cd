"""A trained particle finder: torchvision's FCOS on the ImageNet-pretrained EfficientNet-Lite0.

FCOS is anchor-free and one-stage (no region proposals, no RoI pooling), so it trains fastest
of torchvision's detectors on a CPU; with a narrow feature pyramid (``fpn_channels``) and a
short head (``head_convs``) its cost is mostly the backbone's. The backbone is timm's
tf_efficientnet_lite0 with the weights the requirements install (``microplastics.deep.lite0``),
read at strides 8, 16 and 32. The detector is class-agnostic: it says where particles are; the
trained classifier of ``prediction.py --find --model`` says what they are, as for the classical
finder.

Photos are resized so their longer side is ``image_side`` px (mp100's photos are 640 px: no
resize). Training samples are random ``crop`` x ``crop`` windows of the resized photo, flipped
and turned by quarter turns; prediction runs on the whole resized photo and maps the boxes back
to photo pixels in the project's convention ``(minr, minc, maxr, maxc)``, max exclusive.

The checkpoint carries its own config (``DetectorConfig``), the score threshold chosen on the
validation photos, and the state_dict; it is saved atomically and read with ``weights_only``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork

from microplastics.core.errors import InputError
from microplastics.deep import checkpoint, lite0
from microplastics.deep.models import IMAGENET_MEAN, IMAGENET_STD
from microplastics.find.finder import FinderSettings, Found, background_sigma, colour_difference, field_of_view

FORMAT = "microplastics-detector/1"
FEATURE_LEVELS = (2, 3, 4)  # timm feature indices of strides 8, 16, 32
FEATURE_STRIDES = (8, 16, 32)
Box = tuple[int, int, int, int]


@dataclass
class DetectorConfig:
    """Everything that makes a detector; saved in its checkpoint."""

    image_side: int = 640        # photos resized so the longer side is this many px
    crop: int = 320              # training window side, px of the resized photo
    fpn_channels: int = 64
    head_convs: int = 2
    pretrained: bool = True      # start from the packaged ImageNet weights
    frozen_blocks: int = 2       # the stem and this many backbone stages are not trained
    epochs: int = 8
    batch_size: int = 4
    crops_per_photo: int = 2     # windows drawn from each photo per epoch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    bf16: bool = False           # bf16 autocast on the CPU
    score_threshold: float = 0.3  # chosen on the validation photos after training
    nms_iou: float = 0.5
    max_detections: int = 300


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 at strides 8/16/32 under a feature pyramid: the backbone FCOS asks for."""

    def __init__(self, fpn_channels: int, pretrained: bool, frozen_blocks: int = 0) -> None:
        super().__init__()
        import timm  # a second to import; only the detector needs it here

        self.body = timm.create_model(lite0.TIMM_NAME, pretrained=False, features_only=True,
                                      out_indices=FEATURE_LEVELS)
        if pretrained:
            state = lite0.to_timm(checkpoint.load_weights_only(lite0.weights_path(),
                                                               f"reinstall {lite0.WEIGHTS_PACKAGE}"))
            missing, _ = self.body.load_state_dict(state, strict=False)  # the classifier head is not used
            if missing:
                raise InputError(f"the packaged Lite0 weights miss {missing[:3]}; reinstall {lite0.WEIGHTS_PACKAGE}")
        self.fpn = FeaturePyramidNetwork(list(self.body.feature_info.channels()), fpn_channels)
        self.out_channels = fpn_channels
        # the stem and the first blocks work at full resolution, where a backward pass costs most
        # and ImageNet's edges and colours already serve; they are kept as they are
        self.frozen = [self.body.conv_stem, self.body.bn1, *self.body.blocks[:frozen_blocks]] if frozen_blocks else []
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> LiteFeatures:
        super().train(mode)
        # batches of a few crops give poor batch statistics: the backbone's batch norms keep ImageNet's
        for module in self.body.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class KeepSize(GeneralizedRCNNTransform):
    """Normalise and batch, never resize: photos are sized once, by ``prepare_image``."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target


def build_detector(config: DetectorConfig) -> FCOS:
    """The FCOS detector of ``config`` (one class: particle)."""
    backbone = LiteFeatures(config.fpn_channels, config.pretrained, config.frozen_blocks)
    anchors = AnchorGenerator(tuple((s,) for s in FEATURE_STRIDES), ((1.0,),) * len(FEATURE_STRIDES))
    head = FCOSHead(config.fpn_channels, 1, 1, num_convs=config.head_convs)  # shorter than FCOS's 4 convolutions
    model = FCOS(backbone, num_classes=1, anchor_generator=anchors, head=head, score_thresh=0.05,
                 nms_thresh=config.nms_iou, detections_per_img=config.max_detections, topk_candidates=1000)
    model.transform = KeepSize(config.image_side, config.image_side, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return model


# ----------------------------------------------------------------------------- data

def prepare_image(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The RGB photo resized so its longer side is ``side``, and that factor."""
    scale = side / max(image.shape[:2])
    if abs(scale - 1) < 1e-6:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), scale


def to_xyxy(boxes: Sequence[Box], scale: float = 1.0) -> np.ndarray:
    """Project boxes (minr, minc, maxr, maxc) as torchvision's (x1, y1, x2, y2), times ``scale``."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return b[:, [1, 0, 3, 2]] * scale


def from_xyxy(xyxy: np.ndarray, scale: float, shape: tuple[int, int]) -> list[Box]:
    """torchvision boxes on the resized photo back to project boxes in photo pixels (max exclusive)."""
    out = []
    for x1, y1, x2, y2 in np.asarray(xyxy, dtype=float).reshape(-1, 4) / scale:
        minr, minc = max(0, math.floor(y1)), max(0, math.floor(x1))
        maxr, maxc = min(shape[0], math.ceil(y2)), min(shape[1], math.ceil(x2))
        if maxr > minr and maxc > minc:
            out.append((minr, minc, maxr, maxc))
    return out


def image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)  # a writable copy


def box_area(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)


def random_window(image: np.ndarray, xyxy: np.ndarray, crop: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop`` window (padded with the photo's median where the photo is smaller), flipped
    and turned by a random quarter turn, with the boxes that keep at least half their area in it."""
    h, w = image.shape[:2]
    if h < crop or w < crop:
        pad = np.full((max(h, crop), max(w, crop), 3), np.median(image.reshape(-1, 3), axis=0), dtype=image.dtype)
        pad[:h, :w] = image
        image, h, w = pad, pad.shape[0], pad.shape[1]
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    window = image[top:top + crop, left:left + crop]
    b = xyxy - np.array([left, top, left, top], dtype=np.float32)
    clipped = np.clip(b, 0, crop)
    kept = box_area(clipped)
    b = clipped[(kept >= 0.5 * box_area(b)) & (kept > 0)]
    if rng.random() < 0.5:  # left-right
        window, b = window[:, ::-1], np.stack([crop - b[:, 2], b[:, 1], crop - b[:, 0], b[:, 3]], 1)
    if rng.random() < 0.5:  # up-down
        window, b = window[::-1], np.stack([b[:, 0], crop - b[:, 3], b[:, 2], crop - b[:, 1]], 1)
    if rng.random() < 0.5:  # transpose; with the flips this gives every quarter turn
        window, b = window.transpose(1, 0, 2), b[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(window), b.reshape(-1, 4).astype(np.float32)


def training_batches(photos: Sequence[tuple[np.ndarray, np.ndarray]], config: DetectorConfig,
                     rng: np.random.Generator) -> Iterable[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """One epoch: ``crops_per_photo`` random windows of every (resized photo, xyxy boxes), shuffled."""
    order = np.repeat(np.arange(len(photos)), config.crops_per_photo)
    rng.shuffle(order)
    for start in range(0, len(order), config.batch_size):
        images, targets = [], []
        for i in order[start:start + config.batch_size]:
            window, boxes = random_window(*photos[i], config.crop, rng)
            images.append(image_tensor(window))
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.zeros(len(boxes), dtype=torch.int64)})
        yield images, targets


# ----------------------------------------------------------------------------- training

def train_one_epoch(model: FCOS, optimizer: torch.optim.Optimizer, scheduler: Any, batches: Iterable,
                    bf16: bool = False, progress: Any = None) -> float:
    """Mean training loss (classification + box + centre-ness) of one pass over ``batches``."""
    model.train()
    total, n = 0.0, 0
    for images, targets in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        total, n = total + float(loss.detach()), n + 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss):.3f}")
    return total / max(n, 1)


def make_optimizer(model: FCOS, config: DetectorConfig, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with a short warm-up and a cosine decay over ``steps``."""
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, min(50, steps // 10))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ----------------------------------------------------------------------------- prediction

@torch.no_grad()
def predict_boxes(model: FCOS, image: np.ndarray, config: DetectorConfig,
                  score_threshold: float | None = None) -> tuple[list[Box], list[float]]:
    """Boxes (minr, minc, maxr, maxc; max exclusive; photo pixels) and scores of the particles in an RGB photo."""
    model.eval()
    resized, scale = prepare_image(image, config.image_side)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
        out = model([image_tensor(resized)])[0]
    threshold = config.score_threshold if score_threshold is None else score_threshold
    keep = out["scores"].float() >= threshold
    xyxy, scores = out["boxes"][keep].float().numpy(), out["scores"][keep].float().numpy()
    boxes, kept_scores = [], []
    for box, score in zip(xyxy, scores):
        b = from_xyxy(box[None], scale, image.shape[:2])
        if b:
            boxes.append(b[0])
            kept_scores.append(float(score))
    return boxes, kept_scores


def find_particles(image: np.ndarray, model: FCOS, config: DetectorConfig,
                   settings: FinderSettings | None = None, um_per_px: float | None = None
                   ) -> tuple[np.ndarray, list[Found]]:
    """The detector's counterpart of ``finder.find_particles``: a label image and one ``Found`` per box.

    The boxes are the detector's; the pixels of each particle (for its measures and outline) are
    those of its box that stand out from the background by the classical finder's growth
    threshold, the largest connected piece of them."""
    settings = settings or FinderSettings()
    boxes, _ = predict_boxes(model, image, config)
    lit = field_of_view(image, settings.rim_fraction)
    difference = colour_difference(image, lit, background_sigma(image.shape, settings, um_per_px))
    return box_labels(boxes, difference >= settings.low)


def box_labels(boxes: Sequence[Box], standing_out: np.ndarray) -> tuple[np.ndarray, list[Found]]:
    """Label image from boxes (best first: a pixel goes to the first box that claims it) and a mask of
    the pixels that stand out; a box where none stands out gets the ellipse it encloses."""
    labels = np.zeros(standing_out.shape, dtype=np.int32)
    found = []
    for minr, minc, maxr, maxc in boxes:
        free = labels[minr:maxr, minc:maxc] == 0
        pieces, n = ndi.label(standing_out[minr:maxr, minc:maxc] & free)
        if n:
            part = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
        else:
            rows, cols = np.ogrid[:maxr - minr, :maxc - minc]
            ry, rx = (maxr - minr) / 2, (maxc - minc) / 2
            part = free & (((rows + 0.5 - ry) / ry) ** 2 + ((cols + 0.5 - rx) / rx) ** 2 <= 1)
        if not part.any():  # wholly covered by better boxes
            continue
        label = len(found) + 1
        labels[minr:maxr, minc:maxc][part] = label
        found.append(Found(label, minr, minc, maxr, maxc, int(part.sum())))
    return labels, found


# ----------------------------------------------------------------------------- checkpoint

def save_detector(model: FCOS, config: DetectorConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """The checkpoint (format, config, state_dict and ``extra``: history, split, timing) written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save({"format": FORMAT, "config": asdict(config), "state_dict": model.state_dict(),
                     **(extra or {})}, path)


def load_detector(path: str | Path) -> tuple[FCOS, DetectorConfig]:
    """The detector of a checkpoint written by ``save_detector``; anything else is one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--detector {path}: no such file; train one with find-detector.py")
    ckpt = checkpoint.load_weights_only(path, "train the detector again (find-detector.py)")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"--detector {path} is not a particle detector of this project (format {FORMAT})")
    known = {f.name for f in fields(DetectorConfig)}
    config = DetectorConfig(**{k: v for k, v in ckpt.get("config", {}).items() if k in known})
    config.pretrained = False  # the state_dict holds the trained weights
    model = build_detector(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise InputError(f"--detector {path}: the weights do not fit its config ({str(err).splitlines()[0][:200]})"
                        ) from None
    return model.eval(), config
