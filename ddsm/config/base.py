"""The base of every config: frozen, no unknown keys, no NaN or infinity, and fields written only when set."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer


def omit_unset(data: Any, omit: dict[str, Any]) -> Any:
    """``data`` (a serialized config) without each key of ``omit`` whose value is the one it is left out at."""
    if isinstance(data, dict):
        for key, unset in omit.items():
            if key in data and data[key] == unset:
                del data[key]
    return data


class _Frozen(BaseModel):
    # Every float of every config refuses NaN and +-inf where it enters: an infinite learning rate or weight decay
    # trained to all-NaN tensors and exited 0. No setting gives infinity a meaning.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: fields added after files were written: name -> the value at which it is not written, so every file,
    #: checkpoint and fingerprint made before the field keeps its bytes
    OMIT_WHEN: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        return omit_unset(handler(self), self.OMIT_WHEN)
