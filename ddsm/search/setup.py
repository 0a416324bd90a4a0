"""One way to prepare a search from a supernet checkpoint: every check once, then the pieces the loop needs.

:func:`prepare_search` is what the ``ddsm search`` command, sweeps, the
quickstart and the experiment scripts call. It refuses, in one line each and
before anything is written: a search config whose widths or sides the
supernet does not serve, more sampling steps than training timesteps, a
budget below the cheapest schedule, a metric that needs a feature net
without one, and a latency objective without a measured cost table. It
returns a :class:`PreparedSearch`: the supernet, the cost model, a picklable
evaluator factory (Ray actors build their own evaluator from it), the
power-spectrum rule's transition seeds for a resolution space, and the
warnings to show once (sides the supernet was not trained at).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddsm.checkpoint import load_supernet, training_data
from ddsm.cost.model import CostModel
from ddsm.cost.table import search_cost_model
from ddsm.device import resolve_device
from ddsm.diffusion.noise import NoiseSchedule
from ddsm.distill import student_sampler
from ddsm.errors import DDSMError
from ddsm.metrics.featurenet import FeatureNet
from ddsm.metrics.registry import Metric, get_metric
from ddsm.plan import StepPlan
from ddsm.samplers import progressive
from ddsm.samplers.base import SamplerConfig, guided_passes, visited
from ddsm.samplers.batched import generate_many
from ddsm.samplers.loop import make_sampler
from ddsm.search.config import SearchConfig
from ddsm.search.loop import run_search
from ddsm.search.problem import WidthProblem
from ddsm.search.staged import StagedEvaluatorFactory
from ddsm.spectrum import fit_power_spectrum, rule_resolutions


@dataclass(frozen=True)
class TeacherReference:
    """The proxy's reference taken from another model: a distilled student's candidates are compared with its
    teacher's full-width samples (the teacher's own sampler, the same seeds), not with the student's full width."""

    checkpoint: str  # the teacher: run folder, .safetensors file or shipped name
    sampler: SamplerConfig  # the teacher's sampler (a joint search's base space's)

    def samples(self, *, num: int, seed: int, batch_size: int, fuse: bool, device: torch.device) -> torch.Tensor:
        """The teacher's full-width samples on seeds ``seed .. seed+num-1``."""
        teacher = load_supernet(self.checkpoint, device=device)
        sampler = make_sampler(NoiseSchedule(teacher.config.diffusion), self.sampler)
        full = StepPlan((max(teacher.config.geometry.widths),) * self.sampler.calls)
        seeds = list(range(seed, seed + num))
        return generate_many(teacher.model, sampler, [full], seeds, batch_size=batch_size, fuse=fuse)[0]


@dataclass(frozen=True)
class SupernetEvaluatorFactory:
    """Builds the evaluator of a search's quality metric on a supernet checkpoint, once per worker."""

    checkpoint: str  # run folder, .safetensors file or shipped name
    metric: Metric  # the registered metric (carried whole, so a worker needs no registration of its own)
    sampler: SamplerConfig  # the search's sampler
    num_samples: int  # samples per candidate (same seeds for all)
    seed: int  # sample i uses seed seed+i
    batch_size: int  # images denoised together
    featurenet: str | None = None  # feature net file, for metrics that need one
    fuse: bool = False  # fused denoiser calls (see ddsm.samplers.batched)
    cache_mb: float = 0.0  # trajectory cache per worker (0: off)
    reference: TeacherReference | None = None  # the proxy's reference from another model (default: this supernet's)

    @property
    def quality(self) -> str:
        """The metric's name: the evaluator column the search reads."""
        return self.metric.name

    def __call__(self, *, device: str = "auto"):
        dev = resolve_device(device)
        # the reference first: the teacher is let go before the supernet is loaded
        reference = None if self.reference is None else self.reference.samples(
            num=self.num_samples, seed=self.seed, batch_size=self.batch_size, fuse=self.fuse, device=dev)
        net = load_supernet(self.checkpoint, device=dev)
        # The search warns once about training-free resolutions (PreparedSearch.warnings), not every worker.
        ev = self.metric.build(net, self.sampler, featurenet=self.featurenet, checkpoint=self.checkpoint,
                               num=self.num_samples, seed=self.seed, batch_size=self.batch_size, fuse=self.fuse,
                               cache_mb=self.cache_mb, warn_resolutions=False)
        if reference is not None:
            ev.proxy.set_teacher(reference, external=True)
        return ev


def evaluator_factory(space: SearchConfig, checkpoint: str | Path, featurenet: str | Path | None = None,
                      reference: TeacherReference | None = None):
    """The factory for ``space``'s quality metric (with its screen, a staged one); a metric that needs a feature
    net fails here without one. With ``reference`` (the proxy only, no screen), the proxy compares with another
    model's full-width samples."""
    ev = space.evaluator
    if reference is not None and (space.objectives.quality != "proxy" or space.screen is not None):
        raise DDSMError(f"a teacher reference needs the proxy as quality and no screen; this space has quality "
                        f"{space.objectives.quality!r}" + (" and a screen" if space.screen is not None else ""))

    def factory(metric: Metric, num: int, seed: int, what: str) -> SupernetEvaluatorFactory:
        if metric.needs_featurenet and featurenet is None:
            raise DDSMError(f"{what} {metric.name!r} needs a feature net file "
                            "(ddsm featurenet --checkpoint ... --out FILE)")
        return SupernetEvaluatorFactory(checkpoint=str(checkpoint), metric=metric, sampler=space.sampler,
                                        num_samples=num, seed=seed, batch_size=ev.batch_size, fuse=ev.fuse,
                                        cache_mb=ev.trajectory_cache_mb,
                                        featurenet=None if featurenet is None else str(featurenet),
                                        reference=reference)  # never with a screen (refused above)

    judge = factory(space.quality_metric, ev.num_samples, ev.seed, "objectives.quality")
    if space.screen is None:
        return judge
    sc = space.screen
    return StagedEvaluatorFactory(screen=factory(get_metric(sc.metric), sc.num_samples, sc.seed, "screen.metric"),
                                  judge=judge)


