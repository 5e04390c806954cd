"""Numeric precision of the backbone passes: ``--precision auto|fp32|bf16`` and the autocast it means.

A frozen backbone's forward pass (the embedding pass, prediction) needs no gradients and no
fp32 master weights, so on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX on x86, the
BF16 extension on Arm) ``torch.autocast("cpu", bfloat16)`` runs its convolutions and matrix
products in bf16 at about twice the speed, while the outputs stay within about 1 % of fp32.
On CUDA the precision is the mixed precision the engine always used (bf16 where the GPU has
it, else fp16 with a gradient scaler). Training on a CPU stays fp32 unless bf16 is asked for.

A resolved precision is an autocast dtype: ``None`` means full fp32.
torch is imported inside the functions, so a command line that offers ``--precision`` but
runs a classical model (prediction.py) does not load it.
"""
from __future__ import annotations

import platform
from contextlib import nullcontext
from typing import TYPE_CHECKING, ContextManager

from microplastics.core.errors import InputError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")  # the choices of --precision


def cpu_supports_bf16() -> bool:
    """True where the CPU does bf16 arithmetic natively (emulated bf16 is slower than fp32)."""
    import torch

    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    try:  # Arm: oneDNN reports bf16 only where the BF16 extension is present
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype_for(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """CUDA mixed precision: bf16 where the GPU has it (no scaler needed), else fp16; None off CUDA."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_precision(choice: str, device: torch.device, *, amp: bool = True, frozen: bool = True
                      ) -> torch.dtype | None:
    """The autocast dtype of ``--precision choice`` on ``device`` (None: fp32).

    ``frozen``: the pass runs a frozen network without gradients (embedding, prediction), where
    ``auto`` picks bf16 on a CPU that has it; for training on a CPU ``auto`` stays fp32.
    ``amp``: CUDA's mixed precision is allowed (``--no-amp`` turns it off).
    """
    import torch

    if choice not in PRECISIONS:
        raise InputError(f"--precision {choice}: choose one of {', '.join(PRECISIONS)}")
    if choice == "fp32":
        return None
    if device.type == "cuda":
        if choice == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise InputError("--precision bf16: this GPU has no bf16; use --precision auto (fp16 AMP) or fp32")
            return torch.bfloat16
        return amp_dtype_for(device, amp)
    if choice == "bf16":
        if device.type != "cpu":
            raise InputError(f"--precision bf16 runs on a CPU or a CUDA GPU, not on {device.type}; "
                            "use --precision fp32")
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and frozen and cpu_supports_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """``None`` -> "fp32", ``torch.bfloat16`` -> "bf16", ``torch.float16`` -> "fp16": for config and metrics."""
    import torch

    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast_for(device: torch.device, amp_dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``amp_dtype`` on CUDA, or to bf16 on a CPU; a no-op context for None (fp32)."""
    import torch

    if amp_dtype is None:
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype)
    if device.type == "cpu" and amp_dtype == torch.bfloat16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def memory_format_for(family: str) -> torch.memory_format:
    """channels_last for CNNs (oneDNN's and cuDNN's fast layout for convolutions); ViTs keep theirs."""
    import torch

    return torch.channels_last if family == "cnn" else torch.contiguous_format
