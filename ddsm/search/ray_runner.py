"""The Ray runner: an actor pool where every actor builds the evaluator once and scores chunks.

Placement. With GPUs in the cluster each actor asks for one GPU (or the
fraction ``gpus_per_worker``); Ray hands it its own ``CUDA_VISIBLE_DEVICES``,
so the evaluator is built on ``cuda``. Without GPUs the cores are split:
each actor asks for ``cores // workers`` CPUs and sets
``torch.set_num_threads`` to what it was given, so workers do not fight for
cores. An actor given GPU ids while ``torch.cuda`` is unavailable (a cluster
that declares GPUs it does not have) warns once and uses the CPU.

Cluster. By default a private local Ray is started (:func:`start_local_ray`,
shared with ``ddsm sweep``): ``num_cpus`` = the cores this process may use,
no dashboard, every service listening on 127.0.0.1 only, Ray's token
authentication on with a per-session token file (0600), and a folder of its
own inside a per-user 0700 folder, removed afterwards (and, if ddsm was
killed, at the next start). ``address='HOST:PORT'`` joins an existing
cluster instead and changes nothing about it: securing it is its owner's
job (token authentication, ``RAY_AUTH_MODE=token`` with the cluster's token
in ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``, and a firewall keeping its
ports from untrusted networks). An address where nothing answers within
``connect_timeout`` seconds is a one-line DDSMError. A Ray session that is
already initialised in this process is reused and left running.

Faults. Actors restart (``max_restarts``) and their tasks are retried
(``max_task_retries``); a restarted actor builds its evaluator again from the
picklable factory. An actor dead for good (out of restarts) leaves the pool
and its chunk goes to another; when every actor is dead the call raises one
DDSMError line (the search keeps its finished generations: resume it). Results are returned in input order and do not depend on
which actor ran a chunk. Ray is imported here lazily, inside functions.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import stat
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.search.runners import (EvaluatorFactory, cores, Genome, ResultCallback, Runner, evaluate_chunk, parse_address,
                                 sharing_of)


class EvaluatorActor:
    """One Ray actor: picks its device and thread count, builds the evaluator once, scores chunks."""

    def __init__(self, factory: EvaluatorFactory, quality: str, index: int) -> None:
        import ray

        self.quality = quality
        self.gpu_ids = [int(g) if str(g).isdigit() else str(g) for g in ray.get_gpu_ids()]
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = max(1, int(cpus))
        self.warnings: list[str] = []
        self.device = "cpu"
        try:
            import torch
        except ImportError:  # an evaluator without torch still runs
            torch = None
        if torch is not None:
            torch.set_num_threads(self.threads)
        cuda = torch is not None and torch.cuda.is_available()
        if self.gpu_ids and cuda:
            self.device = "cuda"
        elif self.gpu_ids:
            msg = f"actor got GPU ids {self.gpu_ids} but CUDA is not available; falling back to CPU"
            self.warnings.append(msg)
            warnings.warn(f"ddsm: {msg}", RuntimeWarning, stacklevel=1)
        # The GPU ids go into the name, so the evaluation log's worker column records the placement.
        gpus = "+".join(f"gpu{g}" for g in self.gpu_ids)
        self.worker = f"ray:actor{index}@{ray.util.get_node_ip_address()}:{os.getpid()}" + (f"/{gpus}" if gpus else "")
        self.evaluator = factory(device=self.device)

    def evaluate(self, start: int, width_lists: list[list[float]]) -> tuple[int, list[dict]]:
        """Score one chunk; ``start`` travels along so results can be put back in order."""
        return start, evaluate_chunk(self.evaluator, width_lists, quality=self.quality, worker=self.worker)

    def sharing(self) -> dict[str, int] | None:
        """This actor's evaluator's denoiser-work counters (None if it keeps none)."""
        return sharing_of(self.evaluator)

    def info(self) -> dict:
        """Where and how this actor runs."""
        return {"worker": self.worker, "device": self.device, "gpu_ids": self.gpu_ids, "threads": self.threads,
                "pid": os.getpid(), "warnings": self.warnings}


def check_address(address: str, *, timeout: float) -> None:
    """Raise a one-line DDSMError unless something accepts TCP connections at ``HOST:PORT``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise DDSMError(f"no Ray cluster answers at {address!r} ({e.strerror or type(e).__name__} within {timeout:g} s); "
                        f"start one with 'ray start --head --port {port}' or leave the address out for a local Ray") from None


