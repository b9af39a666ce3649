"""Where the jobs of a sweep run: in this process (default) or on a Ray cluster.

An executor maps a module-level function over a list of job specs (plain, picklable data)
and yields ``(position, result)`` pairs as jobs finish, so the caller can store each result
as soon as it exists. Job functions must be deterministic functions of their spec (seeds
live in the spec) and set their own thread count: then the same spec gives the same numbers
on either executor (checked in ``tests/test_executors.py``).

* :class:`LocalExecutor`: runs the jobs one after another in this process, in order.
* :class:`RayExecutor`: submits every job as a Ray task (``pip install 'perturbscope[ray]'``)
  and yields in completion order. It joins a running cluster (``address="auto"`` or
  ``ray://host:port``) or starts a local Ray instance. The workers must be able to import
  perturbscope and read the data (same paths).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS", "ray_available"]

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """Runs ``fn(job)`` for each job; ``map`` yields ``(position in jobs, result)`` as jobs finish."""

    name: str

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Run jobs sequentially in the calling process (results in job order)."""

    name = "local"

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, job in enumerate(jobs):
            yield i, fn(job)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"executor": "local"}


def ray_available() -> bool:
    """Whether ``import ray`` works."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayExecutor:
    """Run jobs as Ray tasks; yields results in completion order.

    Args:
        address: cluster to join (``"auto"``, ``"ray://head:10001"``); None starts a local
            instance unless Ray is already initialised in this process.
        num_cpus: CPUs of a local instance (None: Ray's default, all cores).
        cpus_per_job, gpus_per_job: resources each task asks for (``gpus_per_job=1`` with
            ``--device cuda``).
        max_in_flight: at most this many tasks submitted at once (bounds driver memory).
        init_kwargs: extra keyword arguments for ``ray.init``.
        connect_timeout: seconds to wait for the cluster at ``address`` (a TCP check of
            ``host:port`` first, then ``ray.init`` itself); past it a ``ConnectionError`` says so.

    Raises:
        ImportError: Ray is not installed (with the install command).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, max_in_flight: int = 64,
                 init_kwargs: dict[str, Any] | None = None, connect_timeout: float = 30.0) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("the Ray executor needs Ray: pip install 'perturbscope[ray]' "
                              "(or pip install 'ray>=2.9')") from exc
        if cpus_per_job <= 0 or gpus_per_job < 0 or max_in_flight < 1:
            raise ValueError(f"need cpus_per_job > 0, gpus_per_job >= 0, max_in_flight >= 1; got "
                             f"{cpus_per_job}, {gpus_per_job}, {max_in_flight}")
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            if address is not None:
                kw["address"] = address
            elif num_cpus is not None:
                kw["num_cpus"] = int(num_cpus)
            kw.update(init_kwargs or {})
            if address not in (None, "auto", "local"):
                _check_reachable(address, connect_timeout)
            _init_with_timeout(ray, kw, connect_timeout, address)
            self._started = True
        self.cpus_per_job = float(cpus_per_job)
        self.gpus_per_job = float(gpus_per_job)
        self.max_in_flight = int(max_in_flight)

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0)(_call)
        pending: dict[Any, int] = {}
        nxt = 0
        try:
            while nxt < len(jobs) or pending:
                while nxt < len(jobs) and len(pending) < self.max_in_flight:
                    pending[remote.remote(fn, jobs[nxt])] = nxt
                    nxt += 1
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                if not done:  # nothing finished for a while: make sure the cluster is still there
                    _check_alive(ray)
                    continue
                ref = done[0]
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.as_instanceof_cause()
                    raise cause from None
                yield i, result
        finally:
            for ref in pending:  # interrupted: do not leave work running for nothing
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

    def describe(self) -> dict[str, Any]:
        res = self._ray.cluster_resources()
        return {"executor": "ray", "cluster_cpus": res.get("CPU"), "cluster_gpus": res.get("GPU"),
                "ray": self._ray.__version__}


#: seconds between checks that the cluster is alive while waiting for a task (a job may run for hours)
POLL_SECONDS = 60.0
#: seconds a local Ray instance may take to start
LOCAL_START_SECONDS = 180.0


def _check_alive(ray: Any) -> None:
    """Raise ``ConnectionError`` when the Ray cluster has gone (no live node, or it cannot be asked)."""
    try:
        alive = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster's control store
        raise ConnectionError(f"lost the Ray cluster while waiting for jobs ({exc}); run the same command "
                              "again to resume (finished units are kept)") from exc
    if not alive:
        raise ConnectionError("the Ray cluster has no live node left; run the same command again to resume "
                              "(finished units are kept)")


def _check_reachable(address: str, timeout: float) -> None:
    """Refuse an address whose ``host:port`` does not accept a TCP connection within ``timeout`` s."""
    import socket

    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address {address!r} must look like host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} ({exc}); is it running? "
                              f"(checked for {timeout:g} s)") from exc


def _init_with_timeout(ray: Any, kwargs: dict[str, Any], timeout: float, address: str | None) -> None:
    """``ray.init(**kwargs)``, but give up with a clear error after ``timeout`` seconds."""
    import threading

    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # joining a cluster waits connect_timeout; starting a local instance gets a longer, still finite, wait
    t.join(timeout if address not in (None, "local") else max(LOCAL_START_SECONDS, timeout))
    if t.is_alive():
        raise ConnectionError(f"Ray did not connect to {address} within {timeout:g} s; check the address "
                              f"(ray status on the head node)")
    if "error" in box:
        err = box["error"]
        raise ConnectionError(f"Ray could not start or connect (address {address}): {err}") from err


def _call(fn: Callable[[Any], Any], job: Any) -> Any:
    """The Ray task body: ``fn(job)`` (``fn`` travels pickled by reference, so builtins work too)."""
    return fn(job)


def make_executor(name: str, **kwargs: Any) -> LocalExecutor | RayExecutor:
    """``"local"`` -> :class:`LocalExecutor`; ``"ray"`` -> :class:`RayExecutor` (``kwargs`` passed)."""
    if name == "local":
        if kwargs:
            raise ValueError(f"the local executor takes no options, got {sorted(kwargs)}")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {name!r}")
