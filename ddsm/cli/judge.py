"""``ddsm evaluate`` and ``ddsm verdict``: schedules scored by a search metric, and judged on held-out seeds."""

from __future__ import annotations

import textwrap
import time

import click

from ddsm.cli import _allow_new_weights, _device, main, note_new_weights
from ddsm.errors import DDSMError
from ddsm.samplers.base import SAMPLER_KINDS
from ddsm.limits import check_count, check_sample_memory, check_seed
from ddsm.metrics.registry import objective_names
from ddsm.outputs import EVALUATION_CSV, VERDICT_CSV, check_out_file

@main.command()
@click.option("--checkpoint", required=True, help="Run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--schedule", "schedule_files", multiple=True, type=click.Path(dir_okay=False),
              help="Schedule file (JSON) to score; repeatable. Fixes sampler, steps, eta and spacing.")
@click.option("--width", "widths", multiple=True, type=float,
              help="Also score the uniform schedule at this width; repeatable.")
@click.option("--metric", type=click.Choice(objective_names()), default="proxy", show_default=True,
              help="A registered metric. proxy: mean squared distance to the full-width samples on the same seeds "
                   "(cheap); proxy_linear: its first-order prediction; fid: FID against the real training images "
                   "in a feature net's space.")
@click.option("--featurenet", "featurenet_file", type=click.Path(dir_okay=False), default=None,
              help="Feature net file for --metric fid (make one with `ddsm featurenet --checkpoint ...`).")
@click.option("--sampler", type=click.Choice(SAMPLER_KINDS), default=None, help="Sampler for --width [default: ddim].")
@click.option("--steps", type=int, default=None, help="Sampling steps for --width [default: 50].")
@click.option("--eta", type=float, default=None, help="DDIM noise scale for --width [default: 0].")
@click.option("--spacing", type=click.Choice(["leading", "trailing", "linspace"]), default=None,
              help="Timestep spacing for --width [default: leading].")
@click.option("--guidance-scale", type=float, default=None,
              help="Classifier-free guidance scale for --width on a class-conditional model [default: none].")
@click.option("--num", type=int, default=None, help="Samples per schedule [default: the metric's: 64, 1000 for fid].")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed SEED+i for every schedule.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Seeds denoised together.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Also write the table as CSV.")
@_allow_new_weights
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def evaluate(checkpoint, schedule_files, widths, metric, featurenet_file, sampler, steps, eta, spacing,
             guidance_scale, num, seed, batch_size, out, allow_new_weights, device, progress) -> None:
    """Score schedules (files and/or uniform widths) by the teacher proxy or FID, sharing sampling work."""
    import pandas as pd

    from ddsm.checkpoint import load_supernet
    from ddsm.device import resolve_device
    from ddsm.io import write_atomic
    from ddsm.metrics.registry import get_metric

    if not schedule_files and not widths:
        raise DDSMError("give at least one --schedule FILE or --width W to evaluate")
    if num is not None:
        check_count(num)
    if out is not None:
        check_out_file(out, kind=EVALUATION_CSV)
    m = get_metric(metric)
    if m.needs_featurenet and featurenet_file is None:
        raise DDSMError(f"--metric {metric} needs --featurenet FILE; train one with "
                        "`ddsm featurenet --checkpoint ... --out FILE`")
    if num is not None and num >= 2:  # below 2 the evaluator itself refuses (at least 2 samples)
        m.check_num(num, what="--num")
    check_seed(seed, num or m.default_num)
    net = load_supernet(checkpoint, device=resolve_device(device))
    check_sample_memory(num or m.default_num, net.config.geometry)
    scfg, named, _, overrides = _candidates(net, schedule_files, widths, {"kind": sampler, "steps": steps, "eta": eta,
                                                                          "timestep_spacing": spacing,
                                                                          "guidance_scale": guidance_scale},
                                            allow_new_weights)
    candidates, names = list(named.values()), list(named)
    common = dict(num=num if num is not None else m.default_num, seed=seed, batch_size=batch_size, progress=progress)
    ev = m.build(net, scfg, featurenet=featurenet_file, checkpoint=checkpoint, **common)
    t0 = time.perf_counter()
    df = ev.evaluate(candidates)
    df.insert(0, "schedule", names)
    if overrides:  # recorded beside the scores: these files were measured on other weights
        df["measured_on_other_weights"] = df["schedule"].isin(overrides)
    with pd.option_context("display.width", 120, "display.float_format", "{:.5g}".format):
        click.echo(df.to_string(index=False))
    click.echo(f"{len(candidates)} schedules x {common['num']} samples in {time.perf_counter() - t0:.1f} s; "
               f"shared sampling saved {ev.stats.saved_fraction:.0%} of denoiser evaluations")
    if out is not None:
        write_atomic(out, lambda p: df.to_csv(p, index=False))
        click.echo(f"-> {out}")


