"""The metric registry: every quality metric a search, a verdict or a plot can name, in one place.

A :class:`Metric` says how to build its evaluator on a supernet, how to
label it, and whether it is *teacher-relative* (a distance to the full-width
samples on the same seeds, so exactly 0 at full width). Search configs
(``objectives.quality``), ``ddsm evaluate --metric`` and plot labels all read
this registry, so a new metric is one :func:`register_metric` call::

    from ddsm.metrics import SamplingEvaluator, register_metric

    class Brightness(SamplingEvaluator):
        metrics = ("brightness",)            # lower is better

        def score(self, samples):
            return {"brightness": float(samples.mean().abs())}

    register_metric("brightness", Brightness, label="|mean pixel value|")
    # a search config may now say  objectives: {quality: brightness}

Packages can register metrics for the ``ddsm`` command too, through the
``ddsm.metrics`` entry-point group (each entry point names a function that
calls :func:`register_metric`); they load the first time the registry is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ddsm.errors import DDSMError

#: builds an evaluator: (net, sampler config, featurenet file or None, checkpoint, **evaluator options)
Builder = Callable[..., Any]


@dataclass(frozen=True)
class Metric:
    """One registered quality metric (lower is better)."""

    name: str  # the evaluator column it is read from, and what configs name it by
    build: Builder  # build(net, sampler, *, featurenet, checkpoint, **options) -> Evaluator
    label: str  # what plots and tables call it
    teacher_relative: bool = False  # a distance to the full-width samples: 0 at full width by construction
    needs_featurenet: bool = False  # evaluating it needs a feature net file (FID)
    resolutions: bool = True  # it can score resolution schedules
    default_num: int = 64  # samples per schedule when the user names none


_REGISTRY: dict[str, Metric] = {}
_plugins_loaded = False


def register_metric(name: str, evaluator: type | None = None, *, label: str | None = None,
                    build: Builder | None = None, teacher_relative: bool = False, needs_featurenet: bool = False,
                    resolutions: bool = True, default_num: int = 64, replace: bool = False) -> Metric:
    """Register metric ``name``: an evaluator class taking ``(net, sampler, **options)``, or a ``build`` function.

    The evaluator must return a column called ``name``. Registering a taken
    name is an error unless ``replace``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise DDSMError(f"metric name {name!r} must be an identifier (letters, digits, underscores)")
    if (evaluator is None) == (build is None):
        raise DDSMError(f"register_metric({name!r}): give exactly one of an evaluator class or build=")
    if name in _REGISTRY and not replace:
        raise DDSMError(f"metric {name!r} is already registered; pass replace=True to redefine it")
    if build is None:
        build = _ClassBuilder(evaluator)
    metric = Metric(name=name, build=build, label=label or name, teacher_relative=teacher_relative,
                    needs_featurenet=needs_featurenet, resolutions=resolutions, default_num=default_num)
    _REGISTRY[name] = metric
    return metric


@dataclass(frozen=True)
class _ClassBuilder:
    # A picklable builder (Ray actors build their own evaluator from it).
    evaluator: type

    def __call__(self, net, sampler, *, featurenet=None, checkpoint=None, **options):
        return self.evaluator(net, sampler, **options)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="ddsm.metrics"):
        ep.load()()


def metric_names() -> tuple[str, ...]:
    """Every registered metric name, in registration order."""
    _load_plugins()
    return tuple(_REGISTRY)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``, or a one-line DDSMError listing the registered ones."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise DDSMError(f"metric {name!r} is not registered; registered: {', '.join(_REGISTRY)} "
                        "(add one with ddsm.metrics.register_metric)") from None


def metric_label(name: str) -> str:
    """A metric's label, or its name if it is not registered here (a folder written elsewhere)."""
    return _REGISTRY[name].label if name in _REGISTRY else name


# ---------------------------------------------------------------------------- the built-in metrics


def _proxy(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.evaluator import ProxyEvaluator

    return ProxyEvaluator(net, sampler, **options)


def _proxy_linear(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.linear_proxy import LinearProxyEvaluator

    return LinearProxyEvaluator(net, sampler, **options)


def _fid(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.checkpoint import data_config_for
    from ddsm.data import load_data
    from ddsm.metrics.evaluator import FIDEvaluator
    from ddsm.metrics.fid import FID

    if featurenet is None:
        raise DDSMError("metric 'fid' needs a feature net file (ddsm featurenet --checkpoint ... --out FILE)")
    unet = net.config.unet
    data = load_data(data_config_for(checkpoint if checkpoint is not None else net.source), unet.image_size,
                     unet.in_channels)
    return FIDEvaluator(net, sampler, FID.for_data(data, featurenet=featurenet), **options)


register_metric("proxy", build=_proxy, label="proxy: mean squared distance to full-width samples",
                teacher_relative=True)
register_metric("proxy_linear", build=_proxy_linear, resolutions=False, teacher_relative=True,
                label="linear proxy: predicted mean squared distance to full-width samples")
register_metric("fid", build=_fid, label="FID", needs_featurenet=True, default_num=1000)
