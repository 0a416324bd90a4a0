"""Sample quality: FID in a feature space learnt on the data, and a cheap teacher-relative proxy.

The search only sees :class:`~ddsm.metrics.evaluator.Evaluator`: a batch of
candidate schedules in, one row of metrics per candidate out. Every metric a
config or the CLI can name is registered in :mod:`ddsm.metrics.registry`.
Names load on first use, so reading the registry does not import torchmetrics.
"""

from __future__ import annotations

import importlib

_HOME = {
    **dict.fromkeys(["Evaluator", "FIDEvaluator", "ProxyEvaluator", "SamplingEvaluator"], "evaluator"),
    **dict.fromkeys(["FeatureNet", "train_featurenet"], "featurenet"),
    "FID": "fid", "LinearProxyEvaluator": "linear_proxy", "TeacherProxy": "proxy",
    **dict.fromkeys(["Metric", "get_metric", "metric_names", "register_metric"], "registry"),
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ddsm.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ddsm.metrics.{_HOME[name]}"), name)