def _candidates(net, schedule_files, widths, flags: dict, allow_new_weights: bool = False) -> tuple:
    """(sampler config, {name: Schedule or StepPlan}, the schedule files' search seeds, weight overrides) from files
    and uniform widths.

    Files must share one sampler setting, which sampler flags may not contradict,
    and have been measured on the checkpoint's weights unless ``allow_new_weights``
    (then the overrides, by file, are returned for the outputs to record).
    """
    from ddsm.plan import StepPlan
    from ddsm.sampler_choice import choose_sampler
    from ddsm.schedule import Schedule

    loaded = [Schedule.load_for(f, net, allow_new_weights=allow_new_weights) for f in schedule_files]
    scheds = [s for s, _ in loaded]
    overrides = {str(f): o for f, (_, o) in zip(schedule_files, loaded) if o}
    note_new_weights(overrides)
    scfg = choose_sampler(net.config, scheds, flags)
    from ddsm.samplers.loop import check_guidance_scale

    check_guidance_scale(net.model, scfg.guidance_scale)  # refused before any data, feature net or sampling
    named = {**dict(zip(schedule_files, scheds)),
             **{f"width {w:g}": StepPlan((net.model.check_width(w),) * scfg.calls) for w in widths}}
    # the seeds a search scored a schedule on travel in its provenance: a verdict must avoid them
    used = [s.provenance.get(k) for s in scheds for k in ("evaluator", "screen")
            if isinstance(s.provenance.get(k), dict)]
    seeds = [range(int(e["seed"]), int(e["seed"]) + int(e["num_samples"])) for e in used]
    return scfg, named, seeds, overrides


@main.command()
@click.option("--checkpoint", required=True, help="Run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--schedule", "schedule_files", multiple=True, type=click.Path(dir_okay=False),
              help="Schedule file (JSON) to judge; repeatable. Its search's seeds (provenance) are kept out.")
@click.option("--width", "widths", multiple=True, type=float, help="Also judge the uniform schedule at this width.")
@click.option("--featurenet", "featurenet_file", default="auto", show_default=True,
              help="Feature net file for the data, a shipped name ('digits', 'mnist'), or auto: the shipped one of "
                   "the checkpoint's built-in data.")
@click.option("--sampler", type=click.Choice(SAMPLER_KINDS), default=None, help="Sampler for --width [default: ddim].")
@click.option("--scheduler", default=None,
              help="For --width: the ddsm sampler that reproduces this diffusers scheduler config (a folder or "
                   "scheduler_config.json, e.g. your pipeline's), instead of --sampler.")
@click.option("--steps", type=int, default=None, help="Sampling steps for --width [default: 50].")
@click.option("--guidance-scale", type=float, default=None,
              help="Classifier-free guidance scale for --width on a class-conditional model [default: none].")
@click.option("--num", type=int, default=1000, show_default=True, help="Samples per schedule (verdict seeds).")
@click.option("--seed", type=int, default=10_000, show_default=True,
              help="First verdict seed; must not overlap any search's seeds.")
@click.option("--teacher-num", type=int, default=2000, show_default=True,
              help="Full-width samples of the teacher-relative FID's reference.")
@click.option("--teacher-seed", type=int, default=1_000_000, show_default=True, help="Their first seed.")
@click.option("--search-seeds", default=None, help="START:STOP seeds a search used, to keep out (e.g. 0:64) "
              "[default: read from the schedule files].")
@click.option("--draws", type=int, default=200, show_default=True, help="Bootstrap resamples.")
@click.option("--metric", "metrics", multiple=True, help="Report only these verdict metrics; repeatable "
              "[default: all of fid, teacher_fid, kid, pixel_kid, precision, recall, confidence, class_accuracy "
              "(conditional models), proxy].")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Also write the long table as CSV.")
