"""Device choice: CUDA when present, the CPU otherwise, or what the user names."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ddsm.errors import DDSMError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``'auto'`` picks CUDA if available; an explicit device must exist."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DDSMError(f"device {device!r} is not a torch device; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DDSMError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise DDSMError(f"device {device!r} is not supported; valid: auto, cpu, cuda, cuda:N")
    return dev


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for cuDNN convolutions and CUDA matmuls on or off inside the block; the previous settings after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
