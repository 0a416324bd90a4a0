"""The embedded default end to end: supernet -> cost table -> feature net -> search -> export -> plots -> verdict ->
an interactive HTML report.

Each stage writes its artifacts into the output folder and is skipped when
they are complete, so an interrupted quickstart picks up where it stopped
(the search resumes from its last finished generation and never evaluates a
schedule twice).
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Callable

import click

from ddsm.checkpoint import load_supernet
from ddsm.config import RunConfig, validate
from ddsm.cost import CostTable
from ddsm.data import load_digits
from ddsm.device import resolve_device
from ddsm.errors import DDSMError
from ddsm.io import write_atomic, write_json
from ddsm.metrics.featurenet import FeatureNet, train_featurenet
from ddsm.metrics.fid import reference_images
from ddsm.metrics.verdict import FULL, TEXT_COLUMNS, Verdict, VerdictSettings, format_verdict, no_loss_summary
from ddsm.plan import StepPlan
from ddsm.report import export_front, format_table, plot_search
from ddsm.report.html import write_report
from ddsm.report.outdir import EXPORT_KIND, PLOTS_KIND, report_done
from ddsm.runfolder import check_run_folder, hold_folder
from ddsm.schedule import Schedule
from ddsm.search import SearchConfig
from ddsm.search.shipped import shipped_spaces, space_path
from ddsm.search.folder import generations_finished, load_search
from ddsm.search.setup import prepare_search
from ddsm.train import Trainer

STAGES = 8
#: images per timed batch in the export stage: small, so timing 31 schedules stays under a minute on 2 CPU cores
#: (`ddsm export --batch-size N` times at the batch you will sample with; every file records the batch it used)
QUICK_TIMING_BATCH = 16
#: budgets below the search's own whose best front member the quickstart exports and judges
VERDICT_BUDGETS = (0.3, 0.4, 0.5)


def default_space() -> Path:
    """The shipped ``digits`` search config (``search_spaces/digits.yaml``, package data when installed)."""

    return shipped_spaces()["digits"]


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

    out = check_run_folder(out, kind="quickstart")
    space_file = space_path(space) if space is not None else default_space()
    if not space_file.is_file():
        raise DDSMError(f"search space {str(space_file)!r} does not exist; pass --space FILE (see search_spaces/)")
    search_space = SearchConfig.load(space_file)
    dev = resolve_device(device)
    art = {"supernet": out / "supernet" / "supernet.safetensors", "cost": out / "cost.json",
           "featurenet": out / "featurenet.safetensors", "search": out / "search", "export": out / "export",
           "plots": out / "plots", "verdict": out / "verdict.csv", "report": out / "report.html"}

    def mark() -> None:  # the folder's marker: a rerun after a kill finds a quickstart here and continues it
        if not (out / "quickstart.json").is_file():
            write_json(out / "quickstart.json", {"kind": "ddsm.quickstart", "checkpoint": str(checkpoint),
                                                 "train": train, "space": str(space_file), "num": num})

    with hold_folder(out, what="quickstart", kind="quickstart"):
        if train:
            # The shipped supernet carries its own recipe, so retraining needs no file from the repository.
            cfg = validate(RunConfig, load_supernet("digits").header["run"], source="shipped digits recipe")

            def _train() -> None:
                resume = (out / "supernet" / "checkpoint.safetensors").exists()
                Trainer(cfg, out / "supernet", device=str(dev), progress=progress).run(resume=resume)

            mark()
            click.echo(f"training the supernet from scratch ({cfg.train.iters} steps; about 80 minutes on 2 CPU cores)")
            _stage(1, "train supernet", art["supernet"], _train)
            ref: str | Path = out / "supernet"
        else:
            ref = checkpoint
        net = load_supernet(ref, device=dev)
        prepared = prepare_search(search_space, str(ref), net=net)  # every refusal before the first stage line
        mark()
        if not train:
            click.echo(f"[1/{STAGES}] supernet: {checkpoint} (pass --train to retrain the digits reference from scratch)")
        for line in prepared.warnings:
            click.echo(line, err=True)
        data = load_digits(size=net.config.geometry.image_size, channels=net.config.geometry.in_channels)

        _stage(2, "cost table (MACs, latency per width)", art["cost"],
               lambda: CostTable.measure(net.model, net.config, dev, batch_size=64, repeats=10, warmup=2,
                                         progress=progress).save(art["cost"]))
        table = CostTable.load(art["cost"], net.config, dev)

        try:  # the shipped digits feature net, when it was trained on exactly this data
            features = FeatureNet.load("digits", data)
            click.echo(f"[3/{STAGES}] feature net: the shipped digits net (held-out accuracy "
                       f"{features.holdout_accuracy:.3f}) -> {features.path}")
        except DDSMError:
            _stage(3, "feature net for the verdict (this data has no shipped one)", art["featurenet"],
                   lambda: train_featurenet(data, seed=0, progress=progress).save(art["featurenet"]))
            features = FeatureNet.load(art["featurenet"], data)

        finished = generations_finished(art["search"]) >= search_space.generations

        def _search() -> None:
            res = prepared.run(art["search"], runner=runner, workers=workers,
                               resume=(art["search"] / "search.json").exists(), progress=progress, device=str(dev))
            click.echo(f"front of {len(res.front)} schedules within {search_space.budget:.0%} of the full-width cost, "
                       f"{len(res.evaluations)} schedules evaluated")

        _stage(4, f"search ({search_space.generations} generations of {search_space.population}, {runner} runner)",
               art["search"], _search, done=finished)
        run = load_search(art["search"])
        shares = sorted(float(s) for s in run.front["share"])
        # The budgets worth a file (and a verdict): the search's own, and 0.5, 0.4, 0.3 of the full cost where the
        # front reaches below them, so the verdict can find the cheapest schedule without a significant loss.
        budgets = sorted({run.budget, *(b for b in VERDICT_BUDGETS if shares and shares[0] <= b < run.budget)})

        def _export() -> None:
            res = export_front(run, net, art["export"], budgets=budgets, num=QUICK_TIMING_BATCH, progress=progress)
            click.echo(format_table(res.table, quality=run.quality))

        _stage(5, "export the front (schedule files, measured speed-ups)", art["export"], _export,
               done=report_done(art["export"], EXPORT_KIND))
        _stage(6, "plots (front, widths per step, sensitivity, samples)", art["plots"],
               lambda: plot_search(run, net, art["plots"]), done=report_done(art["plots"], PLOTS_KIND))

        settings = VerdictSettings(num=num, teacher_num=2 * num)  # seeds from 10,000 on: never the search's

        def _verdict() -> None:
            steps = search_space.sampler.calls
            plans = {f"best under {b:.0%} ({f.name})": Schedule.load_for(f, net)[0].plan()
                     for b in budgets for f in [art["export"] / f"best-under-{b:g}.json"]}
            plans.update({f"uniform width {w:g}": StepPlan((w,) * steps) for w in search_space.widths[:-1]})
            # MACs whatever the search priced: its own cost model for a FLOP search, else the measured table's
            macs = prepared.costs if search_space.objectives.cost == "flops" else table.cost_model("macs")
            share = {k: macs.share(p) for k, p in plans.items()}
            uniform = sorted((share[k], k) for k in plans if k.startswith("uniform"))
            # each schedule against the cheapest uniform width that costs at least as much (full width if none)
            against = {k: next((u for s, u in uniform if s >= share[k] - 1e-12 and u != k), FULL) for k in plans}
            judge = Verdict(net, search_space.sampler, features, reference_images(data, "all"), settings,
                            search_seeds=search_space.search_seeds, progress=progress)
            result = judge.score(plans, extra={FULL: {"share": 1.0}, **{k: {"share": v} for k, v in share.items()}})
            table_ = result.table(against={k: v for k, v in against.items() if v != FULL})
            click.echo(textwrap.fill(no_loss_summary(table_), TEXT_COLUMNS))
            click.echo(format_verdict(table_))
            click.echo(textwrap.fill(f"verdict on seeds {settings.seed}..{settings.seed + num - 1} (the search scored seeds "
                       f"{', '.join(f'{r.start}..{r.stop - 1}' for r in search_space.search_seeds)}); {settings.level:.0%} basic bootstrap intervals, "
                       f"differences paired on the same seeds; teacher_fid against {settings.teacher_num} full-width "
                       f"samples from seed {settings.teacher_seed}", TEXT_COLUMNS))
            write_atomic(art["verdict"], lambda p: table_.to_csv(p, index=False))

        _stage(7, f"verdict on held-out seeds ({num} samples per schedule)", art["verdict"], _verdict)
        _stage(8, "interactive report (one offline HTML page)", art["report"],
               lambda: write_report(run, art["report"], export=art["export"], verdict=art["verdict"], net=net,
                                    checkpoint=str(ref)))
        click.echo("artifacts:")
        for name, path in art.items():
            if path.exists():
                click.echo(f"  {name:<10} {path}")
        return art
