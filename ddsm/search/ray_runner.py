"""The Ray runner: an actor pool where every actor builds the evaluator once and scores chunks.

Placement. With GPUs in the cluster each actor asks for one GPU (or the
fraction ``gpus_per_worker``); Ray hands it its own ``CUDA_VISIBLE_DEVICES``,
so the evaluator is built on ``cuda``. Without GPUs the cores are split:
each actor asks for ``cores // workers`` CPUs and sets
``torch.set_num_threads`` to what it was given, so workers do not fight for
cores. An actor given GPU ids while ``torch.cuda`` is unavailable (a cluster
that declares GPUs it does not have) warns once and uses the CPU.

Cluster. By default a private local Ray is started: ``num_cpus`` = the cores
this process may use, no dashboard, a temporary directory this runner owns
and removes, ``RAY_AUTH_MODE=disabled``, and the node bound to 127.0.0.1
(Ray still registers its services under the machine's own address, by
design; its traffic stays on this machine). ``address='HOST:PORT'`` joins an
existing cluster instead; an address where nothing answers within
``connect_timeout`` seconds is a one-line DDSMError. A Ray session that is
already initialised in this process is reused and left running.

Faults. Actors restart (``max_restarts``) and their tasks are retried
(``max_task_retries``); a restarted actor builds its evaluator again from the
picklable factory. Results are returned in input order and do not depend on
which actor ran a chunk. Ray is imported here lazily, inside functions.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import time
import warnings
from typing import Any, Callable, Sequence

from ddsm.errors import DDSMError
from ddsm.plan import StepPlan
from ddsm.search.runners import EvaluatorFactory, Genome, ResultCallback, Runner, evaluate_chunk, sharing_of


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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_address(address: str, *, timeout: float) -> None:
    """Raise a one-line DDSMError unless something accepts TCP connections at ``HOST:PORT``."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DDSMError(f"Ray address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise DDSMError(f"no Ray cluster answers at {address!r} ({e.strerror or type(e).__name__} within {timeout:g} s); "
                        f"start one with 'ray start --head --port {port}' or leave the address out for a local Ray") from None


def start_local_ray(ray, *, num_cpus: int | None = None, num_gpus: int | None = None) -> str:
    """Start a private local Ray (no dashboard, bound to 127.0.0.1) in a new temporary folder; returns the folder."""
    temp = tempfile.mkdtemp(prefix="ddsm-ray-")
    # Ray's helper processes can write into it for a moment after shutdown: remove it at exit too.
    atexit.register(shutil.rmtree, temp, True)
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=temp,
             _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=True)
    return temp


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
        # Read when Ray starts: no token file, no warning about one.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        self.workers = workers
        self._owns_session = False
        self._temp_dir: str | None = None
        if ray.is_initialized():
            pass  # someone else's session: use it, leave it running
        elif address is None:
            self._start_local(ray, num_cpus=num_cpus or _cores(), num_gpus=num_gpus)
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
            cpus_per_worker = float(max(int(cpus_free) // n, 1)) if cpus_free >= n else cpus_free / n
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
                    pending[actor.evaluate.remote(start, [self.decode(g) for g in chunk])] = actor
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    idle.append(pending.pop(ref))
                    start, rows = _get(ray, ref)
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
        if self._owns_session:
            ray.shutdown()
        self._owns_session = False
        if self._temp_dir is not None:
            remove_temp_dir(self._temp_dir)
            self._temp_dir = None


def _get(ray, ref) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        # Bad input found inside a worker is still bad input: one line, no worker traceback.
        if isinstance(e.cause, DDSMError):
            raise DDSMError(str(e.cause)) from None
        raise
