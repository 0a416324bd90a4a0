"""Where do the Ray processes of a ddsm search and a ddsm sweep listen, and is Ray's token authentication on?

Runs (a) ``ddsm search --runner ray --workers 2`` and (b) ``ddsm sweep`` with
two budgets, each on the smoke space in a fresh folder, and while each runs
lists, every half second, the listening TCP sockets of its process tree
(psutil: the ddsm driver, Ray's GCS, raylet, agents and workers), plus
``ss -ltnp`` where available. Also read while it runs: the Ray processes'
``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN_PATH`` (from ``/proc/PID/environ``),
the token file's mode and the modes of ddsm's private Ray folders.

    python experiments/ray_sockets.py

By hand, while a search runs:  ss -ltnp | grep -E 'gcs_server|raylet|ray::|ddsm|python'

Prints a table (process, address, port, loopback?) and writes
``<out>/ray-sockets.json`` atomically; exits 1 if any socket listens on a
non-loopback address or token authentication was off.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
import psutil

from ddsm.io import write_json
from ddsm.search.ray_runner import private_ray_base

HAND_COMMAND = "ss -ltnp | grep -E 'gcs_server|raylet|ray::|ddsm|python'"


def loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(a, "ipv4_mapped", None) or a).is_loopback


def tree(root: psutil.Process) -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        return {}


def name_of(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
        name = p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if name.startswith("ray::") or name in ("gcs_server", "raylet"):
        return name
    return " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd[:3])) if cmd else name


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def watch(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; every 0.5 s, record the listening sockets of its process tree and how Ray is set up."""
    sockets: dict[tuple, dict] = {}
    auth: dict[int, dict] = {}
    folders: dict[str, str] = {}
    ss_lines: set[str] = set()
    ss = shutil.which("ss")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            procs = tree(root)
            for c in psutil.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.pid in procs:
                    key = (c.pid, c.laddr.ip, c.laddr.port)
                    if key not in sockets:
                        sockets[key] = {"process": name_of(procs[c.pid]), "pid": c.pid, "address": c.laddr.ip,
                                        "port": c.laddr.port, "loopback": loopback(c.laddr.ip)}
            for pid, p in procs.items():
                if pid not in auth and name_of(p) in ("gcs_server", "raylet"):
                    env = environ(pid)
                    path = env.get("RAY_AUTH_TOKEN_PATH")
                    mode = oct(stat.S_IMODE(os.stat(path).st_mode)) if path and os.path.exists(path) else None
                    auth[pid] = {"process": name_of(p), "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE"),
                                 "RAY_AUTH_TOKEN_PATH": path, "token_file_mode": mode}
            base = private_ray_base()
            folders.setdefault(str(base), oct(stat.S_IMODE(base.stat().st_mode)))
            for d in base.glob(f"{proc.pid}-*"):
                for x in [d, *d.glob("session_2*")]:
                    try:
                        folders.setdefault(str(x), oct(stat.S_IMODE(x.stat().st_mode)))
                    except OSError:
                        pass
            if ss and procs:
                out = subprocess.run([ss, "-ltnpH"], capture_output=True, text=True).stdout
                ss_lines.update(" ".join(ln.split()) for ln in out.splitlines()
                                if any(int(m) in procs for m in re.findall(r"pid=(\d+)", ln)))
            time.sleep(0.5)
    left = [str(d) for d in private_ray_base().glob(f"{proc.pid}-*")]
    rows = sorted(sockets.values(), key=lambda r: (r["process"], r["port"]))
    return {"command": " ".join(cmd), "exit_code": proc.returncode, "seconds": time.perf_counter() - t0,
            "listening": len(rows), "non_loopback": sum(not r["loopback"] for r in rows), "sockets": rows,
            "ss": sorted(ss_lines), "auth": list(auth.values()),
            "token_auth_on": bool(auth) and all(a["RAY_AUTH_MODE"] == "token" and a["token_file_mode"] == "0o600"
                                                for a in auth.values()),
            "folder_modes": folders, "folders_left_after_exit": left}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="digits-smoke")
    ap.add_argument("--checkpoint", default="digits")
    ap.add_argument("--work", default=None, help="scratch folder [default: a new temporary one]")
    ap.add_argument("--out", default="experiments/results", help="where ray-sockets.json goes")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="ddsm-ray-sockets-"))
    work.mkdir(parents=True, exist_ok=True)
    ddsm = str(Path(sys.executable).with_name("ddsm"))
    runs = {
        "search": [ddsm, "search", "--runner", "ray", "--workers", "2", "--space", args.space,
                   "--checkpoint", args.checkpoint, "--out", str(work / "search"), "--no-progress"],
        "sweep": [ddsm, "sweep", "--space", args.space, "--budget", "0.5", "--budget", "0.7",
                  "--checkpoint", args.checkpoint, "--out", str(work / "sweep")],
    }
    results = {}
    for name, cmd in runs.items():
        print(f"$ {' '.join(cmd)}", flush=True)
        results[name] = watch(cmd, work / f"{name}.log")
        r = results[name]
        print(pd.DataFrame(r["sockets"], columns=["process", "pid", "address", "port", "loopback"])
              .to_string(index=False))
        print(f"{name}: exit {r['exit_code']} in {r['seconds']:.0f} s; {r['listening']} listening sockets, "
              f"{r['non_loopback']} not on loopback; token auth on: {r['token_auth_on']}; "
              f"folders: {r['folder_modes']}; left after exit: {r['folders_left_after_exit']}\n", flush=True)
        for line in r["ss"]:
            print("  ss:", line)
    summary = {"work": str(work), "hand_command": HAND_COMMAND, "ray": ray.__version__,
               "listening": sum(r["listening"] for r in results.values()),
               "non_loopback": sum(r["non_loopback"] for r in results.values()),
               "token_auth_on": all(r["token_auth_on"] for r in results.values()),
               "all_exit_zero": all(r["exit_code"] == 0 for r in results.values()), "runs": results}
    write_json(Path(args.out) / "ray-sockets.json", summary)
    print(f"total: {summary['listening']} listening sockets, {summary['non_loopback']} not on loopback; "
          f"token auth on: {summary['token_auth_on']}; -> {Path(args.out) / 'ray-sockets.json'}")
    ok = summary["non_loopback"] == 0 and summary["token_auth_on"] and summary["all_exit_zero"]
    return 0 if ok else 1


if __name__ == "__main__":
    from _script import run

    run(main)
