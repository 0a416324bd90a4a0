"""What the search needs from a supernet: an evaluator factory and a cost per width.

The factory is a small frozen dataclass (picklable, so Ray actors can build
their own evaluator once); the costs come from fvcore MAC counts or from a
measured CostTable when the search prices latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ddsm.errors import DDSMError
from ddsm.samplers import progressive
from ddsm.samplers.base import SamplerConfig
from ddsm.search.space import SearchSpace


@dataclass(frozen=True)
class SupernetEvaluatorFactory:
    """Builds the proxy, linear-proxy or FID evaluator of ``space`` on a supernet checkpoint, once per worker."""

    checkpoint: str  # run folder, .safetensors file or shipped name
    quality: str  # 'proxy' or 'fid'
    sampler: SamplerConfig  # the space's sampler
    num_samples: int  # samples per candidate (same seeds for all)
    seed: int  # sample i uses seed seed+i
    batch_size: int  # images denoised together
    featurenet: str | None = None  # feature net file, needed for 'fid'
    fuse: bool = False  # fused denoiser calls (see ddsm.samplers.batched)
    cache_mb: float = 0.0  # trajectory cache per worker (0: off)

    def __call__(self, *, device: str = "auto"):
        from ddsm.checkpoint import load_supernet
        from ddsm.data import load_data
        from ddsm.device import resolve_device
        from ddsm.metrics.evaluator import FIDEvaluator, ProxyEvaluator, data_config_for
        from ddsm.metrics.fid import FID
        from ddsm.metrics.linear_proxy import LinearProxyEvaluator

        net = load_supernet(self.checkpoint, device=resolve_device(device))
        # The search warns once about training-free resolutions (untrained_message), not every worker.
        common = dict(num=self.num_samples, seed=self.seed, batch_size=self.batch_size, fuse=self.fuse,
                      cache_mb=self.cache_mb, warn_resolutions=False)
        if self.quality == "proxy":
            return ProxyEvaluator(net, self.sampler, **common)
        if self.quality == "proxy_linear":
            return LinearProxyEvaluator(net, self.sampler, **common)
        unet = net.config.unet
        data = load_data(data_config_for(self.checkpoint), unet.image_size, unet.in_channels)
        return FIDEvaluator(net, self.sampler, FID.for_data(data, featurenet=self.featurenet), **common)


def evaluator_factory(space: SearchSpace, checkpoint: str, featurenet: str | None = None) -> SupernetEvaluatorFactory:
    """The factory for ``space``'s quality objective; FID needs a feature net file."""
    if space.objectives.quality == "fid" and featurenet is None:
        raise DDSMError("objectives.quality 'fid' needs a feature net file (ddsm featurenet --checkpoint ... --out FILE)")
    ev = space.evaluator
    return SupernetEvaluatorFactory(checkpoint=str(checkpoint), quality=space.objectives.quality, sampler=space.sampler,
                                    num_samples=ev.num_samples, seed=ev.seed, batch_size=ev.batch_size,
                                    fuse=ev.fuse, cache_mb=ev.trajectory_cache_mb,
                                    featurenet=None if featurenet is None else str(featurenet))


def cost_per_width(space: SearchSpace, net, cost_table: str | Path | None = None) -> dict:
    """Cost of one denoiser call per width (per (width, side) in a resolution space).

    fvcore MACs, or the table's latency (or MACs) when a table is given; a
    table for a resolution space must hold every side (``ddsm cost --resolutions``).
    """
    from ddsm.cost import CostTable, count_macs

    metric = "macs" if space.objectives.cost == "flops" else "latency"
    keys = [(w, None) for w in space.widths] if space.resolutions is None else \
        [(w, r) for w in space.widths for r in space.resolutions]
    if cost_table is not None:
        table = CostTable.load(cost_table, net.config)
        costs = {(w, r): table.cost(w, r, metric=metric) for w, r in keys}
    elif metric == "latency":
        raise DDSMError("objectives.cost 'latency' needs a measured cost table: ddsm cost --checkpoint ... --out FILE, "
                        "then --cost FILE")
    else:
        costs = {(w, r): float(count_macs(net.model, w, r).total) for w, r in keys}
    return {(w if r is None else (w, r)): c for (w, r), c in costs.items()}


def untrained_message(space: SearchSpace, net) -> str | None:
    """One line when the space's sides include some the supernet was not trained at (training-free), else None."""
    msg = progressive.untrained_message(space.resolutions or (), net.trained_resolutions)
    return None if msg is None else f"warning: the {msg}"


def spectrum_transitions(space: SearchSpace, checkpoint: str | Path, net) -> list[tuple[int, ...]]:
    """The power-spectrum rule's transition genes for ``space`` on the checkpoint's training data (or none)."""
    if space.resolutions is None or not space.seeding.spectrum_rule:
        return []
    from ddsm.data import load_data
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.metrics.evaluator import data_config_for
    from ddsm.samplers.base import spaced_timesteps
    from ddsm.spectrum import fit_power_spectrum, rule_resolutions

    unet = net.config.unet
    data = load_data(data_config_for(checkpoint), unet.image_size, unet.in_channels)
    fit = fit_power_spectrum(data.train)
    noise = NoiseSchedule(net.config.diffusion)
    ts = spaced_timesteps(noise.num_timesteps, space.sampler.steps, space.sampler.timestep_spacing).tolist()
    sides = rule_resolutions(fit, space.resolutions, ts, noise)
    return [space.resolutions_to_genes(sides)]
