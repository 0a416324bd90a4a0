"""Do Ctrl-C and SIGKILL in the middle of ``ddsm train``, then ``--resume``, end exactly like an uninterrupted run?

Runs of ``ddsm train`` (subprocesses, the real CLI), a small recipe on the
built-in digits:

(a) uninterrupted, into ``<work>/full``;
(b) SIGINT (what Ctrl-C sends) once the run's metrics log passes step
    ``--at``, then ``--resume``;
(c) SIGKILL of the whole process group at the same point (no handler, no
    flush: the last checkpoint is ``--checkpoint-every`` steps back, so the
    resume replays steps), then ``--resume``;
(d) two ``ddsm train`` on one folder at once: the second must be refused with
    one line naming the first (the run-folder lock).

Compares every tensor of ``checkpoint.safetensors`` (weights, EMA, optimizer
state, generator state) and of ``supernet.safetensors`` bit for bit against
(a), and the metrics logs row for row (timing columns aside).

    python experiments/train_interrupt.py --work /tmp/train-interrupt

Writes ``experiments/results/train_interrupt.json`` (or ``--out``) atomically;
exits 1 if anything differs. About two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ddsm.io import write_json

RECIPE = {  # small enough for minutes on 2 cores; every part of a real step (sandwich, distillation, EMA) runs
    "model": {"unet": {"image_size": 8, "base_channels": 8, "channel_mults": [1, 2], "group_channels": 2,
                       "attn_resolutions": [4]}, "diffusion": {"num_timesteps": 50}},
    "train": {"iters": 150, "batch_size": 8, "checkpoint_every": 25, "seed": 3},
}


def ddsm_command() -> list[str]:
    exe = Path(sys.executable).with_name("ddsm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ddsm.cli"]


def train(out: Path, config: Path, *, resume: bool = False) -> list[str]:
    return [*ddsm_command(), "train", "--config", str(config), "--out", str(out), "--no-progress",
            *(["--resume"] if resume else [])]


def logged_step(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(ln)["step"] for ln in lines if ln.strip()), default=0)
    except (OSError, ValueError):
        return 0


def interrupted(out: Path, config: Path, sig: int, at: int) -> dict:
    """Start a run, send ``sig`` once its log passes step ``at``, then resume it; what happened."""
    print(f"$ {shlex.join(train(out, config))}  # {signal.Signals(sig).name} after step {at}", flush=True)
    p = subprocess.Popen(train(out, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    while logged_step(out) < at:
        if p.poll() is not None:
            sys.exit(f"the run ended before step {at}:\n{p.stdout.read()}")
        time.sleep(0.05)
    os.killpg(p.pid, sig) if sig == signal.SIGKILL else p.send_signal(sig)
    output, _ = p.communicate()
    ckpt = json.loads(_header(out / "checkpoint.safetensors"))["step"]
    print(f"  exit {p.returncode}, checkpoint at step {ckpt}: {output.strip().splitlines()[-1] if output.strip() else ''}")
    r = subprocess.run(train(out, config, resume=True), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"resume failed:\n{r.stdout}{r.stderr}")
    return {"signal": signal.Signals(sig).name, "sent_after_step": at, "exit_code": p.returncode,
            "checkpoint_step_at_kill": ckpt}


def _header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {})["ddsm"]


def compare(a: Path, b: Path) -> dict:
    """Tensors of both checkpoint files and both supernets that differ, and metrics rows that differ."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for name in ("checkpoint.safetensors", "supernet.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        differ = [k for k in ta if k not in tb or ta[k].shape != tb[k].shape or not torch.equal(ta[k], tb[k])]
        out[name] = {"tensors": len(ta), "differing": len(differ) + len(set(tb) - set(ta))}

    def rows(p: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(ln).items() if k != "train_seconds"}
                for ln in (p / "metrics.jsonl").read_text().splitlines() if ln.strip()]

    ra, rb = rows(a), rows(b)
    out["metrics.jsonl"] = {"rows": len(ra), "differing": sum(x != y for x, y in zip(ra, rb)) + abs(len(ra) - len(rb))}
    return out


def lock_refusal(out: Path, config: Path) -> dict:
    """Start a run, then a second one on the same folder while the first holds it."""
    p = subprocess.Popen(train(out, config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / ".ddsm.lock.json").exists():
        time.sleep(0.05)
    cmd = train(out, config, resume=True)
    print(f"$ {shlex.join(cmd)}  # while pid {p.pid} trains into the same folder", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    p.kill()
    p.wait()
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    print(f"  exit {r.returncode}: {lines}")
    return {"holder_pid": p.pid, "exit_code": r.returncode, "output_lines": lines,
            "refused_naming_holder": r.returncode == 2 and len(lines) == 1 and f"pid {p.pid}" in lines[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None, help="Scratch folder [default: a new temporary folder].")
    ap.add_argument("--at", type=int, default=70, help="Interrupt once the log passes this step.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_interrupt.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ddsm-train-interrupt-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "recipe.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    full = work / "full"
    if not (full / "supernet.safetensors").exists():
        print(f"$ {shlex.join(train(full, config))}", flush=True)
        subprocess.run(train(full, config), check=True, capture_output=True)
    results = {"recipe": RECIPE, "interrupt_after_step": args.at, "runs": {}}
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = work / signal.Signals(sig).name.lower()
        if out.exists():
            shutil.rmtree(out)
        info = interrupted(out, config, sig, args.at)
        info["against_uninterrupted"] = compare(full, out)
        results["runs"][info["signal"]] = info
    locked = work / "locked"
    if locked.exists():
        shutil.rmtree(locked)
    results["second_process"] = lock_refusal(locked, config)
    print(f"\n{'interruption':<10} {'exit':>5} {'ckpt step':>9} {'tensors':>8} {'differ':>7} {'log rows':>9} {'differ':>7}")
    ok = results["second_process"]["refused_naming_holder"]
    for name, r in results["runs"].items():
        c = r["against_uninterrupted"]
        n = c["checkpoint.safetensors"]["tensors"] + c["supernet.safetensors"]["tensors"]
        d = c["checkpoint.safetensors"]["differing"] + c["supernet.safetensors"]["differing"]
        ok &= d == 0 and c["metrics.jsonl"]["differing"] == 0
        print(f"{name:<10} {r['exit_code']:>5} {r['checkpoint_step_at_kill']:>9} {n:>8} {d:>7} "
              f"{c['metrics.jsonl']['rows']:>9} {c['metrics.jsonl']['differing']:>7}")
    print(f"second process on one folder refused naming the holder: {results['second_process']['refused_naming_holder']}")
    results["identical"] = ok
    write_json(args.out, results)
    print(f"-> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    from _script import run

    run(main)
