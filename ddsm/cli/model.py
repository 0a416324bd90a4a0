"""``ddsm train``, ``sample``, ``cost``, ``featurenet``, ``spectrum`` and ``distill``: a supernet and what its schedules cost."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ddsm.cli import _allow_new_weights, _device, main, note_new_weights, warning_text
from ddsm.cli.judge import _candidates
from ddsm.errors import DDSMError
from ddsm.samplers.base import SAMPLER_KINDS
from ddsm.limits import MAX_IMAGE_SIDE, check_count, check_finite_positive, check_sample_memory, check_seed
from ddsm.outputs import COST_TABLE, SPECTRUM, check_out_file
from ddsm.runfolder import check_run_folder, hold_folder


@main.command()
@click.option("--data", default=None, help="Training images: 'digits' or 'mnist' (built in), a folder of PNG/JPEG images, "
              "or 'torchvision:NAME:ROOT' for a torchvision dataset already on disk. [default: digits, or the config's]")
@click.option("--iters", type=int, default=None, help="Total optimizer steps (overrides train.iters of the config).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder for checkpoints, "
              "the resolved config, the metrics log and the final supernet.safetensors.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file with model/data/train sections (see experiments/configs/). Unset keys keep their defaults.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its last checkpoint stopped.")
@click.option("--seed", type=int, default=None, help="Seed of every random draw in training (overrides train.seed).")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with loss, rate and ETA.")
def train(data, iters, out, config_file, resume, seed, device, progress) -> None:
    """Train a slimmable supernet (sandwich rule, in-place distillation, EMA)."""
    from ddsm.run_configs import train_run_config
    from ddsm.train import Trainer

    cfg = train_run_config(out, config_file=config_file, resume=resume, data=data, iters=iters, seed=seed)
    trainer = Trainer(cfg, out, device=device, progress=progress)
    start = time.perf_counter()
    _run_to_the_end(trainer, resume, f"ddsm train --out {out} --resume")
    click.echo(f"trained {trainer.step} steps ({trainer.train_seconds:.0f} s of training in total, "
               f"{time.perf_counter() - start:.0f} s this run) -> {Path(out) / 'supernet.safetensors'}")


def _run_to_the_end(trainer, resume: bool, continue_with: str) -> None:
    """Run a trainer; on Ctrl-C (its checkpoint is saved) say how to continue and exit 130."""
    try:
        trainer.run(resume=resume)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted at step {trainer.step}; checkpoint saved. Continue with: {continue_with}", err=True)
        sys.exit(130)


@main.command()
@click.option("--checkpoint", required=True, help="Run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--sampler", type=click.Choice(SAMPLER_KINDS), default=None,
              help="Sampler [default: ddim, or the schedule file's].")
@click.option("--steps", type=int, default=None, help="Sampling steps (diffusers' num_inference_steps; heun calls the model 2 steps - 1 times) [default: 50, or the schedule's].")
@click.option("--eta", type=float, default=None, help="DDIM noise scale; 0 is deterministic [default: 0].")
@click.option("--spacing", type=click.Choice(["leading", "trailing", "linspace"]), default=None,
              help="How visited timesteps are spread (diffusers' timestep_spacing) [default: leading].")
@click.option("--scheduler", default=None,
              help="Sample with this diffusers scheduler instead of ddsm's own sampler (with --width): ddpm, ddim, "
                   "dpm++, unipc, euler, euler-ancestral, heun, or a folder / scheduler_config.json (your own).")
@click.option("--width", type=float, default=None, help="Run every step at this width (one of the supernet's widths).")
@click.option("--schedule", "schedule_file", type=click.Path(dir_okay=False), default=None,
              help="Schedule file (JSON) giving one width per step; fixes sampler, steps, eta and spacing.")
@click.option("--num", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed SEED+i, whatever the batch.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Samples denoised together.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for grid.png, samples.safetensors and sample.json.")
@click.option("--class-label", "class_labels", type=int, multiple=True,
              help="A class-conditional model's label to sample (repeat: the samples cycle through them) "
                   "[default: the sample with seed s has class s mod num_classes].")
@click.option("--guidance-scale", type=float, default=None,
              help="Classifier-free guidance scale s of a class-conditional model: eps_u + s (eps_c - eps_u); "
                   "1 is the conditional prediction alone [default: 1, or the schedule's].")
@_allow_new_weights
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def sample(checkpoint, sampler, steps, eta, spacing, scheduler, width, schedule_file, num, seed, batch_size, out,
           class_labels, guidance_scale, allow_new_weights, device, progress):
    """Sample from a supernet at one width or with a per-step width schedule."""
    from ddsm.checkpoint import load_supernet
    from ddsm.device import resolve_device
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.sampler_choice import choose_sampler
    from ddsm.samplers import generate, make_sampler
    from ddsm.schedule import Schedule

    if (width is None) == (schedule_file is None):
        raise DDSMError("give exactly one of --width W or --schedule FILE")
    if scheduler is not None:
        from ddsm.integrations.schedulers import scheduler_class

        scheduler_class(scheduler)  # a name diffusers' list lacks is refused before anything is loaded
        if schedule_file is not None or sampler is not None or eta is not None:
            raise DDSMError("--scheduler samples at one --width (per-call widths: "
                            "ddsm.integrations.schedulers.sample_with_scheduler); drop --schedule, --sampler and --eta")
    outdir = check_run_folder(out, kind="samples")
    if num <= 0 or batch_size <= 0:
        raise DDSMError(f"--num ({num}) and --batch-size ({batch_size}) must be positive")
    check_seed(seed, num)
    dev = resolve_device(device)
    net = load_supernet(checkpoint, device=dev)
    check_sample_memory(num, net.config.geometry)
    flags = {"kind": sampler, "steps": steps, "eta": eta, "timestep_spacing": spacing,
             "guidance_scale": guidance_scale}
    sched, override = (Schedule.load_for(schedule_file, net, allow_new_weights=allow_new_weights)
                       if schedule_file is not None else (None, {}))
    note_new_weights({str(schedule_file): override} if override else {})
    scfg = choose_sampler(net.config, [sched] if sched else [], flags)
    widths, sides = (list(sched.widths), sched.resolutions) if sched else (net.model.check_width(width), None)
    from ddsm.samplers.progressive import untrained_message

    untrained = untrained_message(sides or (), net.trained_resolutions, steps="the schedule's steps")
    if untrained:
        click.echo(warning_text(f"this {untrained}", UserWarning), err=True)
    smp = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
    seeds = list(range(seed, seed + num))
    # given labels cycle over the samples; by default (None) the sample with seed s has class s mod num_classes,
    # as in the evaluators and the verdict. generate() checks them before it samples or anything is written.
    labels = [class_labels[i % len(class_labels)] for i in range(num)] if class_labels else None
    t0 = time.perf_counter()
    if scheduler is not None:
        return _sample_with_scheduler(net, scheduler, steps, spacing, width, seeds, labels, guidance_scale,
                                      batch_size, dev, outdir, class_labels, t0)
    # a schedule's plan carries its sides, guidance choices and cached steps
    x = generate(net.model, smp, sched.plan() if sched else widths, seeds, batch_size=batch_size, progress=progress,
                 labels=labels)
    elapsed = time.perf_counter() - t0
    info = {"kind": "ddsm.samples", "supernet": net.fingerprint, "checkpoint": net.source,
            "sampler": scfg.model_dump(mode="json"),
            "widths": widths if isinstance(widths, list) else [widths] * scfg.calls,
            **({"resolutions": list(sides)} if sides else {}),
            **({"uncond_widths": list(sched.uncond_widths)} if sched and sched.uncond_widths else {}),
            **({"cached": list(sched.cached), "cache_level": sched.cache_level} if sched and sched.cached else {}),
            "seeds": [seeds[0], seeds[-1] + 1], "device": str(dev), "seconds": round(elapsed, 3),
            **({"allowed_new_weights": {str(schedule_file): override}} if override else {}),
            # sample i has label class_cycle[i % len(class_cycle)], or (no cycle) its seed mod num_classes
            **({"class_cycle": list(class_labels)} if class_labels else {})}
    _write_samples(outdir, info, x, elapsed)


def _write_samples(outdir, info: dict, x, elapsed: float) -> None:
    from ddsm.checkpoint import save_tensors
    from ddsm.images import save_grid
    from ddsm.io import write_json

    with hold_folder(outdir, what="samples", kind="samples"):
        write_json(outdir / "sample.json", info)  # first: it marks the folder, so a rerun after a kill may replace it
        save_tensors(outdir / "samples.safetensors", {"samples": x}, info)
        save_grid(outdir / "grid.png", x)
    click.echo(f"{len(x)} samples in {elapsed:.1f} s -> {outdir / 'grid.png'}, {outdir / 'samples.safetensors'}")


def _sample_with_scheduler(net, name, steps, spacing, width, seeds, labels, guidance_scale, batch_size, dev, outdir,
                           class_labels, t0) -> None:
    # ddsm sample --scheduler: a diffusers scheduler's loop at one width (ddsm.integrations.schedulers)
    from ddsm.integrations.schedulers import make_scheduler, model_calls, sample_with_scheduler

    options = {"timestep_spacing": spacing} if spacing else {}
    sch = make_scheduler(net, name, steps if steps is not None else 50, **options)
    x = sample_with_scheduler(net, sch, net.model.check_width(width), seeds, labels=labels,
                              guidance_scale=guidance_scale, batch_size=batch_size, device=dev)
    elapsed = time.perf_counter() - t0
    info = {"kind": "ddsm.samples", "supernet": net.fingerprint, "checkpoint": net.source,
            "scheduler": {"class": type(sch).__name__, "steps": sch.num_inference_steps or len(sch.timesteps),
                          "model_calls": model_calls(sch), "config": dict(sch.config)},
            **({"guidance_scale": guidance_scale} if guidance_scale is not None else {}),
            "widths": [width] * model_calls(sch), "seeds": [seeds[0], seeds[-1] + 1], "device": str(dev),
            "seconds": round(elapsed, 3), **({"class_cycle": list(class_labels)} if class_labels else {})}
    _write_samples(outdir, info, x, elapsed)


@main.command()
@click.option("--checkpoint", required=True, help="Run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Cost table JSON to write.")
@_device
@click.option("--batch-size", "batch_sizes", type=int, multiple=True,
              help="Images per timed forward pass; use the batch size you sample with. Repeat for several "
                   "(the first is the table's default; a latency search picks one with objectives.batch) "
                   "[default: 64].")
@click.option("--repeats", type=int, default=20, show_default=True, help="Timed passes per width; the median is kept.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed passes before timing each width.")
@click.option("--resolution", "resolutions", type=int, multiple=True,
              help="Square input side to cost; repeat for several [default: the training size].")
@click.option("--cache-level", "cache_levels", type=int, multiple=True,
              help="Also count and time a cached call (deep features reused) at this level, per width and batch; "
                   "repeat for several (Backbone.reuse_levels lists them).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def cost(checkpoint, out, device, batch_sizes, repeats, warmup, resolutions, cache_levels, progress) -> None:
    """Count MACs and time every width of a supernet into a cost table (JSON) for schedule search."""
    from ddsm.checkpoint import load_supernet
    from ddsm.cost import CostTable
    from ddsm.device import resolve_device

    check_out_file(out, kind=COST_TABLE)
    dev = resolve_device(device)
    net = load_supernet(checkpoint, device=dev)
    table = CostTable.measure(net.model, net.config, dev, resolutions=list(resolutions) or None,
                              batch_size=list(batch_sizes) or [64], repeats=repeats, warmup=warmup,
                              progress=progress, cache_levels=cache_levels)
    table.save(out)
    full = {(e.resolution, e.batch_size): e for e in table.entries if e.width == 1.0 and e.cache_level is None}
    click.echo(f"{'width':>6} {'side':>5} {'batch':>5} {'call':>8} {'MMACs/image':>12} {'ms/call':>9} {'IQR ms':>7} "
               f"{'time/MAC share':>14}")
    for e in table.entries:
        f = full.get((e.resolution, e.batch_size))
        ratio = f"{(e.latency_s / f.latency_s) / (e.macs / f.macs):>14.2f}" if f else f"{'':>14}"
        call = "full" if e.cache_level is None else f"cached{e.cache_level}"
        click.echo(f"{e.width:>6g} {e.resolution:>5d} {e.batch_size:>5d} {call:>8} {e.macs / 1e6:>12.2f} "
                   f"{e.latency_s * 1e3:>9.2f} {e.latency_iqr_s * 1e3:>7.2f} {ratio}")
    if table.decoder is not None:  # a latent model: its decoder runs once per image, after the last step
        d, f = table.decoder, full.get((table.image_size, table.batch_size))
        click.echo(f"{'decoder':>6} {'':>5} {d.batch_size:>5d} {'1/image':>8} {d.macs / 1e6:>12.2f} "
                   f"{d.latency_s * 1e3:>9.2f} {d.latency_iqr_s * 1e3:>7.2f}" +
                   (f"  ({d.macs / f.macs:.2f} full-width calls)" if f else ""))
    click.echo(f"{table.device} ({table.device_name}), {table.threads} threads, batches "
               f"{', '.join(map(str, table.batch_sizes))} (default {table.batch_size}), median of {table.repeats} "
               f"-> {out}")


@main.command()
@click.option("--checkpoint", required=True, help="Supernet whose training data is fitted (run folder, file or shipped name).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="Search space (YAML or shipped name) with resolutions: print the rule's per-step sides and "
                   "transition genes for it.")
@click.option("--threshold", type=float, default=1.0, show_default=True,
              help="Grow once the first left-out band's signal-to-noise ratio reaches this.")
@click.option("--width", "widths", multiple=True, type=float,
              help="Compare samples at this uniform width with the real images' spectrum; repeatable.")
@click.option("--schedule", "schedule_files", multiple=True, type=click.Path(dir_okay=False),
              help="Compare samples of this schedule file with the real images' spectrum; repeatable.")
@click.option("--steps", type=int, default=None, help="Sampling steps for --width [default: 50].")
@click.option("--num", type=int, default=256, show_default=True, help="Samples per width or schedule.")
@click.option("--seed", type=int, default=10_000, show_default=True,
              help="Sample i uses seed SEED+i (the default stays clear of the seeds searches score on).")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Seeds denoised together.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for spectrum.png/svg: the spectra and their per-frequency error.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Also write the fit and rule as JSON.")
@_allow_new_weights
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar while sampling.")
def spectrum(checkpoint, space_file, threshold, widths, schedule_files, steps, num, seed, batch_size, plot_dir, out,
             allow_new_weights, device, progress) -> None:
    """Fit the training data's radial power spectrum P(w) = A w^-beta; predict when the state should grow.

    With --width or --schedule, also sample each and compare its radially
    averaged power spectrum with the held-out real images', per frequency and
    per band (low: up to side/4 cycles per image; high: above).
    """
    from ddsm.checkpoint import load_supernet
    from ddsm.checkpoint import training_data
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.io import write_json
    from ddsm.samplers.base import visited
    from ddsm.search import SearchConfig
    from ddsm.spectrum import fit_power_spectrum, rule_resolutions

    if out:
        check_out_file(out, kind=SPECTRUM)
    check_finite_positive(threshold, flag="--threshold")
    compare = bool(widths or schedule_files)
    if not compare and (steps is not None or plot_dir is not None):
        raise DDSMError("--steps and --plot need something to sample: add --width W or --schedule FILE")
    if compare:
        check_count(num)
        check_seed(seed, num)
        if batch_size <= 0:
            raise DDSMError(f"--batch-size {batch_size} must be positive")
        if plot_dir is not None:
            check_run_folder(plot_dir, kind="spectrum plots", flag="--plot")
    from ddsm.device import resolve_device

    net = load_supernet(checkpoint, device=resolve_device(device) if compare else "cpu")
    if compare:  # every candidate is checked before anything is printed or sampled
        check_sample_memory(num, net.config.geometry)
        scfg, named, _, overrides = _candidates(net, schedule_files, widths, {"kind": None, "steps": steps, "eta": None,
                                                                              "timestep_spacing": None},
                                                allow_new_weights)
    unet = net.config.geometry
    space = SearchConfig.load(space_file) if space_file else None
    if space is not None:
        if space.resolutions is None:
            raise DDSMError(f"search space {space_file!r} has no resolutions; add e.g. resolutions: [8, {unet.image_size}]")
        space.check_supernet(unet.widths, unet)
    data = training_data(checkpoint, unet)
    fit = fit_power_spectrum(data.train)
    click.echo(f"P(w) = {fit.A:.4g} * w^-{fit.beta:.3f}  (R^2 {fit.r2:.3f}; {len(data.train)} training images, "
               f"side {unet.image_size}, [-1, 1] units, w in cycles per image)")
    click.echo(f"{'w':>4} {'measured':>10} {'fitted':>10}")
    for w, p in zip(fit.freqs, fit.power):
        click.echo(f"{w:>4g} {p:>10.4g} {float(fit.power_at(w)):>10.4g}")
    doc = {"kind": SPECTRUM, "checkpoint": net.source, "threshold": threshold, "fit": fit.to_dict()}
    if space is not None:
        noise = NoiseSchedule(net.config.diffusion)
        ts = visited(space.sampler, noise.num_timesteps).tolist()
        sides = rule_resolutions(fit, space.resolutions, ts, noise, threshold=threshold)
        genes = space.resolutions_to_genes(sides)
        click.echo(f"rule for {space.sampler.kind.upper()} {space.sampler.steps} steps: sides {sides}")
        click.echo("transition genes (first step at each larger side): "
                   + ", ".join(f"{r}: step {g}" for r, g in zip(space.resolutions[1:], genes)))
        doc.update({"sides": sides, "transitions": dict(zip(map(str, space.resolutions[1:]), genes))})
    if compare:
        doc["comparison"] = _compare_spectra(net, data, scfg, named, num, seed, batch_size, plot_dir, progress)
        if overrides:
            doc["allowed_new_weights"] = overrides
    if out:
        write_json(out, doc)
        click.echo(f"-> {out}")


def _compare_spectra(net, data, scfg, named, num, seed, batch_size, plot_dir, progress) -> dict:
    """Sample every candidate on the same seeds, print the per-band spectrum errors, plot; the comparison as data."""
    from ddsm.diffusion.noise import NoiseSchedule
    from ddsm.samplers import generate, make_sampler
    from ddsm.spectrum import compare_spectra, frequency_bands

    real = data.holdout if len(data.holdout) else data.train
    smp = make_sampler(NoiseSchedule(net.config.diffusion), scfg)
    seeds = list(range(seed, seed + num))
    samples = {name: generate(net.model, smp, plan, seeds, batch_size=batch_size, progress=progress)
               for name, plan in named.items()}
    cmp = compare_spectra(real, samples)
    bands = frequency_bands(cmp.side)
    click.echo(f"spectrum of {num} samples each ({scfg.kind.upper()} {scfg.steps} steps, seeds {seed}..{seed + num - 1}) "
               f"against {cmp.num_real} held-out real images; error = mean |log10(P_samples / P_real)| per band "
               f"(low: w {bands['low'][0]}-{bands['low'][1]}, high: w {bands['high'][0]}-{bands['high'][1]})")
    click.echo(f"{'':<28} {'low':>8} {'high':>8}")
    for name, e in cmp.errors.items():
        click.echo(f"{str(name)[:28]:<28} {e['low']:>8.4f} {e['high']:>8.4f}")
    doc = {**cmp.to_dict(), "checkpoint": net.source, "sampler": scfg.model_dump(mode="json"),
           "seeds": [seed, seed + num]}
    if plot_dir is not None:
        from ddsm.io import write_json
        from ddsm.report.plots import plot_spectra

        with hold_folder(plot_dir, what="spectrum plots", kind="spectrum plots") as folder:
            write_json(folder / "spectrum.json", {"kind": "ddsm.spectrum_plots", **doc})  # first: marks the folder
            paths = plot_spectra(cmp, folder)
        click.echo(f"-> {folder / 'spectrum.json'}, {', '.join(map(str, paths))}")
    return doc



@main.command()
@click.option("--data", default=None, help="Images to learn features of: 'digits', 'mnist', a folder of PNG/JPEG images, or "
              "'torchvision:NAME:ROOT'. [default: the checkpoint's data, else digits]")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Feature net file to write (.safetensors); FID reference statistics are cached beside it.")
@click.option("--checkpoint", default=None, help="Supernet (run folder, file or shipped name) whose image size, "
              "channels and data split to match; FID then fits its samples.")
@click.option("--size", type=int, default=None, help="Image side in pixels [default: 16, or the checkpoint's].")
@click.option("--channels", type=int, default=None, help="1 (grayscale) or 3 (RGB) [default: 1, or the checkpoint's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialisation, shuffling and augmentation.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training split.")
@click.option("--features", type=int, default=64, show_default=True, help="Size of the feature layer FID uses.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def featurenet(data, out, checkpoint, size, channels, seed, epochs, features, progress) -> None:
    """Train the small CNN whose features FID uses (the data's classes if it has labels, else rotation prediction)."""
    from ddsm.config import DataConfig
    from ddsm.data import load_data
    from ddsm.metrics.featurenet import FEATURENET, train_featurenet
    check_out_file(out, kind=FEATURENET)
    data_cfg = DataConfig()
    if checkpoint is not None:
        from ddsm.checkpoint import data_config_for, load_supernet

        unet = load_supernet(checkpoint).config.geometry
        data_cfg = data_config_for(checkpoint)
        size = unet.image_size if size is None else size
        channels = unet.in_channels if channels is None else channels
    if data is not None:
        data_cfg = data_cfg.model_copy(update={"source": data})
    if (size is not None and size <= 0) or (channels is not None and channels <= 0):
        raise DDSMError(f"--size ({size}) and --channels ({channels}) must be positive")
    if channels is not None and channels not in (1, 3):
        raise DDSMError(f"--channels {channels} is not an image channel count; valid: 1 (grayscale) or 3 (RGB)")
    check_seed(seed)
    if size is not None and size > MAX_IMAGE_SIDE:
        raise DDSMError(f"--size {size} is larger than the largest image side, {MAX_IMAGE_SIDE}; use 1..{MAX_IMAGE_SIDE}")
    images = load_data(data_cfg, size or 16, channels or 1)
    t0 = time.perf_counter()
    net = train_featurenet(images, seed=seed, epochs=epochs, num_features=features, progress=progress)
    net.save(out)
    acc = "n/a" if net.holdout_accuracy is None else f"{net.holdout_accuracy:.3f}"
    click.echo(f"feature net ({net.config.task} task, {features} features, held-out accuracy {acc}) for dataset "
               f"{images.name} {images.fingerprint()} in {time.perf_counter() - t0:.0f} s -> {out}")



@main.command()
@click.option("--teacher", default=None,
              help="Teacher supernet: run folder, .safetensors file or shipped name ('digits') [--resume: the run's].")
@click.option("--steps", type=int, default=None, help="K, the student's sampling steps (1..the teacher's timesteps).")
@click.option("--spacing", type=click.Choice(["linspace", "leading"]), default=None,
              help="How the student's teacher timesteps phi spread: linspace over 0..T-1, or leading k*(T//K) "
                   "[default: linspace].")
@click.option("--sub-steps", type=int, default=None,
              help="Teacher DDIM steps per student step in the target [default: 4, or the config's].")
@click.option("--prediction", default=None,
              help="What the student outputs: v_prediction (well-conditioned at the noisiest step) or epsilon "
                   "(as the teacher) [default: v_prediction]; recorded in the student's checkpoint.")
@click.option("--guidance-scale", type=float, default=None,
              help="Distil a class-conditional teacher's guided transition at this classifier-free guidance scale "
                   "(Meng et al. 2023): the student then samples unguided, one call per step [default: unguided "
                   "transitions; the student is guided at sampling].")
@click.option("--iters", type=int, default=None, help="Total optimizer steps (overrides train.iters of the config).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML with data/train/distill sections (the model comes from the teacher). Unset keys keep "
                   "their defaults.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder for checkpoints, the resolved config, the metrics log and the student supernet.")
@click.option("--resume", is_flag=True, help="Continue the distillation in --out exactly where it stopped.")
@click.option("--seed", type=int, default=None, help="Seed of every random draw (overrides train.seed).")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with loss, rate and ETA.")
def distill(teacher, steps, spacing, sub_steps, prediction, guidance_scale, iters, config_file, out, resume, seed,
            device, progress) -> None:
    """Distil a K-step slimmable student from a teacher supernet in one fold (SFDDM)."""
    from ddsm.run_configs import distill_run_config
    from ddsm.train import Trainer

    cfg = distill_run_config(out, teacher=teacher, steps=steps, spacing=spacing, sub_steps=sub_steps,
                             config_file=config_file, resume=resume, iters=iters, seed=seed, prediction=prediction,
                             guidance_scale=guidance_scale)
    distiller = Trainer(cfg, out, device=device, progress=progress)
    start = time.perf_counter()
    _run_to_the_end(distiller, resume, f"ddsm distill --out {out} --resume")
    st = cfg.model.student
    guided = "" if st.guidance_scale is None else f", guidance {st.guidance_scale:g} distilled in"
    click.echo(f"distilled a {st.steps}-step {cfg.model.diffusion.prediction_type} student{guided} (phi {list(st.phi)[:6]}{'...' if st.steps > 6 else ''}) in "
               f"{distiller.step} steps ({distiller.train_seconds:.0f} s of training in total, "
               f"{time.perf_counter() - start:.0f} s this run) -> {Path(out) / 'supernet.safetensors'}")