@_allow_new_weights
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def verdict(checkpoint, schedule_files, widths, featurenet_file, sampler, scheduler, steps, guidance_scale, num, seed,
            teacher_num, teacher_seed, search_seeds, draws, metrics, out, allow_new_weights, device, progress) -> None:
    """Judge schedules against full width on held-out seeds: every metric with its paired 95 % interval."""
    from ddsm.checkpoint import load_supernet, training_data
    from ddsm.device import resolve_device
    from ddsm.io import write_atomic
    from ddsm.metrics.featurenet import FeatureNet, featurenet_for
    from ddsm.metrics.fid import reference_images
    from ddsm.metrics.verdict import (TEXT_COLUMNS, METRICS, Verdict, VerdictSettings, check_disjoint, format_verdict,
                                      no_loss_summary)

    if not schedule_files and not widths:
        raise DDSMError("give at least one --schedule FILE or --width W to judge")
    if out is not None:
        check_out_file(out, kind=VERDICT_CSV)
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise DDSMError(f"--metric {bad[0]!r} is not a verdict metric; valid: {', '.join(METRICS)}")
    check_seed(seed, num)
    check_seed(teacher_seed, teacher_num, flag="--teacher-seed")
    net = load_supernet(checkpoint, device=resolve_device(device))
    check_sample_memory(num, net.config.geometry)
    check_sample_memory(teacher_num, net.config.geometry, flag="--teacher-num")
    settings = VerdictSettings(num=num, seed=seed, teacher_num=teacher_num, teacher_seed=teacher_seed, draws=draws)
    scfg, named, used, overrides = _candidates(net, schedule_files, widths, {"kind": sampler, "steps": steps,
                                                                           "guidance_scale": guidance_scale,
                                                                           "scheduler": scheduler},
                                               allow_new_weights)
    if search_seeds is not None:
        try:
            a, b = (int(x) for x in search_seeds.split(":"))
        except ValueError:
            raise DDSMError(f"--search-seeds {search_seeds!r} must be START:STOP, e.g. 0:64") from None
        if not 0 <= a < b:
            raise DDSMError(f"--search-seeds {search_seeds!r} must be START:STOP with 0 <= START < STOP, e.g. 0:64")
        used.append(range(a, b))
    check_disjoint(settings.seeds, used)  # before any data or feature net is read
    check_disjoint(settings.teacher_seeds, used, what="teacher seeds")
    unet = net.config.geometry
    data = training_data(checkpoint, net.config.image_geometry)  # a latent model's samples are judged decoded
    fn = FeatureNet.load(featurenet_for(featurenet_file, checkpoint), data)
    judge = Verdict(net, scfg, fn, reference_images(data, "all"), settings, search_seeds=used, progress=progress)
    t0 = time.perf_counter()
    from ddsm.cost import CostModel
    from ddsm.plan import StepPlan

    sides = sorted({r for p in named.values() for r in (StepPlan.of(p).resolutions or ())} | {unet.image_size})
    from ddsm.samplers.base import guided_passes

    # a guided sampler: both passes of every step (a schedule's guidance choices price each pass alone)
    macs = CostModel.count(net, unet.widths, sides if len(sides) > 1 else None)
    levels = sorted({StepPlan.of(p).cache_level for p in named.values() if StepPlan.of(p).cached is not None})
    if len(levels) > 1:
        raise DDSMError(f"the schedules cache at levels {levels}; judge schedules of one cache level at a time")
    if levels:  # cached steps cost a cached call (fvcore MACs of the part it runs)
        macs = macs.count_cached(net, levels[0])
    macs = macs.per_step(guided_passes(scfg))
    result = judge.score(named, extra={"full width": {"share": 1.0},
                                       **{k: {"share": macs.share(p)} for k, p in named.items()}})
    table = result.table()
    if metrics:
        table = table[table["metric"].isin(metrics)]
    if overrides:
        table["measured_on_other_weights"] = table["schedule"].isin(overrides)
    click.echo(textwrap.fill(no_loss_summary(table, uniform_prefix="width "), TEXT_COLUMNS))
    click.echo(format_verdict(table))
    click.echo(textwrap.fill(f"{len(named)} schedules and full width x {num} samples (seeds {seed}..{seed + num - 1}) "
                             f"in {time.perf_counter() - t0:.0f} s; intervals: {settings.level:.0%} basic bootstrap "
                             f"over seeds, {draws} draws, paired against full width", TEXT_COLUMNS))
    if out is not None:
        write_atomic(out, lambda p: table.to_csv(p, index=False))
        click.echo(f"-> {out}")
