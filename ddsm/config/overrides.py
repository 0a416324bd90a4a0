"""Run configs from a file plus dotted overrides (``train.iters=...``): what the CLI's flags become."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddsm.config.reader import load_yaml
from ddsm.config.schema import RunConfig, validate


def apply_overrides(data: dict, **overrides: Any) -> dict:
    """``data`` with each dotted ``key=value`` set (``None`` values skipped); nested sections are created."""
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


def load_run_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a RunConfig from YAML (or defaults) and apply dotted overrides like ``train.iters``."""
    data = apply_overrides(load_yaml(path) if path is not None else {}, **overrides)
    return validate(RunConfig, data, source=str(path) if path else "config")
