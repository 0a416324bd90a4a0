"""``ddsm search``, ``export``, ``plot``, ``sweep`` and ``quickstart``: searching schedules and reporting on them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ddsm.cli import _device, main
from ddsm.errors import DDSMError
from ddsm.limits import check_budgets, check_count, check_grid_num, check_sample_memory, check_seed


def _same_runner(runner: str, chunk_size: int) -> str:
    """The flags a resume needs to evaluate as the interrupted run did: the chunk size groups batched evaluations,
    and a batch's float rounding depends on its size."""
    return (" --runner ray" if runner == "ray" else "") + (f" --chunk-size {chunk_size}" if chunk_size != 4 else "")


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for every artifact; rerun with the same folder to resume.")
@click.option("--checkpoint", default="digits", show_default=True,
              help="Supernet to start from: a run folder, a .safetensors file or a shipped name.")
@click.option("--train", is_flag=True, help="Retrain the digits supernet from scratch first (about 80 minutes on 2 cores).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="Search-space YAML, or a shipped name (digits, digits-smoke, digits-progressive) [default: digits].")
@click.option("--runner", type=click.Choice(["serial", "ray"]), default="ray", show_default=True,
              help="Evaluate search candidates in this process, or on a local Ray actor pool.")
@click.option("--workers", type=int, default=None,
              help="Ray actors for the search [default: 2, or 1 on a one-core machine].")
@click.option("--num", type=int, default=500, show_default=True,
              help="Samples per schedule for the verdict (held-out seeds; at least 50).")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def quickstart(out, checkpoint, train, space_file, runner, workers, num, device, progress) -> None:
    """Run the embedded default (digits) end to end: costs, feature net, search, export, plots, verdict."""
    from ddsm.quickstart import run_quickstart

    from ddsm.metrics.verdict import MIN_SAMPLES
    from ddsm.search.runners import check_runner_options, cores

    workers = min(2, cores()) if workers is None else workers
    if num < MIN_SAMPLES:
        raise DDSMError(f"--num must be at least {MIN_SAMPLES} (got {num})")
    check_runner_options(runner, workers=workers, chunk_size=4, address=None, gpus_per_worker=None, device=device)
    t0 = time.perf_counter()
    run_quickstart(out, checkpoint=checkpoint, train=train, device=device, space=space_file, runner=runner,
                   workers=workers, num=num, progress=progress)
    click.echo(f"quickstart finished in {time.perf_counter() - t0:.0f} s")



@main.command()
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="Search-space YAML, or a shipped name such as digits-smoke (see search_spaces/). "
                   "[default with --resume: the search folder's space.json]")
@click.option("--checkpoint", required=True, help="Supernet: run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Search folder: resolved space, evaluation log (the cache), checkpoint, front.csv and front.json.")
@click.option("--resume", is_flag=True, help="Continue the search in --out after its last finished generation.")
@click.option("--runner", type=click.Choice(["serial", "ray"]), default="serial", show_default=True,
              help="Evaluate candidates in this process, or on a pool of Ray actors.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Ray actors; one GPU each when the cluster has GPUs, else the CPU cores split between them.")
@click.option("--address", default=None,
              help="Join the Ray cluster at HOST:PORT (Ray runner only), left as it is: secure it yourself (token "
                   "auth: RAY_AUTH_MODE=token with its token in RAY_AUTH_TOKEN_PATH; a firewall on its ports) "
                   "[default: a private local Ray on 127.0.0.1 with token auth].")
@click.option("--gpus-per-worker", type=float, default=None,
              help="GPUs per Ray actor, e.g. 0.5 to put two actors on a GPU [default: 1 if the cluster has GPUs].")
@click.option("--cost", "cost_file", type=click.Path(dir_okay=False), default=None,
              help="Cost table from `ddsm cost` (needed when the space prices latency) [default: fvcore MACs].")
@click.option("--featurenet", "featurenet_file", type=click.Path(dir_okay=False), default=None,
              help="Feature net file, needed when the space's quality objective is fid.")
@click.option("--chunk-size", type=int, default=4, show_default=True,
              help="Candidates per evaluator call (a batched evaluator shares work inside a call).")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Per generation: best quality under budget, front size, hypervolume, evaluations/s, cache hits.")
