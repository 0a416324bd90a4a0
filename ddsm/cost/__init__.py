"""What a denoiser call costs: MACs (:mod:`.macs`), latency (:mod:`.latency`), the measured table
(:mod:`.table`) and the cost model every search and report prices schedules with (:mod:`.model`).

Names load on first use, so the search core can price schedules without importing fvcore.
"""

from __future__ import annotations

import importlib

_HOME = {
    **dict.fromkeys(["LatencyStats", "device_key", "measure_latencies", "measure_latency"], "latency"),
    **dict.fromkeys(["DENSE_KEYS", "ELEMENTWISE_OPS", "HANDLED_OPS", "IGNORED_OPS", "UNIT", "ZERO_COST_OPS",
                     "FlopCountAnalysis", "MacCount", "check_resolution", "count_macs", "torch_flops"], "macs"),
    "CostModel": "model",
    **dict.fromkeys(["COST_TABLE_VERSION", "METRICS", "CostEntry", "CostTable"], "table"),
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ddsm.cost' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ddsm.cost.{_HOME[name]}"), name)
