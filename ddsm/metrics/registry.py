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
    objective: bool = True  # a search can minimise it (False: higher is better, a verdict metric only)
    min_num: int = 2  # fewest samples per candidate that can rank candidates with it

    def check_num(self, num: int, *, what: str = "num") -> None:
        """Refuse, in one line, fewer than ``min_num`` samples per candidate (``what`` names the setting)."""
        if num < self.min_num:
            raise DDSMError(f"{what} {num} is below the {self.min_num} samples {self.name} needs to rank candidates; "
                            f"use {what} >= {self.min_num}")


_REGISTRY: dict[str, Metric] = {}
_plugins_loaded = False


def register_metric(name: str, evaluator: type | None = None, *, label: str | None = None,
                    build: Builder | None = None, teacher_relative: bool = False, needs_featurenet: bool = False,
                    resolutions: bool = True, default_num: int = 64, objective: bool = True,
                    min_num: int = 2, replace: bool = False) -> Metric:
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
                    needs_featurenet=needs_featurenet, resolutions=resolutions, default_num=default_num,
                    objective=objective, min_num=min_num)
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


def objective_names() -> tuple[str, ...]:
    """The registered metrics a search can minimise."""
    return tuple(n for n in metric_names() if _REGISTRY[n].objective)


def metric_label(name: str) -> str:
    """A metric's label, or its name if it is not registered here (a folder written elsewhere)."""
    return _REGISTRY[name].label if name in _REGISTRY else name


# ---------------------------------------------------------------------------- the built-in metrics
# Each builder imports its evaluator when called: reading the registry (a search config's validation, the CLI's
# help) must not import torchmetrics, the feature net or the samplers.


def _proxy(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.evaluator import ProxyEvaluator

    return ProxyEvaluator(net, sampler, **options)


def _proxy_linear(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.linear_proxy import LinearProxyEvaluator

    return LinearProxyEvaluator(net, sampler, **options)


def _data_of(net, checkpoint, featurenet, name: str):
    from ddsm.checkpoint import training_data

    if featurenet is None:
        raise DDSMError(f"metric {name!r} needs a feature net file (ddsm featurenet --checkpoint ... --out FILE, "
                        "or the shipped 'digits')")
    return training_data(checkpoint if checkpoint is not None else net.source, net.config.image_geometry)


def _fid(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.evaluator import FIDEvaluator
    from ddsm.metrics.fid import FID

    data = _data_of(net, checkpoint, featurenet, "fid")
    return FIDEvaluator(net, sampler, FID.for_data(data, featurenet=featurenet), **options)


def _kid(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.feature_evaluators import KIDEvaluator
    from ddsm.metrics.featurenet import FeatureNet
    from ddsm.metrics.fid import reference_images

    data = _data_of(net, checkpoint, featurenet, "kid")
    return KIDEvaluator(net, sampler, FeatureNet.load(featurenet, data), reference_images(data, "all"), **options)


def _pixel_kid(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.checkpoint import training_data
    from ddsm.metrics.feature_evaluators import PixelKIDEvaluator
    from ddsm.metrics.fid import reference_images

    data = training_data(checkpoint if checkpoint is not None else net.source, net.config.image_geometry)
    return PixelKIDEvaluator(net, sampler, reference_images(data, "all"), **options)


def _teacher_fid(net, sampler, *, featurenet=None, checkpoint=None, **options):
    from ddsm.metrics.feature_evaluators import TeacherFIDEvaluator
    from ddsm.metrics.featurenet import FeatureNet

    data = _data_of(net, checkpoint, featurenet, "teacher_fid")
    return TeacherFIDEvaluator(net, sampler, FeatureNet.load(featurenet, data), **options)


def _verdict_only(name: str) -> Builder:
    def build(*args, **kwargs):
        raise DDSMError(f"metric {name!r} is higher-is-better and reported by verdicts only (ddsm verdict); "
                        f"a search or ddsm evaluate minimises one of: {', '.join(objective_names())}")

    return build


register_metric("proxy", build=_proxy, label="proxy: mean squared distance to full-width samples",
                teacher_relative=True)
register_metric("proxy_linear", build=_proxy_linear, resolutions=False, teacher_relative=True,
                label="linear proxy: predicted mean squared distance to full-width samples")
register_metric("fid", build=_fid, label="FID", needs_featurenet=True, default_num=1000)
register_metric("kid", build=_kid, label="KID (unbiased, against the real data)", needs_featurenet=True,
                default_num=256)
# Pixel KID ranks schedules by what the late steps decide; below 32 samples its paired differences are noise
# (bench_objective.py --parts rank measures Spearman against the verdict at the search's sample size).
register_metric("pixel_kid", build=_pixel_kid, label="KID on pixels (unbiased, against the real data)",
                default_num=256, min_num=32)
register_metric("teacher_fid", build=_teacher_fid, label="FID against full-width samples on other seeds",
                needs_featurenet=True, default_num=256)
for _name, _label in (("precision", "precision (share of samples on the real manifold)"),
                      ("recall", "recall (share of real images on the samples' manifold)"),
                      ("confidence", "classifier confidence (mean top-class probability)")):
    register_metric(_name, build=_verdict_only(_name), label=_label, needs_featurenet=True, objective=False)