def search(space_file, checkpoint, out, resume, runner, workers, address, gpus_per_worker, cost_file, featurenet_file,
           chunk_size, device, progress):
    """Search a network width per sampling step (NSGA-II) under the space's cost budget; writes the Pareto front."""
    from ddsm.search import SearchConfig
    from ddsm.search.loop import saved_fractions
    from ddsm.search.setup import prepare_search

    if space_file is None:
        if not (resume and (Path(out) / "space.json").is_file()):
            raise DDSMError("give --space FILE (or --resume a search folder that holds space.json)")
        space_file = str(Path(out) / "space.json")  # JSON is a subset of YAML
    space = SearchConfig.load(space_file)
    prepared = prepare_search(space, checkpoint, featurenet=featurenet_file, cost_table=cost_file)
    ray_options = {} if gpus_per_worker is None else {"gpus_per_worker": gpus_per_worker}
    for line in prepared.warnings:
        click.echo(line, err=True)
    try:
        res = prepared.run(out, runner=runner, workers=workers, address=address, resume=resume, progress=progress,
                           device=device, chunk_size=chunk_size, ray_options=ray_options)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished generations and every evaluation are saved. Continue with: "
                   f"ddsm search --checkpoint {checkpoint} --out {out} --resume{_same_runner(runner, chunk_size)}",
                   err=True)
        sys.exit(130)
    click.echo(f"{res.generations} generations, {len(res.evaluations)} schedules evaluated ({res.evaluated} this run, "
               f"{res.cached} from the log); front of {len(res.front)} within budget {space.budget:g}, "
               f"hypervolume {res.hypervolume:.4g} -> {Path(out) / 'front.csv'}")
    if space.screen is not None:
        st = res.stages
        per = {k: v["seconds"] / v["candidates"] if v["candidates"] else 0.0 for k, v in st.items()}
        click.echo(f"two-stage evaluation this run: {st['screen']['candidates']} screened by {space.screen.metric} "
                   f"({per['screen']:.2f} worker-s each), {st['judge']['candidates']} judged by "
                   f"{space.objectives.quality} ({per['judge']:.2f} worker-s each)")
    saved = saved_fractions(res.sharing)
    if saved:
        click.echo(f"denoiser evaluations saved by shared prefixes and the trajectory cache: {saved['denoiser_saved']:.1%}"
                   + (f" (the cache alone: {saved['trajectory_cache_saved']:.1%})" if "trajectory_cache_saved" in saved else ""))



@main.command()
@click.argument("search_dir")
@click.option("--checkpoint", required=True, help="The supernet the search ran on (run folder, .safetensors file "
              "or shipped name); checked against the search's fingerprint.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the schedule files, front.csv and front.parquet; must be new, empty or an earlier "
                   "export of the same search.")
@click.option("--budget", "budgets", type=float, multiple=True,
              help="Also write best-under-B.json: the best-quality member with cost share <= B; repeatable. "
                   "A budget no member meets is an error.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed sampling runs per schedule; the median is kept.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed rounds over every schedule first.")
@click.option("--batch-size", "--num", "num", type=int, default=None,
              help="Images sampled (one batch) per timed run: the batch you will sample with, recorded in every "
                   "file [default: a latency search's batch, else 64 as `ddsm sample`].")
@click.option("--seed", type=int, default=0, show_default=True, help="Timed runs sample seeds SEED..SEED+BATCH-1.")
@click.option("--verdict", "verdict_num", type=int, default=0, show_default=True,
              help="Also judge every member against full width on this many held-out seeds (0: off; at least 50).")
@click.option("--verdict-seed", type=int, default=10_000, show_default=True,
              help="First verdict seed; must not overlap the search's seeds.")
@click.option("--featurenet", "featurenet_file", default="auto", show_default=True,
              help="Feature net of the verdict: a file, a shipped name ('digits', 'mnist'), or auto: the shipped one "
                   "of the checkpoint's built-in data.")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar while timing.")