def search_costs(space: SearchConfig, net, cost_table: str | Path | None = None) -> CostModel:
    """What ``space`` prices a denoiser call with on ``net``: fvcore MACs, or a cost table's MACs or latency."""
    unit = "macs" if space.objectives.cost == "flops" else "latency"
    costs = search_cost_model(net, space.widths, space.resolutions, unit=unit,
                              table=None if cost_table is None else str(cost_table), batch=space.objectives.batch,
                              cache_level=None if space.reuse is None else space.reuse.level)
    return costs.per_step(guided_passes(space.sampler))


def untrained_message(space: SearchConfig, net) -> str | None:
    """One line when the space's sides include some the supernet was not trained at (training-free), else None."""
    msg = progressive.untrained_message(space.resolutions or (), net.trained_resolutions)
    return None if msg is None else f"warning: the {msg}"


def spectrum_transitions(space: SearchConfig, checkpoint: str | Path, net) -> list[tuple[int, ...]]:
    """The power-spectrum rule's transition genes for ``space`` on the checkpoint's training data (or none)."""
    if space.resolutions is None or not space.seeding.spectrum_rule:
        return []
    if net.config.image_geometry is not net.config.geometry:  # the data's spectrum is the pixels', not the latents'
        raise DDSMError("the power-spectrum rule fits the training images' spectrum; a latent model's states are "
                        "latents: set seeding.spectrum_rule false")
    fit = fit_power_spectrum(training_data(checkpoint, net.config.geometry).train)
    noise = NoiseSchedule(net.config.diffusion)
    ts = visited(space.sampler, noise.num_timesteps).tolist()
    sides = rule_resolutions(fit, space.resolutions, ts, noise)
    return [space.resolutions_to_genes(sides)]


@dataclass
class PreparedSearch:
    """Everything a search run needs, checked; :meth:`run` starts (or resumes) it."""

    space: SearchConfig
    checkpoint: str  # as given: workers load the supernet from it
    net: Any  # the Supernet, loaded once here (on the CPU unless a loaded one was passed)
    costs: CostModel
    factory: Any  # a SupernetEvaluatorFactory, or a StagedEvaluatorFactory when the space screens
    transition_seeds: list[tuple[int, ...]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # lines to show the user once

    def run(self, out_dir: str | Path, **options: Any):
        """:func:`ddsm.search.run_search` with this preparation; ``options`` are its runner/resume settings."""
        options = {"evaluator_factory": self.factory, "transition_seeds": self.transition_seeds, **options}
        return run_search(self.space, costs=self.costs, out_dir=out_dir, supernet=self.net.fingerprint,
                          weights=self.net.weights_sha256, **options)


def prepare_search(space: SearchConfig, checkpoint: str | Path, *, featurenet: str | Path | None = None,
                   cost_table: str | Path | None = None, net=None,
                   reference: TeacherReference | None = None) -> PreparedSearch:
    """Check ``space`` against the checkpoint and build costs, evaluator factory and seeds (see the module docstring).

    ``reference``: the proxy compares with another model's full-width samples (a distilled student in a joint
    search, :mod:`ddsm.search.joint`) instead of this supernet's.
    """
    net = net if net is not None else load_supernet(checkpoint, device="cpu")
    space.check_supernet(net.config.geometry.widths, net.config.geometry)
    if space.sampler.steps > net.config.diffusion.num_timesteps:
        raise DDSMError(f"sampler.steps {space.sampler.steps} exceeds the supernet's "
                        f"{net.config.diffusion.num_timesteps} training timesteps")
    student = net.config.student
    if student is not None:
        if student.guidance_scale is not None and space.sampler.guidance_scale is not None:
            raise DDSMError(f"search space sampler.guidance_scale {space.sampler.guidance_scale:g}: this student has "
                            f"guidance scale {student.guidance_scale:g} distilled in and samples unguided; drop "
                            "sampler.guidance_scale")
        own = student_sampler(student, kind=space.sampler.kind, eta=space.sampler.eta,
                              clip_sample=space.sampler.clip_sample, guidance_scale=space.sampler.guidance_scale)
        if space.sampler != own:
            raise DDSMError(f"this supernet is a distilled {student.steps}-step student: its search space needs "
                            f"sampler.steps {student.steps} and sampler.timesteps {list(own.timesteps)}, got steps "
                            f"{space.sampler.steps} and timesteps {space.sampler.timesteps}")
    costs = search_costs(space, net, cost_table)
    WidthProblem(space, costs).check_budget()
    factory = evaluator_factory(space, checkpoint, featurenet, reference)
    if featurenet is not None:
        # read here, not first in a worker: a bad file must fail before the search folder is written (and a file
        # given but not needed is still checked, so a wrong path is never silently ignored)
        needed = space.quality_metric.needs_featurenet or (
            space.screen is not None and get_metric(space.screen.metric).needs_featurenet)
        FeatureNet.load(featurenet, training_data(checkpoint, net.config.image_geometry) if needed else None)
    warning = untrained_message(space, net)
    return PreparedSearch(space=space, checkpoint=str(checkpoint), net=net, costs=costs, factory=factory,
                          transition_seeds=spectrum_transitions(space, checkpoint, net),
                          warnings=[warning] if warning else [])
