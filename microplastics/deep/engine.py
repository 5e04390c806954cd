"""Training and evaluation loops, early stopping, history, devices and DistributedDataParallel.

The loops know nothing about images or embeddings: they run ``module`` over whatever the
loader yields, so one engine trains a head on cached embeddings or a whole network on crops.
"""
from __future__ import annotations

import datetime
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from microplastics.core import fileio
from microplastics.core.errors import InputError
from microplastics.core.seeds import item_seed
from microplastics.deep.precision import autocast_for

HISTORY_NAME = "history.csv"
CURVES_NAME = "curves.png"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


# -- processes and devices ---------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup_distributed(device_choice: str) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_choice in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # Long timeout: in head mode the other ranks wait while rank 0 fills the embedding cache.
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return DistInfo(rank, world, local)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(choice: str, info: DistInfo = DistInfo()) -> torch.device:
    """auto: cuda, then mps, then cpu. Asking for a device that is absent is a InputError."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available; use --device auto or cpu")
        return torch.device("cuda", info.local_rank)
    if choice == "mps" and not has_mps:
        raise InputError("--device mps: no Apple GPU is available; use --device auto or cpu")
    return torch.device(choice)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    """RNG states as plain lists and tensors, so last.pt loads with weights_only=True."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [int(x) for x in np_state[1]],
             "numpy_pos": int(np_state[2]), "python": list(py_state[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- loops ----------------------------------------------------------------------------------------
def train_one_epoch(module: nn.Module, loader: Iterable, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scaler: torch.amp.GradScaler | None = None,
                    amp_dtype: torch.dtype | None = None, desc: str = "train", progress: bool = True,
                    info: DistInfo = DistInfo()) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) over all processes' samples."""
    module.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_for(device, amp_dtype):
            logits = module(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = y.shape[0]
        totals += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
        bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}")
    if info.enabled:
        dist.all_reduce(totals)
    return float(totals[0] / max(totals[2], 1)), float(totals[1] / max(totals[2], 1))


@torch.no_grad()
def evaluate(module: nn.Module, loader: Iterable, criterion: nn.Module, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, desc: str = "eval", progress: bool = True
             ) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, logits in loader order) of ``module`` on ``loader``."""
    module.eval()
    all_logits, loss_sum, correct, count = [], 0.0, 0, 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast_for(device, amp_dtype):
            logits = module(x).float()
        loss_sum += criterion(logits, y).item() * y.shape[0]
        correct += int((logits.argmax(1) == y).sum())
        count += y.shape[0]
        all_logits.append(logits.cpu())
    logits = torch.cat(all_logits) if all_logits else torch.zeros(0)
    return loss_sum / max(count, 1), correct / max(count, 1), logits


# -- early stopping and history -------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` epochs."""

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def step(self, val_loss: float, epoch: int) -> bool:
        """Record one epoch; True when it is the best so far."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    with fileio.atomic_path(out_dir / HISTORY_NAME) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def plot_curves(out_dir: Path, history: list[dict[str, float]], title: str, best_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch, train against val; a dashed line at ``best_epoch``, the one kept."""
    from microplastics.core.plots import plt, save_figure

    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), layout="constrained")
    for ax, key in zip(axes, ("loss", "acc")):
        ax.plot(frame["epoch"], frame[f"train_{key}"], marker="o", label="train")
        ax.plot(frame["epoch"], frame[f"val_{key}"], marker="o", label="val")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="black", linestyle="--", linewidth=1,
                       label=f"chosen: epoch {best_epoch} (lowest val loss)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
    # one legend under both plots, where it hides no curve
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle(title)
    save_figure(fig, out_dir / CURVES_NAME)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


@dataclass
class FitState:
    """Everything the loop changes, so --resume can put it back."""

    epoch: int = 0  # epochs completed
    history: list | None = None
    train_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.history = self.history or []


def fit(*, module: nn.Module, make_train_loader: Callable[[int], Iterable], val_loader: Iterable,
        criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, stopper: EarlyStopping,
        state: FitState, epochs: int, device: torch.device, seed: int, scaler: torch.amp.GradScaler | None,
        amp_dtype: torch.dtype | None, on_epoch_end: Callable[[FitState, bool], None],
        val_criterion: nn.Module | None = None, info: DistInfo = DistInfo(), progress: bool = True) -> FitState:
    """The epoch loop: train, validate, step the LR scheduler, early-stop, hand each epoch to ``on_epoch_end``.

    ``val_criterion`` (default: ``criterion``) scores validation; class weights belong to training only.
    """
    val_criterion = val_criterion or criterion
    while state.epoch < epochs and not stopper.should_stop:
        epoch = state.epoch + 1
        # Reseed per epoch: dropout and shuffles then depend only on (seed, epoch, rank),
        # so a resumed run draws exactly what the unbroken run drew.
        torch.manual_seed(item_seed(seed, epoch, info.rank))
        start = time.perf_counter()
        train_loss, train_acc = train_one_epoch(module, make_train_loader(epoch), criterion, optimizer, device,
                                                scaler=scaler, amp_dtype=amp_dtype, desc=f"epoch {epoch} train",
                                                progress=progress, info=info)
        val_loss, val_acc, _ = evaluate(unwrap(module), val_loader, val_criterion, device, amp_dtype=amp_dtype,
                                        desc=f"epoch {epoch} val", progress=progress)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        improved = stopper.step(val_loss, epoch)
        seconds = time.perf_counter() - start
        state.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                              "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": seconds})
        state.epoch, state.train_seconds = epoch, state.train_seconds + seconds
        if info.is_main:
            print(f"epoch {epoch}/{epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.2e}  {seconds:.1f}s"
                  f"{'  * best val loss so far (best.pt)' if improved else ''}", flush=True)
        on_epoch_end(state, improved)
    if info.is_main and stopper.should_stop:
        print(f"early stop: val loss has not improved for {stopper.patience} epochs "
              f"(best {stopper.best_loss:.4f} at epoch {stopper.best_epoch})", flush=True)
    return state