def export(search_dir, checkpoint, out, budgets, repeats, warmup, num, seed, verdict_num, verdict_seed,
           featurenet_file, device, progress) -> None:
    """Write each Pareto-front member of SEARCH_DIR as a schedule file (cheapest first) with measured speed-ups."""
    from ddsm.checkpoint import load_supernet
    from ddsm.device import resolve_device
    from ddsm.metrics.featurenet import featurenet_for
    from ddsm.metrics.verdict import VerdictSettings
    from ddsm.report import export_front, format_table
    from ddsm.report.export import timing_batch
    from ddsm.search.folder import load_search

    check_budgets(budgets)
    if num is not None:
        check_count(num, flag="--batch-size", what="images per timed run")
    check_seed(seed, num or 1)
    if verdict_num:
        check_seed(verdict_seed, verdict_num, flag="--verdict-seed")
    run = load_search(search_dir)
    num = timing_batch(run, num)
    check_seed(seed, num)
    settings = None if verdict_num == 0 else VerdictSettings(num=verdict_num, seed=verdict_seed,
                                                             teacher_num=max(2 * verdict_num, 1000))
    net = load_supernet(checkpoint, device=resolve_device(device))
    for n, flag in ((num, "--batch-size"), (verdict_num, "--verdict")):
        if n:
            check_sample_memory(n, net.config.geometry, flag=flag)
    res = export_front(run, net, out, budgets=budgets, repeats=repeats, warmup=warmup, num=num, seed=seed,
                       progress=progress, verdict=settings,
                       featurenet=featurenet_for(featurenet_file, checkpoint) if settings is not None else None)
    click.echo(format_table(res.table, quality=run.quality))
    if settings is not None:
        flagged = [c[len("verdict_"):-len("_differs_from_full")] for c in res.table.columns
                   if c.endswith("_differs_from_full")]
        for r in res.table.to_dict(orient="records"):
            differs = [m for m in flagged if r[f"verdict_{m}_differs_from_full"]]
            click.echo(f"#{r['rank']}: " + (f"differs from full width in {', '.join(differs)}" if differs else
                                            "no significant difference from full width in any metric"))
        click.echo(f"verdict on seeds {settings.seed}..{settings.seed + verdict_num - 1} (search seeds "
                   f"{', '.join(f'{r.start}..{r.stop - 1}' for r in run.space.search_seeds)}); "
                   "columns verdict_* in front.csv")
    click.echo(f"full width: {res.full_seconds:.3f} s for {num} images (median of {repeats}, round-robin, "
               f"{next(net.model.parameters()).device}); speed-up = full-width time / schedule time")
    for b, rank in res.budgets.items():
        click.echo(f"best under {b:g}: #{rank} -> {Path(out) / f'best-under-{b:g}.json'}")
    click.echo(f"{len(res.table)} schedules -> {Path(out)} (front.csv, front.parquet, front-NN-shareS.json)")


@main.command()
@click.argument("search_dir")
@click.option("--checkpoint", required=True, help="The supernet the search ran on (run folder, .safetensors file "
              "or shipped name); it samples the grids.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the figures (PNG and SVG); must be new, empty or holding reports of the same search.")
@click.option("--num", type=int, default=16, show_default=True, help="Samples per grid in samples.png.")
@click.option("--seed", type=int, default=0, show_default=True, help="Grids sample seeds SEED..SEED+NUM-1.")
@click.option("--evaluate-missing", is_flag=True,
              help="Score the uniform-width and two-segment schedules the search never evaluated (usually those "
                   "over budget) with the search's own evaluator, for the front plot; the search folder is not changed.")
@click.option("--featurenet", "featurenet_file", type=click.Path(dir_okay=False), default=None,
              help="Feature net file, needed by --evaluate-missing when the search's quality is fid.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="An export of this search made with --verdict N: also draw front-verdict.png, every member's "
                   "difference from full width with its interval.")
@_device
def plot(search_dir, checkpoint, out, num, seed, evaluate_missing, featurenet_file, export_dir, device) -> None:
    """Draw the front, the per-step widths, the sensitivity probes and sample grids of SEARCH_DIR."""
    from ddsm.checkpoint import load_supernet
    from ddsm.device import resolve_device
    from ddsm.report import plot_search
    from ddsm.search.folder import load_search

    check_grid_num(num)
    check_seed(seed, num)
    if featurenet_file is not None:  # checked even when --evaluate-missing does not need it
        from ddsm.metrics.featurenet import FeatureNet

        FeatureNet.load(featurenet_file)
    run = load_search(search_dir)
    net = load_supernet(checkpoint, device=resolve_device(device))
    check_sample_memory(num, net.config.geometry)
    res = plot_search(run, net, out, num=num, seed=seed, evaluate=evaluate_missing, featurenet=featurenet_file,
                      device=device, export=export_dir)
    if evaluate_missing:
        click.echo(f"evaluated {res.evaluated} family schedules missing from the log (not added to it)")
    for line in res.skipped:
        click.echo(f"skipped {line}")
    click.echo(f"{len(res.files)} files -> {res.out}: " + ", ".join(p.name for p in res.files))


