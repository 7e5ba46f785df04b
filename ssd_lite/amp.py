"""Mixed precision on CUDA GPUs (`--amp`): most of the network in 16-bit floats, the loss in 32.

A GPU's tensor cores multiply 16-bit matrices several times faster than 32-bit ones, and 16-bit
activations halve the memory they take. torch.autocast runs each operation in the precision that suits
it (convolutions in 16 bits, reductions and losses in 32). Two 16-bit formats exist:
- bfloat16 (GPUs of compute capability 8.0 and later: A100, H100, RTX 30xx and on): float32's range
  with fewer digits, so gradients neither underflow nor overflow: nothing else to do;
- float16 (older GPUs): more digits but a small range; small gradients would round to zero, so a
  GradScaler multiplies the loss before backward and divides the gradients back before the step.

The training step then reads:

    settings = autocast_settings(device, amp=True)
    scaler = grad_scaler(settings)
    with autocast(settings):
        loc_pred, conf_pred = model(images)
    loc_loss, conf_loss = objective(loc_pred.float(), conf_pred.float(), loc_targets, labels)
    scaler.scale(loc_loss + conf_loss).backward()
    scaler.step(optimiser); scaler.update()

With amp=False every function here is a no-op, so the same lines train in float32.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch


class AmpSettings(NamedTuple):
    """How a training step runs: device_type ("cuda" or "cpu"); dtype, the autocast precision
    (torch.bfloat16 or torch.float16), None for plain float32; grad_scaler, True for float16."""
    device_type: str
    dtype: torch.dtype | None
    grad_scaler: bool


def autocast_settings(device: str | torch.device, amp: bool) -> AmpSettings:
    """bfloat16 autocast where the GPU computes it natively, else float16 with a grad scaler; with
    amp=False, float32. On the CPU, amp=True raises a ValueError explaining why."""
    device = torch.device(device)
    if not amp:
        return AmpSettings(device.type, None, False)
    _check_amp_device(device)
    if bf16_supported(device):
        return AmpSettings("cuda", torch.bfloat16, False)
    return AmpSettings("cuda", torch.float16, True)


def bf16_supported(device: torch.device) -> bool:
    """Whether this CUDA GPU has bfloat16 tensor cores: compute capability 8.0 (Ampere) or later.
    (Older GPUs can emulate bfloat16, slowly: float16 with a grad scaler is the fast choice there.)"""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def autocast(settings: AmpSettings) -> contextlib.AbstractContextManager:
    """The context the forward pass runs in: torch.autocast with `settings`, or nothing for float32."""
    if settings.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(settings.device_type, dtype=settings.dtype)


def grad_scaler(settings: AmpSettings):
    """A GradScaler, enabled for float16 only; disabled, its scale/step/update are plain pass-throughs."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(settings.device_type, enabled=settings.grad_scaler)
    return torch.cuda.amp.GradScaler(enabled=settings.grad_scaler)  # torch 2.2: CUDA only, as here


def _check_amp_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(
            f"--amp (mixed precision) is for CUDA GPUs, but this run trains on {device}. On the CPU "
            "ssd_lite trains in float32 only: torch's CPU autocast (bfloat16) is fast only on processors "
            "with bfloat16 instructions (AVX512-BF16, AMX) and slow on the others, and every CPU figure of "
            "the course was measured in float32. Drop --amp, or train on a GPU with --device cuda.")
    if not torch.cuda.is_available():
        raise ValueError(f"--amp was asked for on {device}, but torch sees no CUDA GPU on this machine: "
                         "drop --amp and --device cuda to train on the CPU in float32")
