"""The embedded default end to end: digits supernet -> cost table -> feature net -> per-width quality.

Each stage writes its artifacts into the output folder and is skipped when
they already exist, so an interrupted quickstart picks up where it stopped.
Later stages (search, export, plots) join this pipeline as they land.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import click
import pandas as pd

from ddsm.io import write_atomic


def _stage(n: int, total: int, title: str, artifact: Path, work: Callable[[], None]) -> None:
    t0 = time.perf_counter()
    if artifact.exists():
        click.echo(f"[{n}/{total}] {title}: already done -> {artifact}")
        return
    click.echo(f"[{n}/{total}] {title} ...")
    work()
    click.echo(f"[{n}/{total}] {title}: {time.perf_counter() - t0:.0f} s -> {artifact}")


def run_quickstart(out: str | Path, *, checkpoint: str | Path = "digits", train: bool = False,
                   device: str | None = None, num: int = 256, steps: int = 50, progress: bool = True) -> dict[str, Path]:
    """Run every stage into ``out`` from ``checkpoint`` (or a retrained digits supernet); returns the artifacts."""
    from ddsm.checkpoint import load_supernet
    from ddsm.config import RunConfig, validate
    from ddsm.cost import CostTable
    from ddsm.data import load_digits
    from ddsm.device import resolve_device
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.images import save_grid
    from ddsm.metrics.featurenet import FeatureNet, train_featurenet
    from ddsm.metrics.fid import FID
    from ddsm.samplers import SamplerConfig, generate, make_sampler
    from ddsm.schedule import Schedule
    from ddsm.train import Trainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    total = 4
    art = {"supernet": out / "supernet" / "supernet.safetensors", "cost": out / "cost.json",
           "featurenet": out / "featurenet.safetensors", "widths": out / "widths.csv", "grids": out / "samples"}

    if train:
        # The shipped supernet carries its own recipe, so retraining needs no file from the repository.
        cfg = validate(RunConfig, load_supernet("digits").header["run"], source="shipped digits recipe")

        def _train() -> None:
            resume = (out / "supernet" / "checkpoint.safetensors").exists()
            Trainer(cfg, out / "supernet", device=str(dev), progress=progress).run(resume=resume)

        click.echo(f"training the supernet from scratch ({cfg.train.iters} steps; about an hour on 2 CPU cores)")
        _stage(1, total, "train supernet", art["supernet"], _train)
        ref: str | Path = out / "supernet"
    else:
        ref = checkpoint
        click.echo(f"[1/4] supernet: {checkpoint} (pass --train to retrain the digits reference from scratch)")
    net = load_supernet(ref, device=dev)
    data = load_digits(size=net.config.unet.image_size, channels=net.config.unet.in_channels)

    _stage(2, total, "cost table (MACs, latency per width)", art["cost"],
           lambda: CostTable.measure(net.model, net.config, dev, batch_size=64, repeats=10, warmup=2,
                                     progress=progress).save(art["cost"]))
    table = CostTable.load(art["cost"], net.config, dev)

    _stage(3, total, "feature net for FID", art["featurenet"],
           lambda: train_featurenet(data, seed=0, progress=progress).save(art["featurenet"]))
    fid = FID.for_data(data, featurenet=FeatureNet.load(art["featurenet"], data))

    def _widths() -> None:
        scfg = SamplerConfig(kind="ddim", steps=steps)
        sampler = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
        seeds = list(range(num))
        rows = [{"schedule": "real held-out", "macs_share": None, "fid": fid.fid(data.holdout)}]
        half = steps // 2
        plans = {f"uniform {w:g}": [w] * steps for w in net.config.unet.widths}
        lo, hi = net.config.unet.widths[0], net.config.unet.widths[-1]
        plans[f"{lo:g} for the first {half} steps, then {hi:g}"] = [lo] * half + [hi] * (steps - half)
        plans[f"{hi:g} for the first {half} steps, then {lo:g}"] = [hi] * half + [lo] * (steps - half)
        full = table.full_width_cost(steps)
        for name, widths in plans.items():
            x = generate(net.model, sampler, widths, seeds, progress=progress)
            slug = name.replace(" ", "_").replace(",", "")
            save_grid(art["grids"] / f"{slug}.png", x[:64])
            Schedule.for_model(net.config, scfg, widths, provenance={"source": "quickstart"}).save(
                art["grids"] / f"{slug}.schedule.json")
            rows.append({"schedule": name, "macs_share": table.schedule_cost(widths) / full, "fid": fid.fid(x)})
        df = pd.DataFrame(rows)
        click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        write_atomic(art["widths"], lambda p: df.to_csv(p, index=False))

    _stage(4, total, f"sample {num} digits per schedule (DDIM {steps}) and score FID", art["widths"], _widths)
    click.echo("artifacts:")
    for name, path in art.items():
        if path.exists():
            click.echo(f"  {name:<10} {path}")
    return art