@main.command()
@click.argument("search_dir")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The .html file to write; an existing file is replaced only if it is a ddsm report.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="An export of this search: file names, measured seconds, its verdict if made with --verdict N, "
                   "and the checkpoint that samples the grids.")
@click.option("--verdict", "verdict_csv", type=click.Path(dir_okay=False), default=None,
              help="A verdict CSV of this search's schedules (`ddsm verdict --csv`, the quickstart's verdict.csv).")
@click.option("--checkpoint", default=None,
              help="The supernet the search ran on, for the sample grids [default: the --export's].")
@click.option("--samples", "num", type=int, default=16, show_default=True,
              help="Samples per member's grid (0: no grids).")
@click.option("--seed", type=int, default=0, show_default=True, help="Grids sample seeds SEED..SEED+SAMPLES-1.")
@_device
def report(search_dir, out, export_dir, verdict_csv, checkpoint, num, seed, device) -> None:
    """Write one self-contained HTML page (works offline, no server) to inspect SEARCH_DIR: its front and families,
    each member's schedule, samples, verdict and sampling command on hover or click, its progress and sensitivity."""
    from ddsm.checkpoint import load_supernet
    from ddsm.device import resolve_device
    from ddsm.report.html import check_report_out, read_export, write_report
    from ddsm.search.folder import load_search

    if num != 0:  # 0: no grids
        check_grid_num(num, flag="--samples")
        check_seed(seed, num)
    check_report_out(out)
    t0 = time.perf_counter()
    run = load_search(search_dir)
    if checkpoint is None and export_dir is not None and num:
        checkpoint = read_export(run, export_dir)[0].get("checkpoint")
    net = None
    if checkpoint is not None and num:
        net = load_supernet(checkpoint, device=resolve_device(device))
        check_sample_memory(num, net.config.geometry)
    path = write_report(run, out, export=export_dir, verdict=verdict_csv, net=net, checkpoint=checkpoint, num=num,
                        seed=seed)
    click.echo(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.0f} s)"
               + ("" if net is not None else "; no sample grids (give --checkpoint or --export)"))


@main.command()
@click.option("--space", "space_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Search-space YAML or shipped name; repeat for several spaces.")
@click.option("--budget", "budgets", multiple=True, type=float, required=True,
              help="Cost budget (share of full width) replacing the space's; repeat for several.")
@click.option("--seed", "seeds", multiple=True, type=int, default=(0,), show_default=True,
              help="Search seed replacing the space's; repeat for several.")
@click.option("--checkpoint", required=True, help="Supernet: run folder, .safetensors file, or a shipped name ('digits').")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Sweep folder: sweep.json, runs/<trial>/ (one search folder each), tune/, results.csv/.parquet.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in --out (Tuner.restore; searches resume).")
@click.option("--address", default=None,
              help="Join the Ray cluster at HOST:PORT, left as it is: secure it yourself (token auth: "
                   "RAY_AUTH_MODE=token with its token in RAY_AUTH_TOKEN_PATH; a firewall on its ports) "
                   "[default: a private local Ray on 127.0.0.1 with token auth].")
@click.option("--cpus-per-trial", type=float, default=1.0, show_default=True, help="CPUs Ray Tune gives each search.")
@click.option("--featurenet", "featurenet_file", type=click.Path(dir_okay=False), default=None,
              help="Feature net file, needed when a space's quality objective is fid.")
@click.option("--cost", "cost_file", type=click.Path(dir_okay=False), default=None,
              help="Cost table from `ddsm cost` (needed when a space prices latency).")
