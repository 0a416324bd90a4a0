"""Timings on one CUDA GPU, every section guarded: a failure is recorded in the JSON and the next section runs.

Sections (each written to the JSON as soon as it ends, so a run cut short by
``timeout`` keeps what it finished):

* ``env``: torch, CUDA, the device, TF32 settings, the pytest result handed over by gpu_check.sh;
* ``cuda_vs_cpu``: max abs difference of CUDA against CPU DDIM samples on the same seeds, with the
  backend defaults (TF32) and with TF32 off: the evidence for tests/test_cuda.py's tolerances;
* ``sampling``: per width, DDIM ``--steps`` steps with ``ddsm.generate`` on the shipped 'digits'
  supernet at each batch in ``--batches`` (one batch of that many samples per timed call, widths timed
  round-robin, median of ``--repeats``), against the width's share of full-width MACs
  (``ddsm.CostModel.count``), as experiments/bench_sampling_speed.py measures;
* ``train``: ``Trainer.train_step`` of the shipped recipe (experiments/configs/digits-reference.yaml,
  ``amp: auto``, so mixed precision on CUDA) on the sandwich widths, interleaved with the same step with
  AMP off, median of ``--train-steps`` after ``--warmup`` steps;
* ``search``: evaluations per second of a tiny search's evaluations (``--candidates`` digits-smoke
  genomes in chunks of 4, proxy quality, cache off) on the serial runner against a Ray runner with one
  actor given the GPU (``gpus_per_worker=1``), start-up timed apart, ``--rounds`` alternating rounds
  (helpers shared with experiments/bench_ray_overhead.py).

    .venv/bin/python experiments/gpu_check.py --out $OUT/gpu_check.json

Without CUDA it refuses (exit 3, the reason in the JSON) unless ``DDSM_GPU_CHECK_ALLOW_CPU=1``: then it
is a CPU dry run of the same code with small sizes (``device: cpu``, ``dry_run: true``): it shows the
timing code works end to end and is not a GPU result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from ddsm.device import tf32

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_ray_overhead, run from anywhere

from ddsm.io import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "experiments" / "configs" / "digits-reference.yaml"
#: full sizes on a GPU; small ones for the CPU dry run
GPU_DEFAULTS = dict(batches=[256, 1024], steps=20, repeats=5, train_steps=10, warmup=3, candidates=24, rounds=3,
                    num_samples=None, diff_seeds=64)
CPU_DEFAULTS = dict(batches=[8, 16], steps=20, repeats=2, train_steps=2, warmup=1, candidates=8, rounds=1,
                    num_samples=8, diff_seeds=8)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ddim(net, steps: int):
    from ddsm import NoiseSchedule, SamplerConfig, make_sampler

    return make_sampler(NoiseSchedule(net.config.diffusion), SamplerConfig(kind="ddim", steps=steps))


# -- sections ------------------------------------------------------------------------


def section_env(args, device: str) -> dict:
    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                           "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                           "python": platform.python_version(), "cores": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "loadavg": list(os.getloadavg()),
                           "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu_name=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count(),
                   capability=f"{p.major}.{p.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:
        out["ray"] = None
    if args.pytest_rc is not None:
        out["pytest_cuda_rc"] = args.pytest_rc
    if args.pytest_log is not None and Path(args.pytest_log).is_file():
        lines = [ln for ln in Path(args.pytest_log).read_text(errors="replace").splitlines() if ln.strip()]
        out["pytest_cuda_summary"] = lines[-1] if lines else ""
        out["pytest_cuda_failed"] = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20]
    return out


def section_cuda_vs_cpu(args, device: str, deadline: float) -> dict:
    if not device.startswith("cuda"):
        return {"skipped": "device is not cuda"}
    from ddsm import generate, load_supernet

    nets = {"cpu": load_supernet("digits", device="cpu"), "cuda": load_supernet("digits", device=device)}
    seeds = list(range(args.diff_seeds))
    rows = []
    for w in nets["cpu"].config.unet.widths:
        if time.monotonic() > deadline:
            return {"rows": rows, "truncated": True}
        ref = generate(nets["cpu"].model, ddim(nets["cpu"], args.steps), w, seeds)
        row = {"width": w}
        for name, on in (("tf32_default", None), ("tf32_off", False)):
            ctx = contextlib.nullcontext() if on is None else tf32(on)
            with ctx:
                x = generate(nets["cuda"].model, ddim(nets["cuda"], args.steps), w, seeds)
            d = (x - ref).abs()
            row[f"max_abs_{name}"], row[f"mean_abs_{name}"] = float(d.max()), float(d.mean())
        rows.append(row)
    return {"seeds": len(seeds), "steps": args.steps, "units": "[-1, 1] image units", "rows": rows}


def section_sampling(args, device: str, deadline: float) -> dict:
    from ddsm import CostModel, generate, load_supernet

    net = load_supernet("digits", device=device)
    sampler = ddim(net, args.steps)
    widths = list(net.config.unet.widths)
    costs = CostModel.count(net, widths)
    macs = {w: costs.call(w) for w in widths}
    generate(net.model, sampler, widths[-1], list(range(8)), batch_size=8)  # warm-up: allocator, kernels
    out: dict[str, Any] = {"steps": args.steps, "repeats": args.repeats, "batches": {}, "truncated": False}
    for batch in args.batches:
        seeds = list(range(batch))
        for w in widths:  # one untimed call per width and batch: cuDNN picks its algorithms for this shape
            generate(net.model, sampler, w, seeds[: min(batch, 64)], batch_size=batch)
        times: dict[float, list[float]] = {w: [] for w in widths}
        for _ in range(args.repeats):
            if time.monotonic() > deadline and all(times.values()):
                out["truncated"] = True
                break
            for w in widths:
                sync(device)
                t0 = time.perf_counter()
                generate(net.model, sampler, w, seeds, batch_size=batch)
                sync(device)
                times[w].append(time.perf_counter() - t0)
        full_t = statistics.median(times[widths[-1]])
        out["batches"][str(batch)] = [
            {"width": w, "macs_per_image": macs[w], "mac_share": macs[w] / macs[widths[-1]],
             "sample_s": statistics.median(times[w]), "min_s": min(times[w]), "repeats": len(times[w]),
             "images_per_s": batch / statistics.median(times[w]),
             "time_share": statistics.median(times[w]) / full_t,
             "time_share/mac_share": statistics.median(times[w]) / full_t / (macs[w] / macs[widths[-1]])}
            for w in widths]
    return out


def section_train(args, device: str, deadline: float) -> dict:
    from ddsm import Trainer, load_run_config
    from ddsm.train import sandwich_widths

    cfg = load_run_config(RECIPE)
    out: dict[str, Any] = {"config": str(RECIPE.relative_to(ROOT)), "amp": cfg.train.amp,
                           "batch_size": cfg.train.batch_size, "n_random_widths": cfg.train.n_random_widths}
    with tempfile.TemporaryDirectory() as tmp:
        amp = Trainer(cfg, Path(tmp) / "amp", device=device, progress=False)
        off = Trainer(load_run_config(RECIPE, **{"train.amp": "off"}), Path(tmp) / "off", device=device, progress=False)
        out["amp_dtype"] = str(amp.amp_dtype).replace("torch.", "") if amp.amp_dtype is not None else "off"
        times: dict[str, list[float]] = {"sandwich, amp per config": [], "sandwich, amp off": []}
        losses: list[dict] = []
        for i in range(args.warmup + args.train_steps):
            if i >= args.warmup + 1 and time.monotonic() > deadline:
                out["truncated"] = True
                break
            for name, tr in (("sandwich, amp per config", amp), ("sandwich, amp off", off)):
                widths = sandwich_widths(cfg.model.unet.widths, cfg.train.n_random_widths, tr.gen)
                sync(device)
                t0 = time.perf_counter()
                loss = tr.train_step(widths=widths)
                sync(device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
                if tr is amp:
                    losses.append(loss)
    out["steps"] = [{"step": k, "median_s": statistics.median(v), "min_s": min(v), "repeats": len(v)}
                    for k, v in times.items() if v]
    out["all_losses_finite"] = all(all(map(lambda x: x == x and abs(x) != float("inf"), d.values())) for d in losses)
    out["last_losses"] = losses[-1] if losses else None
    return out


def section_search(args, device: str, deadline: float) -> dict:
    import bench_ray_overhead as b

    space = b.bench_space(num_samples=args.num_samples)
    factory = b.bench_factory(space)
    genomes = b.candidate_genomes(space, args.candidates)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out: dict[str, Any] = {"candidates": len(genomes), "chunk_size": 4, "evaluator": space.evaluator.model_dump(),
                           "sampler": space.sampler.model_dump(), "torch_threads_serial": torch.get_num_threads()}
    serial, out["startup_serial"] = b.serial_startup(factory, space, device)
    gpu = device.startswith("cuda")
    runner, out["startup_ray"] = b.ray_startup(factory, space, num_cpus=cores, gpus_per_worker=1 if gpu else 0,
                                               num_gpus=1 if gpu else None)
    rounds = []
    try:
        for i in range(args.rounds):
            if i and time.monotonic() > deadline:
                out["truncated"] = True
                break
            for kind in (("serial", "ray") if i % 2 == 0 else ("ray", "serial")):
                res = b.timed_round(serial if kind == "serial" else runner, genomes, factory.quality)
                rounds.append({"round": i, "runner": kind, **res})
    finally:
        runner.close()
    q = {k: next(r["quality"] for r in rounds if r["runner"] == k) for k in ("serial", "ray")}
    out["max_abs_quality_diff_serial_vs_ray"] = max(abs(a - c) for a, c in zip(q["serial"], q["ray"]))
    out["rounds"] = [{k: v for k, v in r.items() if k != "quality"} for r in rounds]
    out["summary"] = b.summarise(rounds, len(genomes))
    return out


SECTIONS: list[tuple[str, Callable, float]] = [  # name, function, share of the time budget
    ("cuda_vs_cpu", section_cuda_vs_cpu, 0.10),
    ("sampling", section_sampling, 0.30),
    ("train", section_train, 0.15),
    ("search", section_search, 0.35),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default: $OUT/gpu_check.json, else experiments/results/gpu_check.json)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="soft time budget of all sections together")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--train-steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--candidates", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--num-samples", type=int)
    ap.add_argument("--diff-seeds", type=int)
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in SECTIONS], help="run only these sections")
    ap.add_argument("--pytest-rc", type=int, default=None, help="(from gpu_check.sh) exit status of the cuda tests")
    ap.add_argument("--pytest-log", type=Path, default=None, help="(from gpu_check.sh) their log")
    args = ap.parse_args(argv)
    out_path = args.out or (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                            else ROOT / "experiments" / "results" / "gpu_check.json")

    cuda = torch.cuda.is_available()
    allow_cpu = os.environ.get("DDSM_GPU_CHECK_ALLOW_CPU") == "1"
    device = "cuda" if cuda else "cpu"
    defaults = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    doc: dict[str, Any] = {"device": device, "dry_run": not cuda, "status": "running", "started_unix": time.time(),
                           "command": " ".join([sys.executable, *sys.argv]),
                           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           "sections": {}}
    if not cuda:
        doc["note"] = ("CPU dry run (DDSM_GPU_CHECK_ALLOW_CPU=1) with small sizes: it shows the timing code runs "
                       "end to end; these numbers are NOT GPU results")
    doc["sections"]["env"] = _guarded(section_env, args, device)
    write_json(out_path, doc)
    if not cuda and not allow_cpu:
        doc["status"] = "refused"
        doc["error"] = "torch.cuda.is_available() is False; set DDSM_GPU_CHECK_ALLOW_CPU=1 for a CPU dry run"
        write_json(out_path, doc)
        print(f"Error: {doc['error']}", file=sys.stderr)
        return 3
    t_start = time.monotonic()
    for name, fn, share in SECTIONS:
        if args.only and name not in args.only:
            continue
        deadline = time.monotonic() + share * args.budget_s
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        res = _guarded(fn, args, device, deadline)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        doc["sections"][name] = res
        write_json(out_path, doc)  # after every section: a run cut short keeps what it finished
        print(f"[gpu_check] {name}: {'ERROR ' + res['error'] if 'error' in res else 'ok'} ({res['seconds']:.1f} s)",
              flush=True)
    failed = [k for k, v in doc["sections"].items() if "error" in v]
    doc["status"] = "done" if not failed else "done with errors"
    doc["failed_sections"] = failed
    doc["wall_s"] = round(time.monotonic() - t_start, 3)
    doc["loadavg_end"] = list(os.getloadavg())
    write_json(out_path, doc)
    print(summary(doc))
    print(f"[gpu_check] wrote {out_path}")
    return 1 if failed else 0


def _guarded(fn: Callable, *args) -> dict:
    """Run one section; an exception becomes ``{'error': ..., 'traceback': ...}`` and the script goes on."""
    try:
        return fn(*args)
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt/SystemExit of a section are recorded too
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "traceback": traceback.format_exc().splitlines()[-15:]}


def summary(doc: dict) -> str:
    """A few lines of the main numbers."""
    s, lines = doc["sections"], [f"device {doc['device']}" + (" (CPU DRY RUN, not a GPU result)" if doc["dry_run"] else "")]
    for b, rows in s.get("sampling", {}).get("batches", {}).items():
        lines.append(f"sampling batch {b}: " + ", ".join(
            f"w{r['width']:g} {r['sample_s']:.3f}s (time {r['time_share']:.2f} / MAC {r['mac_share']:.2f})" for r in rows))
    for r in s.get("train", {}).get("steps", []):
        lines.append(f"train {r['step']}: {r['median_s'] * 1000:.1f} ms (amp dtype {s['train'].get('amp_dtype')})")
    sm = s.get("search", {}).get("summary")
    if sm:
        m = sm["median"]
        lines.append(f"search evals/s serial {m['serial']['evals_per_s']:.2f}, ray {m['ray']['evals_per_s']:.2f} "
                     f"(ratio {sm['ratio_ray_over_serial_evals_per_s']:.3f}); ray start-up "
                     f"{s['search']['startup_ray']['total_s']:.1f} s, actor device "
                     f"{s['search']['startup_ray']['actor']['device']}")
    for r in s.get("cuda_vs_cpu", {}).get("rows", []):
        lines.append(f"cuda vs cpu w{r['width']:g}: max abs {r['max_abs_tf32_default']:.2e} (TF32 default), "
                     f"{r['max_abs_tf32_off']:.2e} (TF32 off)")
    for k, v in s.items():
        if "error" in v:
            lines.append(f"section {k} FAILED: {v['error']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
