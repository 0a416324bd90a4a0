"""The base of every config: frozen, no unknown keys, no NaN or infinity."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    # Every float of every config refuses NaN and +-inf where it enters: an infinite learning rate or weight decay
    # trained to all-NaN tensors and exited 0. No setting gives infinity a meaning.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