def sweep(space_files, budgets, seeds, checkpoint, out, resume, address, cpus_per_trial, featurenet_file, cost_file):
    """Run searches for every space x budget x seed as Ray Tune trials; writes a combined results table."""
    import pandas as pd

    from ddsm.sweep import run_sweep

    table = run_sweep(space_files, budgets=budgets, seeds=seeds, checkpoint=checkpoint, out_dir=out, resume=resume,
                      address=address, cpus_per_trial=cpus_per_trial, featurenet=featurenet_file, cost=cost_file)
    with pd.option_context("display.width", 140, "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        click.echo(table.drop(columns=["run"]).to_string(index=False))
    click.echo(f"-> {Path(out) / 'results.csv'} (one search folder per trial under {Path(out) / 'runs'})")


@main.command("search-steps")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="Joint-space YAML: base width space, teacher, students (e.g. digits-steps) "
                   "[default with --resume: the folder's joint.json].")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Joint search folder: joint.json, models/<name>/ (one search folder per model), front.csv/json.")
@click.option("--resume", is_flag=True, help="Continue every model's search in --out.")
@click.option("--runner", type=click.Choice(["serial", "ray"]), default="serial", show_default=True,
              help="Evaluate candidates in this process, or on a pool of local Ray actors.")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray actors.")
@click.option("--chunk-size", type=int, default=4, show_default=True, help="Candidates per evaluator call.")
@_device
@click.option("--progress/--no-progress", default=True, show_default=True, help="Per-generation progress.")
def search_steps(space_file, out, resume, runner, workers, chunk_size, device, progress):
    """Search the number of steps and a width per step together: the teacher and its distilled students."""
    from ddsm.search.joint import JointSpace, prepare_joint, run_joint, saved_joint

    if space_file is None:
        if not (resume and (Path(out) / "joint.json").is_file()):
            raise DDSMError("give --space FILE (or --resume a joint search folder that holds joint.json)")
        joint = saved_joint(out)
    else:
        joint = JointSpace.load(space_file)
    arms = prepare_joint(joint)
    try:
        res = run_joint(joint, arms, out, resume=resume, runner=runner, workers=workers, chunk_size=chunk_size,
                        device=device, progress=progress)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished generations are saved. Continue with: ddsm search-steps --out {out} "
                   f"--resume{_same_runner(runner, chunk_size)}", err=True)
        sys.exit(130)
    for name, r in res.results.items():
        click.echo(f"{name}: {len(r.evaluations)} schedules evaluated, front of {len(r.front)}")
    counts = res.front["model"].value_counts().to_dict()
    click.echo(f"joint front of {len(res.front)} ({', '.join(f'{k} {v}' for k, v in counts.items())}), hypervolume "
               f"{res.hypervolume:.4g} -> {Path(out) / 'front.csv'}")


@main.command("export-steps")
@click.argument("joint_dir")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Report folder: one schedule file per member, front.csv, front/widths figures, verdict.csv.")
@click.option("--verdict", "verdict_num", type=int, default=0, show_default=True,
              help="Also judge every member against the teacher's full width on this many held-out seeds (0: off).")
@click.option("--verdict-seed", type=int, default=10_000, show_default=True, help="First verdict seed.")
@click.option("--featurenet", "featurenet_file", default="digits", show_default=True,
              help="Feature net of the verdict: a file or a shipped name.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show sampling progress.")
def export_steps(joint_dir, out, verdict_num, verdict_seed, featurenet_file, progress) -> None:
    """Write a joint front's schedules (each for its own model), figures and, optionally, a verdict."""
    import pandas as pd

    from ddsm.metrics.verdict import MIN_SAMPLES, VerdictSettings
    from ddsm.report.joint import export_joint
    from ddsm.search.joint import load_joint

    if verdict_num:
        if verdict_num < MIN_SAMPLES:
            raise DDSMError(f"--verdict {verdict_num} is too few samples for an interval; use 0 or at least {MIN_SAMPLES}")
        check_seed(verdict_seed, verdict_num, flag="--verdict-seed")
    run = load_joint(joint_dir)
    settings = None if verdict_num == 0 else VerdictSettings(num=verdict_num, seed=verdict_seed,
                                                             teacher_num=max(2 * verdict_num, 1000))
    table = export_joint(run, out, verdict=settings, featurenet=featurenet_file, progress=progress)
    cols = ["rank", "model", "steps", "share", "proxy"] + [c for c in ("verdict_fid", "verdict_fid_vs_full",
                                                                        "verdict_fid_differs_from_full") if c in table]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        click.echo(table[cols].to_string(index=False))
    click.echo(f"{len(table)} schedules -> {Path(out)} (front.csv, front-NN-<model>-shareS.json, front.png, widths.png"
               + (", verdict.csv)" if settings else ")"))