#: Ray puts Unix sockets under the session folder (``<temp>/session_<date>_<pid>/sockets/plasma_store``) and
#: a socket path may hold at most ~107 bytes: the private base folder must stay short.
_MAX_BASE = 40


def private_ray_base() -> Path:
    """This user's folder for ddsm's local Ray sessions (``<system temp>/ddsm-ray-<uid>``, mode 0700).

    Created if missing; refused (one line) if it is a link, someone else's, or not a folder. Ray makes its
    own temp folder world-writable (0777); inside this 0700 folder nobody else can reach it.
    """
    name = f"ddsm-ray-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    root = tempfile.gettempdir()
    base = Path(root if len(os.path.join(root, name)) <= _MAX_BASE or not os.path.isdir("/tmp") else "/tmp") / name
    try:
        base.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise DDSMError(f"{base} is not a folder of this user's (a link, a file or another user's): ddsm keeps its "
                        "private Ray sessions there; remove it or set TMPDIR to another folder")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(base, 0o700)
    return base


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone's process: alive
        return True
    return True


def _used_by_a_process(folder: Path) -> bool:
    """Whether a live process names ``folder`` on its command line (a Ray process outliving its driver)."""
    needle = str(folder)
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux: assume it may be in use
        return True
    for d in proc.iterdir():
        if d.name.isdigit():
            try:
                if needle.encode() in (d / "cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


def remove_stale_sessions(base: Path) -> list[str]:
    """Remove folders in ``base`` left by ddsm processes that are gone (killed before they could clean up).

    Conservative: only folders named ``<pid>-*`` (what :func:`start_local_ray` makes) in this user's private
    ``base``, whose pid is not a live process and that no live process names on its command line.
    Returns the removed folders.
    """
    removed = []
    for d in sorted(base.iterdir()):
        pid = d.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or d.is_symlink() or not d.is_dir():
            continue
        if _pid_alive(int(pid)) or _used_by_a_process(d):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def _write_token(path: Path) -> None:
    """A new random token in a file only this user can read (0600), created, never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


#: what start_local_ray changes in this process's environment (restored by stop_local_ray)
_RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
_saved_env: dict[str, dict[str, str | None]] = {}


def _refresh_ray_auth() -> None:
    # Ray caches its config and the token it read; both must see the environment set above.
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - another Ray: it reads the environment itself
        pass


def start_local_ray(ray, *, num_cpus: int | None = None, num_gpus: int | None = None) -> str:
    """Start ddsm's private local Ray; returns its folder (give it to :func:`stop_local_ray`).

    The search runner and ``ddsm sweep`` both start their local Ray here:

    * loopback only: the node's IP is 127.0.0.1, so the GCS, raylet, object manager, runtime-env agent,
      workers and driver listen on 127.0.0.1 alone (``_node_ip_address='127.0.0.1'`` by itself is not
      enough: Ray replaces a loopback address by the machine's); no dashboard;
    * token authentication on (``RAY_AUTH_MODE=token``, whatever the environment says), with a new
      random token for this session in ``<folder>/auth_token``, mode 0600 (``RAY_AUTH_TOKEN_PATH``);
      ``~/.ray/auth_token`` is neither read nor written;
    * a folder of its own, ``<system temp>/ddsm-ray-<uid>/<pid>-XXXXXXXX``, inside a 0700 folder only this
      user can enter; folders left by killed ddsm processes are removed first;
    * never joins another cluster, whatever ``RAY_ADDRESS`` says.
    """
    base = private_ray_base()
    remove_stale_sessions(base)
    temp = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base)
    # Ray's helper processes can write into it for a moment after shutdown: remove it at exit too.
    atexit.register(shutil.rmtree, temp, True)
    token = Path(temp) / "auth_token"
    _write_token(token)
    _saved_env[temp] = {k: os.environ.get(k) for k in _RAY_ENV}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                       # Read by Ray's services.get_node_ip_address: keep 127.0.0.1 as the node's address.
                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    _refresh_ray_auth()
    from ray._private import ray_constants

    cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # the constant was read when Ray was imported
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=temp,
                 _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=True)
    except BaseException:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
        stop_local_ray(ray, temp)
        raise
    ray_constants.ENABLE_RAY_CLUSTER = cluster
    return temp


def stop_local_ray(ray, temp: str) -> None:
    """Shut down the local Ray of :func:`start_local_ray`, restore the environment, remove its folder."""
    if ray.is_initialized():
        ray.shutdown()
    for k, v in _saved_env.pop(temp, {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _refresh_ray_auth()
    remove_temp_dir(temp)


def remove_temp_dir(path: str) -> None:
    """Remove a local Ray's folder after ``ray.shutdown()``."""
    # Ray's processes may still write logs for a moment after shutdown; try a few times.
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            break
        time.sleep(0.2)


class RayRunner(Runner):
    """Maps the evaluator over genomes on a pool of ``workers`` Ray actors."""

    def __init__(self, evaluator_factory: EvaluatorFactory, *, decode: Callable[[Genome], StepPlan], quality: str,
                 chunk_size: int = 4, workers: int = 2, address: str | None = None,
                 gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
                 num_cpus: int | None = None, num_gpus: int | None = None, max_restarts: int = 3,
                 max_task_retries: int = 3, connect_timeout: float = 3.0) -> None:
        super().__init__(evaluator_factory, decode=decode, quality=quality, chunk_size=chunk_size)
        if workers < 1:
            raise DDSMError(f"workers {workers} must be at least 1")
        g = gpus_per_worker
        if g is not None and (g < 0 or (g > 1 and g != int(g))):
            raise DDSMError(f"gpus_per_worker {g} must be 0 (CPU only), a fraction in (0, 1] or a whole number")
        if address is not None and address != "auto":
            check_address(address, timeout=connect_timeout)
        import ray

        self.workers = workers
        self._last_death = "none"
        self._owns_session = False
        self._temp_dir: str | None = None
        if ray.is_initialized():
            pass  # someone else's session: use it, leave it running
        elif address is None:
            self._start_local(ray, num_cpus=num_cpus or cores(), num_gpus=num_gpus)
        else:
            try:
                ray.init(address=address, logging_level="warning", log_to_driver=True)
            except (ConnectionError, RuntimeError, TimeoutError) as e:
                raise DDSMError(f"cannot join the Ray cluster at {address!r}: {str(e).splitlines()[0] if str(e) else e}") from None
            self._owns_session = True
        try:
            self._start_actors(ray, gpus_per_worker, cpus_per_worker, max_restarts, max_task_retries)
        except BaseException:
            self.close()
            raise

    def _start_local(self, ray, *, num_cpus: int, num_gpus: int | None, attempts: int = 2) -> None:
        # Ray's raylet waits a fixed ~20 s for its Python agents and the driver 30 s for the raylet; on a
        # machine saturated by other work the first start can miss that while a second, warm one makes it.
        for attempt in range(1, attempts + 1):
            self._owns_session = True  # so close() also tears down a half-started session
            try:
                self._temp_dir = start_local_ray(ray, num_cpus=num_cpus, num_gpus=num_gpus)
                return
            except Exception as e:
                self.close()
                if attempt == attempts:
                    raise RuntimeError(f"local Ray did not start in {attempts} attempts ({e}); if this machine is "
                                       "overloaded, retry when it is less busy or use the serial runner") from e
                warnings.warn(f"ddsm: local Ray did not start ({e}); trying once more", RuntimeWarning, stacklevel=2)
            except BaseException:
                self.close()
                raise

    def _start_actors(self, ray, gpus_per_worker, cpus_per_worker, max_restarts, max_task_retries) -> None:
        # Free resources, not totals: actors asking for more than is free would wait forever.
        free = ray.available_resources()
        cpus_free, gpus_free = float(free.get("CPU", 0)), float(free.get("GPU", 0))
        n = self.workers
        gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if gpus_free >= 1 else 0.0)
        if gpus and gpus * n > gpus_free + 1e-9:
            raise DDSMError(f"{n} workers at {gpus:g} GPU each need {gpus * n:g} GPUs but the cluster has {gpus_free:g} "
                            f"free; use workers <= {int(gpus_free // gpus)} or a smaller gpus_per_worker")
        if cpus_per_worker is None:
            if cpus_free < n:  # fractions of a CPU per actor made Ray spawn workers without end (a hang)
                raise DDSMError(f"{n} workers need at least one CPU each but the cluster has {cpus_free:g} free; "
                                f"use workers <= {int(cpus_free)}")
            cpus_per_worker = float(max(int(cpus_free) // n, 1))
        if cpus_per_worker <= 0 or cpus_per_worker * n > cpus_free + 1e-9:
            raise DDSMError(f"{n} workers at {cpus_per_worker:g} CPUs each need {cpus_per_worker * n:g} CPUs but the "
                            f"cluster has {cpus_free:g} free; lower workers or cpus_per_worker")
        actor_cls = ray.remote(EvaluatorActor).options(
            num_cpus=cpus_per_worker, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=max_task_retries)
        self.actors = [actor_cls.remote(self.evaluator_factory, self.quality, i) for i in range(n)]
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus

    def info(self) -> list[dict]:
        """What every actor runs on (device, GPU ids, threads, pid, warnings)."""
        import ray

        return ray.get([a.info.remote() for a in self.actors])

    def sharing(self) -> dict[str, int] | None:
        """Denoiser-work counters summed over the actors (a restarted actor starts again from zero)."""
        import ray

        parts = [p for p in ray.get([a.sharing.remote() for a in self.actors]) if p]
        return {k: sum(p[k] for p in parts) for k in parts[0]} if parts else None

    def __call__(self, genomes: Sequence[Genome], *, on_result: ResultCallback | None = None) -> list[dict]:
        import ray

        todo = self.chunks(genomes)[::-1]  # popped from the end: first chunk first
        idle = list(self.actors)
        pending: dict[Any, Any] = {}
        done: dict[int, list[dict]] = {}
        try:
            while todo or pending:
                while todo and idle:
                    start, chunk = todo.pop()
                    actor = idle.pop(0)
                    pending[actor.evaluate.remote(start, [self.decode(g) for g in chunk])] = (actor, start, chunk)
                if not pending:  # chunks left, no actor alive to take them
                    raise DDSMError(f"every Ray worker died (last error: {self._last_death}); resume with --resume")
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    actor, start, chunk = pending.pop(ref)
                    try:
                        start, rows = _get(ray, ref)
                    except ray.exceptions.ActorDiedError as e:  # out of restarts: drop it, its chunk goes to another
                        self._last_death = _first_line(e)
                        self.actors = [a for a in self.actors if a is not actor]
                        todo.append((start, chunk))
                        continue
                    idle.append(actor)
                    done[start] = rows
                    if on_result is not None:
                        on_result(start, rows)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return [row for start in sorted(done) for row in done[start]]

    def close(self) -> None:
        """Kill the actors; shut down the Ray session if this runner started or joined it."""
        try:
            import ray
        except ImportError:  # pragma: no cover
            return
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # an actor already gone is fine
                pass
        self.actors = []
        if self._temp_dir is not None:  # our local Ray: shut down, environment restored, folder removed
            stop_local_ray(ray, self._temp_dir)
            self._temp_dir = None
        elif self._owns_session:
            ray.shutdown()
        self._owns_session = False


def _first_line(e: BaseException) -> str:
    """The gist of a (many-line) Ray error: its first non-empty line, shortened."""
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return line if len(line) <= 200 else line[:197] + "..."


def _get(ray, ref) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        # Bad input found inside a worker is still bad input: one line, no worker traceback.
        if isinstance(e.cause, DDSMError):
            raise DDSMError(str(e.cause)) from None
        raise
