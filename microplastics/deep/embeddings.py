"""Frozen-backbone embeddings, computed once per view and cached on disk.

When the backbone is frozen its output for a given input never changes, so running it in
every epoch (and on oversampled copies, as the original study did) wastes nearly all the
time. Instead: one clean view of val and test, the clean view plus K augmented views of
train, each through the backbone once; the head then trains on these for all epochs.
The cache file is keyed on everything that changes its content.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from microplastics.deep import checkpoint
from microplastics.data.dataset import settings_digest
from microplastics.core.images import read_rgb
from microplastics.core.seeds import item_seed
from microplastics.deep.precision import autocast_for
from microplastics.deep.transforms import EvalPreset, TrainPreset

CACHE_VERSION = 1  # bump when the presets or the layout of the cache change


class CropDataset(Dataset):
    """Crops of one split as (tensor, label index); ``seed`` makes augmented views reproducible."""

    def __init__(self, root: str | Path, paths: Sequence[str], labels: Sequence[int],
                 preset: EvalPreset | TrainPreset, seed: int | None = None, stream: int = 0) -> None:
        self.root, self.paths = Path(root), list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.preset, self.seed, self.stream = preset, seed, stream

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = read_rgb(self.root / self.paths[i])
        seed = None if self.seed is None else item_seed(self.seed, self.stream, i)
        return self.preset(image, seed), int(self.labels[i])


@torch.no_grad()
def compute_embeddings(backbone: nn.Module, dataset: Dataset, *, batch_size: int, device: torch.device,
                       workers: int = 0, amp_dtype: torch.dtype | None = None, desc: str = "embed",
                       progress: bool = True, memory_format: torch.memory_format = torch.contiguous_format
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """Run ``backbone`` once over ``dataset``; returns float32 embeddings (N, ...) and timings.

    ``amp_dtype`` is the autocast dtype (None: fp32; see ``precision``); ``memory_format`` the
    layout of the input batches, channels_last for a CNN whose weights were converted to it.

    The timings separate the backbone's forward time from the wall time, which shows
    whether data loading keeps up.
    """
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    chunks, forward = [], 0.0
    start = time.perf_counter()
    for images, _ in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        t0 = time.perf_counter()
        with autocast_for(device, amp_dtype):
            out = backbone(images)
        out = out.float().cpu()  # the copy to host waits for the device: forward time is real
        forward += time.perf_counter() - t0
        chunks.append(out)
    wall = time.perf_counter() - start
    emb = torch.cat(chunks) if chunks else torch.zeros(0)
    return emb, {"images": len(dataset), "seconds": wall, "forward_seconds": forward}


def cache_key(**parts: Any) -> str:
    return settings_digest({"version": CACHE_VERSION, **parts})


def cached_embeddings(path: Path, compute: Callable[[], dict[str, torch.Tensor]], *, dtype: torch.dtype,
                      is_main: bool = True, barrier: Callable[[], None] = lambda: None,
                      expected: dict[str, tuple[int, ...]] | None = None
                      ) -> tuple[dict[str, torch.Tensor], bool]:
    """Load ``path`` if it holds a valid cache, else compute (on the main process only) and save it atomically.

    ``expected`` gives the leading dimensions each tensor must have (views, crops). Returns the
    tensors (as float32) and whether they came from the cache. Under DDP the other processes
    wait at ``barrier`` and then read the file the main process wrote.
    """
    tensors, hit = None, path.is_file()
    if hit and is_main:
        tensors, problem = read_cache(path, expected or {})
        if problem:
            print(f"warning: embedding cache {path} {problem}; it is not used, rebuilding it", file=sys.stderr)
            hit = False
    if not hit and is_main:
        # Round-trip through the stored dtype so a fresh run and a cached run see the same numbers.
        tensors = {k: v.to(dtype) for k, v in compute().items()}
        checkpoint.save(tensors, path)
    barrier()
    if not is_main:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in tensors.items()}, hit


def read_cache(path: Path, expected: dict[str, tuple[int, ...]]) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The tensors of a cache file, or None and why it cannot be used (unreadable, unsafe, wrong content)."""
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return None, "holds objects other than tensors (it was not written by this project)"
    except Exception as err:
        return None, f"is unreadable (truncated or damaged: {type(err).__name__})"
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        return None, "does not hold a dict of tensors"
    for key, lead in expected.items():
        shape = tuple(tensors[key].shape) if key in tensors else None
        if shape is None or shape[:len(lead)] != tuple(lead) or not torch.isfinite(tensors[key]).all():
            return None, f"has {key} embeddings of shape {shape}, expected {tuple(lead)} + (features), all finite"
    return tensors, None
