"""Does a search on a two-node Ray cluster place one actor per node, fall back to CPU, and match the serial search?

Starts a Ray cluster of two nodes on this machine, each declaring 1 CPU and
1 GPU it does not have (the placement path of a GPU cluster, on a CPU box):

    ray start --head --port P --num-cpus 1 --num-gpus 1 --include-dashboard=false \\
        --node-ip-address 127.0.0.1 --temp-dir T1 --block
    ray start --address 127.0.0.1:P --num-cpus 1 --num-gpus 1 --node-ip-address 127.0.0.1 --temp-dir T2 --block

with token authentication on (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``
naming a new random token in ``<work>/auth_token``, mode 0600, for every
process: the nodes, this script and ddsm), then runs
``ddsm search ... --runner ray --workers 2 --address 127.0.0.1:P``
and checks that: both nodes joined; the evaluation log's ``worker`` column
names 2 distinct actors, with the GPU id each got; every actor warned (on
stderr) that it got a GPU id but CUDA is absent and fell back to CPU. Each
actor's node is read from the per-node temp dirs (Ray writes a worker's
logs, named by its pid, on the node that runs it). The cluster is stopped,
the same search runs serially, and ``front.csv`` is compared byte for byte
(and the logs on every column but seconds and worker, exactly).

    python experiments/ray_cluster_search.py
    python experiments/ray_cluster_search.py --port 6391 --work /tmp/ray-cluster

Stopping: the nodes run under ``ray start --block`` in sessions of their own
and are stopped with SIGTERM (Ray's graceful shutdown), then SIGKILL for any
process left in their sessions. Not ``ray stop``: it kills every Ray process
on the machine by name, other people's clusters included.

Prints the commands, a table, and writes ``<out>/ray_cluster_search.json``
atomically; exits 1 if a check fails. Two searches of the smoke space: a few
minutes on 2 free CPU cores.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ddsm.io import read_json, write_json

FALLBACK = "but CUDA is not available; falling back to CPU"
WORKER = re.compile(r"^ray:(?P<actor>actor\d+)@(?P<ip>[^:]+):(?P<pid>\d+)(?:/(?P<gpus>\S+))?$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor prefix of forwarded lines
COMPARED = ["generation", "genome", "widths", "{quality}", "valid", "cost", "share", "constraint"]


def tool(name: str) -> str:
    """A console script of this interpreter's environment (not whatever is first on PATH)."""
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        sys.exit(f"{exe} not found; run this with the project's environment")
    return str(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One ``ray start --block`` in a session of its own, so stopping it touches only its processes."""

    def __init__(self, name: str, cmd: list[str], temp_dir: Path, log: Path, env: dict) -> None:
        self.name, self.cmd, self.temp_dir, self.log = name, cmd, temp_dir, log
        print(f"$ {shlex.join(cmd)} &", flush=True)
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started." not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} node did not start (exit code {self.proc.poll()}); its output:\n"
                                   f"{self.log.read_text()[-3000:]}\nRay logs: {self.temp_dir}/session_latest/logs")
            time.sleep(0.5)

    def stop(self, grace: float = 30.0) -> str:
        """SIGTERM (Ray drains and stops its processes), then SIGKILL to whatever is left in the session."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        how = f"SIGTERM -> exit code {self.proc.poll()}"
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session's id is the ray start's pid
            how += "; SIGKILL to leftovers in its session"
        except ProcessLookupError:
            pass  # nothing left
        self.proc.wait()
        return how

    def worker_logs(self) -> dict[int, str]:
        """What each Ray worker process this node ran wrote, by pid (Ray names its log files by pid)."""
        logs: dict[int, str] = {}
        for f in sorted(self.temp_dir.glob("session_*/logs/worker-*")):
            if m := re.search(r"-(\d+)\.(?:out|err)$", f.name):
                logs[int(m[1])] = logs.get(int(m[1]), "") + f.read_text(errors="replace")
        return logs


def cluster_nodes(address: str, want: int, timeout: float) -> list[dict]:
    """The alive nodes, once ``want`` of them have registered (or the timeout has passed)."""
    import ray

    ray.init(address=address, logging_level="error", log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            alive = [n for n in ray.nodes() if n["Alive"]]
            if len(alive) >= want or time.monotonic() > deadline:
                return [{"node_id": n["NodeID"][:12], "ip": n["NodeManagerAddress"],
                         "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0)} for n in alive]
            time.sleep(1)
    finally:
        ray.shutdown()  # disconnects this driver; the cluster stays up


def run(cmd: list[str], out: Path, err: Path, env: dict) -> tuple[int, float]:
    print(f"$ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        rc = subprocess.run(cmd, stdout=fo, stderr=fe, env=env).returncode
    return rc, time.perf_counter() - t0


def compare(a: Path, b: Path) -> tuple[bool, bool]:
    """(front.csv identical byte for byte, evaluation logs identical on the compared columns)."""
    fronts = (a / "front.csv").read_bytes() == (b / "front.csv").read_bytes()
    quality = read_json(a / "space.json", "search space")["objectives"]["quality"]
    cols = [quality if c == "{quality}" else c for c in COMPARED]
    la, lb = pd.read_parquet(a / "evaluations.parquet"), pd.read_parquet(b / "evaluations.parquet")
    try:
        pd.testing.assert_frame_equal(la[cols], lb[cols], check_exact=True)
        logs = True
    except AssertionError:
        logs = False
    return fronts, logs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/digits-smoke.yaml")
    p.add_argument("--checkpoint", default="digits")
    p.add_argument("--out", default="experiments/results", help="where ray_cluster_search.json goes")
    p.add_argument("--work", default=None, help="scratch folder for the two searches [default: a new temporary one]")
    p.add_argument("--port", type=int, default=0, help="the head's GCS port [default: a free one]")
    p.add_argument("--start-timeout", type=float, default=180.0,
                   help="seconds to wait for each node (Ray starts slowly on a busy machine)")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ddsm-ray-cluster-"))
    cluster_out, serial_out = work / "cluster", work / "serial"
    for d in (cluster_out, serial_out):
        if d.exists():
            p.error(f"{d} already exists; give another --work (these runs must start from scratch)")
    work.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    address = f"127.0.0.1:{port}"
    # Read by Ray when it starts, in every process: token authentication on, with a token only this user can
    # read (0600, in the work folder; ~/.ray/auth_token is left alone), no usage reporting.
    token = work / "auth_token"
    if not token.exists():
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED")})
    ray, ddsm = tool("ray"), tool("ddsm")
    # Short paths under /tmp: Ray puts Unix sockets in them, whose paths are limited to ~107 bytes.
    temps = {name: Path(tempfile.mkdtemp(prefix=f"ddsm-ray{name[0]}-")) for name in ("head", "worker")}

    search = [ddsm, "search", "--space", args.space, "--checkpoint", args.checkpoint]
    cluster_cmd = [*search, "--out", str(cluster_out), "--runner", "ray", "--workers", "2", "--address", address,
                   "--no-progress"]
    serial_cmd = [*search, "--out", str(serial_out), "--no-progress"]
    node_cmds = {
        "head": [ray, "start", "--head", "--port", str(port), "--num-cpus", "1", "--num-gpus", "1",
                 "--include-dashboard=false", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temps["head"]),
                 "--disable-usage-stats", "--block"],
        "worker": [ray, "start", "--address", address, "--num-cpus", "1", "--num-gpus", "1",
                   "--node-ip-address", "127.0.0.1", "--temp-dir", str(temps["worker"]), "--block"],
    }

    nodes: dict[str, Node] = {}
    stopped: dict[str, str] = {}
    worker_logs: dict[str, dict[int, str]] = {}
    try:
        for name in ("head", "worker"):  # the worker needs the head's GCS up before it can join
            nodes[name] = Node(name, node_cmds[name], temps[name], work / f"ray-{name}.log", env)
            nodes[name].wait_started(args.start_timeout)
        joined = cluster_nodes(address, want=2, timeout=60)
        rc, cluster_seconds = run(cluster_cmd, work / "cluster.out", work / "cluster.err", env)
        # Read before the temp dirs go: which node ran each worker process, and what it printed.
        worker_logs = {name: n.worker_logs() for name, n in nodes.items()}
    finally:
        for name in ("worker", "head"):
            if name in nodes:
                stopped[name] = nodes[name].stop()
        for t in temps.values():
            shutil.rmtree(t, ignore_errors=True)
    stderr = (work / "cluster.err").read_text()
    if rc != 0:
        print(stderr[-3000:], file=sys.stderr)
        sys.exit(f"the cluster search failed with exit code {rc}")

    log = pd.read_parquet(cluster_out / "evaluations.parquet")
    actors = []
    for worker in sorted(set(log["worker"])):
        m = WORKER.match(worker)
        pid = int(m["pid"]) if m else None
        node = next((name for name, logs in worker_logs.items() if pid in logs), "?")
        actors.append({"worker": worker, "node": node, "gpus": m["gpus"] if m else None,
                       "warned": FALLBACK in worker_logs.get(node, {}).get(pid, ""),
                       "evaluations": int((log["worker"] == worker).sum())})
    # What the user sees: Ray forwards actor output to the driver, folding repeats into "[repeated Nx ...]".
    fallbacks = [ANSI.sub("", line).strip() for line in stderr.splitlines() if FALLBACK in line]

    serial_rc, serial_seconds = run(serial_cmd, work / "serial.out", work / "serial.err", env)
    if serial_rc != 0:
        sys.exit(f"the serial search failed with exit code {serial_rc}:\n{(work / 'serial.err').read_text()[-3000:]}")
    fronts_same, logs_same = compare(serial_out, cluster_out)

    placed = {a["node"] for a in actors}
    checks = {
        "two nodes joined": len(joined) == 2,
        "two distinct actors did the work": len(actors) == 2,
        "actors on distinct nodes": len(placed) == len(actors) and "?" not in placed,
        "every actor got a GPU id": all(a["gpus"] for a in actors),
        "every actor warned of the CPU fallback (its own log)": all(a["warned"] for a in actors),
        "the fallback warning reached the search's stderr": bool(fallbacks),
        "front.csv identical to serial": fronts_same,
    }
    commands = [shlex.join(node_cmds["head"]), shlex.join(node_cmds["worker"]), shlex.join(cluster_cmd),
                "(stop: SIGTERM to each ray start --block, worker first, then SIGKILL to its session's leftovers)",
                shlex.join(serial_cmd)]
    result = {
        "space": args.space, "checkpoint": args.checkpoint, "work": str(work), "address": address,
        "commands": commands, "nodes": joined, "actors": actors, "fallback_warnings": fallbacks,
        "stopped": stopped, "seconds": {"cluster": cluster_seconds, "serial": serial_seconds},
        "fronts_identical": fronts_same, "logs_identical": logs_same, "checks": checks,
    }
    out = Path(args.out) / "ray_cluster_search.json"
    write_json(out, result)

    print("\ncommands:")
    for c in commands:
        print(f"  {c}")
    print(f"\nnodes: {len(joined)}")
    for n in joined:
        print(f"  {n['node_id']}  {n['ip']}  CPU {n['cpus']:g}  GPU {n['gpus']:g}")
    print(f"actors: {len(actors)}")
    print(f"  {'worker (evaluation log)':<42} {'node':<7} {'GPU ids':<8} {'warned':<7} evaluations")
    for a in actors:
        print(f"  {a['worker']:<42} {a['node']:<7} {a['gpus'] or '-':<8} {'yes' if a['warned'] else 'no':<7} "
              f"{a['evaluations']}")
    print(f"fallback warning lines on the search's stderr: {len(fallbacks)}")
    for w in fallbacks:
        print(f"  {w}")
    print(f"front.csv identical to serial: {'yes' if fronts_same else 'NO'}; "
          f"evaluation log identical on {len(COMPARED)} columns: {'yes' if logs_same else 'NO'}")
    print(f"seconds: cluster search {cluster_seconds:.1f}, serial search {serial_seconds:.1f}")
    print(f"stopped: {stopped}")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print(f"-> {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
