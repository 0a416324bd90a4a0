"""The embedded default end to end: supernet -> cost table -> feature net -> search -> export -> plots -> FID.

Each stage writes its artifacts into the output folder and is skipped when
they are complete, so an interrupted quickstart picks up where it stopped
(the search resumes from its last finished generation and never evaluates a
schedule twice).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import click
import pandas as pd

from ddsm.errors import DDSMError
from ddsm.io import write_atomic

STAGES = 7


def default_space() -> Path:
    """``search_spaces/digits.yaml`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[1] / "search_spaces" / "digits.yaml"


def _stage(n: int, title: str, artifact: Path, work: Callable[[], None], *, done: bool | None = None) -> None:
    t0 = time.perf_counter()
    if artifact.exists() if done is None else done:
        click.echo(f"[{n}/{STAGES}] {title}: already done -> {artifact}")
        return
    click.echo(f"[{n}/{STAGES}] {title} ...")
    work()
    click.echo(f"[{n}/{STAGES}] {title}: {time.perf_counter() - t0:.0f} s -> {artifact}")


def run_quickstart(out: str | Path, *, checkpoint: str | Path = "digits", train: bool = False,
                   device: str | None = None, space: str | Path | None = None, runner: str = "ray", workers: int = 2,
                   num: int = 256, progress: bool = True) -> dict[str, Path]:
    """Run every stage into ``out`` from ``checkpoint`` (or a retrained digits supernet); returns the artifacts."""
    from ddsm.checkpoint import load_supernet
    from ddsm.config import RunConfig, validate
    from ddsm.cost import CostTable
    from ddsm.data import load_digits
    from ddsm.device import resolve_device
    from ddsm.metrics.evaluator import FIDEvaluator
    from ddsm.metrics.featurenet import FeatureNet, train_featurenet
    from ddsm.metrics.fid import FID
    from ddsm.report import export_front, format_table, load_search, plot_search
    from ddsm.schedule import Schedule
    from ddsm.search import SearchSpace, run_search
    from ddsm.search.oracle import cost_per_width, evaluator_factory
    from ddsm.search.state import load_state
    from ddsm.train import Trainer

    out = Path(out)
    space_file = Path(space) if space is not None else default_space()
    if not space_file.is_file():
        raise DDSMError(f"search space {str(space_file)!r} does not exist; pass --space FILE (see search_spaces/)")
    search_space = SearchSpace.load(space_file)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    art = {"supernet": out / "supernet" / "supernet.safetensors", "cost": out / "cost.json",
           "featurenet": out / "featurenet.safetensors", "search": out / "search", "export": out / "export",
           "plots": out / "plots", "fid": out / "fid.csv"}

    if train:
        # The shipped supernet carries its own recipe, so retraining needs no file from the repository.
        cfg = validate(RunConfig, load_supernet("digits").header["run"], source="shipped digits recipe")

        def _train() -> None:
            resume = (out / "supernet" / "checkpoint.safetensors").exists()
            Trainer(cfg, out / "supernet", device=str(dev), progress=progress).run(resume=resume)

        click.echo(f"training the supernet from scratch ({cfg.train.iters} steps; about 80 minutes on 2 CPU cores)")
        _stage(1, "train supernet", art["supernet"], _train)
        ref: str | Path = out / "supernet"
    else:
        ref = checkpoint
        click.echo(f"[1/{STAGES}] supernet: {checkpoint} (pass --train to retrain the digits reference from scratch)")
    net = load_supernet(ref, device=dev)
    search_space.check_supernet(net.config.unet.widths, net.config.unet)
    data = load_digits(size=net.config.unet.image_size, channels=net.config.unet.in_channels)

    _stage(2, "cost table (MACs, latency per width)", art["cost"],
           lambda: CostTable.measure(net.model, net.config, dev, batch_size=64, repeats=10, warmup=2,
                                     progress=progress).save(art["cost"]))
    table = CostTable.load(art["cost"], net.config, dev)

    _stage(3, "feature net for FID", art["featurenet"],
           lambda: train_featurenet(data, seed=0, progress=progress).save(art["featurenet"]))
    fid = FID.for_data(data, featurenet=FeatureNet.load(art["featurenet"], data))

    state = art["search"] / "state.json"
    finished = state.exists() and int(load_state(state)["generation"]) + 1 >= search_space.generations

    def _search() -> None:
        res = run_search(search_space, evaluator_factory=evaluator_factory(search_space, str(ref)),
                         cost_per_width=cost_per_width(search_space, net), out_dir=art["search"], runner=runner,
                         workers=workers, resume=(art["search"] / "search.json").exists(), progress=progress,
                         supernet=net.fingerprint, device=str(dev))
        click.echo(f"front of {len(res.front)} schedules within {search_space.budget:.0%} of the full-width cost, "
                   f"{len(res.evaluations)} schedules evaluated")

    _stage(4, f"search ({search_space.generations} generations of {search_space.population}, {runner} runner)",
           art["search"], _search, done=finished)
    run = load_search(art["search"])
    shares = sorted(float(s) for s in run.front["share"])
    # The budgets worth a file: the search's own, and half the full cost when the front reaches below it.
    budgets = sorted({run.budget, *([0.5] if shares and shares[0] <= 0.5 < run.budget else [])})

    def _export() -> None:
        res = export_front(run, net, art["export"], budgets=budgets, progress=progress)
        click.echo(format_table(res.table, quality=run.quality))

    _stage(5, "export the front (schedule files, measured speed-ups)", art["export"], _export,
           done=(art["export"] / "export.json").exists())
    _stage(6, "plots (front, widths per step, sensitivity, samples)", art["plots"],
           lambda: plot_search(run, net, art["plots"]), done=(art["plots"] / "plots.json").exists())

    def _fid() -> None:
        steps = search_space.sampler.steps
        plans = {f"best under {b:.0%} ({f.name})": Schedule.load(f, net.config).widths
                 for b in budgets for f in [art["export"] / f"best-under-{b:g}.json"]}
        plans.update({f"uniform width {w:g}": (w,) * steps for w in search_space.widths})
        ev = FIDEvaluator(net, search_space.sampler, fid, num=num, seed=0, progress=progress)
        scores = ev.evaluate([list(p) for p in plans.values()])
        full = table.full_width_cost(steps)
        df = pd.DataFrame({"schedule": list(plans), "macs_share": [table.schedule_cost(p) / full for p in plans.values()],
                           "fid": scores["fid"]})
        df = pd.concat([pd.DataFrame([{"schedule": "real held-out digits", "macs_share": None,
                                       "fid": fid.fid(data.holdout[:num])}]), df], ignore_index=True)
        click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        write_atomic(art["fid"], lambda p: df.to_csv(p, index=False))

    _stage(7, f"confirm with FID ({num} samples per schedule)", art["fid"], _fid)
    click.echo("artifacts:")
    for name, path in art.items():
        if path.exists():
            click.echo(f"  {name:<10} {path}")
    return art
