"""`--device auto|cpu|cuda[:i]` and the speed settings that depend on it (AMP, channels_last).

Everything device-specific lives here; the trainers pass their config values through unchanged.

Mixed precision (`train.amp` / `run.amp`): `auto` (or `true`, the old spelling) = autocast on CUDA
(bf16 where the GPU supports it, else fp16 with a gradient scaler) and none on the CPU; `bf16` or
`fp16` = autocast with that dtype on any device (bf16 on the CPU runs the GPU's code path on a
machine without one); `off` (or `false`) = fp32 everywhere.
Memory layout (`train.channels_last` / `run.channels_last`): `auto` = channels_last on CUDA only;
`true` / `false` = on / off on any device.
"""
from __future__ import annotations

import contextlib

import torch

from detect.errors import UserError

AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """auto -> cuda:<local_rank> when CUDA exists, else cpu. Asking for CUDA without it is an error."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        device = torch.device(spec if ":" in spec else f"cuda:{local_rank}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UserError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:<index>")


def amp_mode(amp: bool | str) -> str:
    """The config value (bool for the old spelling, or one of AMP_MODES) as one of AMP_MODES."""
    if amp is True:
        return "auto"
    if amp is False or amp is None:
        return "off"
    mode = str(amp).strip().lower()
    if mode not in AMP_MODES:
        raise UserError(f"amp={amp!r}: expected one of {', '.join(AMP_MODES)} (or true = auto, false = off)")
    return mode


def amp_dtype(device: torch.device, amp: bool | str = "auto") -> torch.dtype | None:
    """The autocast dtype for this device and setting; None = no autocast (fp32).

    auto: bf16 on a GPU that supports it, else fp16; none on the CPU. bf16 / fp16: that dtype on any device."""
    mode = amp_mode(amp)
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, amp: bool | str = "auto"):
    """A context that runs its forward pass in the mixed precision `amp` asks for (or nothing)."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: bool | str = "auto") -> torch.amp.GradScaler:
    """A scaler that is active only for fp16 autocast (bf16 has fp32's exponent range and needs none)."""
    active = amp_dtype(device, amp) == torch.float16
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=active)


def uses_channels_last(device: torch.device, channels_last: bool | str = "auto") -> bool:
    """auto: channels_last on CUDA (where convolutions gain from it); true / false: on any device."""
    if isinstance(channels_last, bool):
        return channels_last
    if str(channels_last).strip().lower() != "auto":
        raise UserError(f"channels_last={channels_last!r}: expected auto, true or false")
    return device.type == "cuda"


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool | str = "auto") -> torch.nn.Module:
    """Move to device; 4-D weights to channels_last when `uses_channels_last` says so (convolutions
    then also produce channels_last outputs from ordinary contiguous inputs)."""
    model = model.to(device)
    if uses_channels_last(device, channels_last):
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_images(images: torch.Tensor, device: torch.device, channels_last: bool | str = "auto") -> torch.Tensor:
    """A batch [N,3,H,W] onto the device (non-blocking), in channels_last when the model is."""
    images = images.to(device, non_blocking=True)
    if uses_channels_last(device, channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    return images
