"""Multi-process JAX jobs (JAX's multi-controller runtime): start-up from the environment, the one
writer, agreement on errors, and host arrays <-> global arrays.

A job of N processes runs the same program on every process (SPMD). Each process drives its own
devices; the mesh spans all of them (``sharding.make_mesh``: ``data`` across processes, ``model``
within one); every jitted call takes global ``jax.Array`` s, so statistics, gradients and losses are
reduced over processes by XLA's collectives exactly as over devices (gloo on CPU, NCCL on GPU, ICI
on TPU). What each process does:

* **feeds its own rows**: :func:`put_batch` builds a batch as a global array sharded over ``data``
  from the rows this process's devices hold (``jax.make_array_from_callback`` asks only for the
  local shards); every process tokenises the same text (cheap next to the model, and it keeps the
  batch composition identical everywhere) but puts only its share on its devices;
* **reads results with** :func:`to_host` (``process_allgather`` for arrays spread over processes);
* **writes nothing unless it is the writer** (process 0, :func:`is_writer`): ``io_utils``' atomic
  writers do nothing elsewhere, and the few writers outside it ask :func:`is_writer` themselves;
  orbax writes its own checkpoints from every process (each its shards), as it is built to;
* **agrees on errors**: :func:`agree` runs a check on every process and makes every process fail
  with the first failing process's message; :func:`on_writer` runs bookkeeping on the writer only
  and hands its result (or its error) to the others. A process that dies mid-stage breaks the
  collectives the others wait in (gloo reports the lost peer at once) and
  ``rise_jax.launch`` ends every process with a one-line error and a non-zero status
  (:func:`exit_now`), without waiting for JAX's shutdown barrier.

Start-up (:func:`initialize`, called by ``rise_jax.launch`` before anything touches a backend):
the generic form ``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID`` (any
cluster, or one machine: ``launch/local_processes.sh``), or a SLURM job step with several tasks /
a Cloud TPU pod slice, which ``jax.distributed.initialize()`` reads by itself. On one process
every function here is the identity or a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rise_jax.errors import USER_ERRORS, RiseError

COORDINATOR = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
HEARTBEAT = "RISE_JAX_HEARTBEAT_TIMEOUT"  # seconds before a silent process is declared dead


class DistributedError(RiseError, RuntimeError):
    """A multi-process job that cannot start or go on; the message names the process and the cause."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A multi-process job as the environment describes it. ``kind``: ``generic`` (the three
    ``JAX_*`` variables), ``slurm`` or ``tpu`` (found by ``jax.distributed.initialize()`` itself;
    ``num_processes`` / ``process_id`` are then None until it has run)."""

    kind: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def job_from_environment(env: Mapping[str, str] = os.environ) -> Job | None:
    """The job ``env`` describes, or None for a single process. The generic form needs all three
    variables (an error names the missing ones and bad values)."""
    given = {k: env.get(k, "").strip() for k in (COORDINATOR, NUM_PROCESSES, PROCESS_ID)}
    if any(given.values()):
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise DistributedError(
                f"a multi-process job needs {COORDINATOR}, {NUM_PROCESSES} and {PROCESS_ID}; "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            )
        try:
            n, pid = int(given[NUM_PROCESSES]), int(given[PROCESS_ID])
        except ValueError:
            raise DistributedError(
                f"{NUM_PROCESSES}={given[NUM_PROCESSES]!r} and {PROCESS_ID}={given[PROCESS_ID]!r} must be whole numbers"
            ) from None
        if n < 1 or not 0 <= pid < n:
            raise DistributedError(f"{PROCESS_ID}={pid} must be in [0, {NUM_PROCESSES}={n})")
        if ":" not in given[COORDINATOR]:
            raise DistributedError(f"{COORDINATOR}={given[COORDINATOR]!r}: give host:port of process 0")
        return None if n == 1 else Job("generic", given[COORDINATOR], n, pid)
    if int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) > 1:
        return Job("slurm")
    if env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        return Job("tpu")
    return None


def initialize(env: Mapping[str, str] = os.environ) -> Job | None:
    """Start JAX's distributed runtime for the job ``env`` describes (None: one process, nothing
    done). CPU collectives go through gloo. Must run before anything touches a JAX backend."""
    job = job_from_environment(env)
    if job is None:
        return None
    import jax

    if jax.distributed.is_initialized():
        return job
    heartbeat = env.get(HEARTBEAT, "60")
    if not heartbeat.isdigit() or int(heartbeat) < 1:
        raise DistributedError(f"{HEARTBEAT}={heartbeat!r}: give a whole number of seconds >= 1")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=job.coordinator,
            num_processes=job.num_processes,
            process_id=job.process_id,
            heartbeat_timeout_seconds=int(heartbeat),
        )
    except RuntimeError as err:
        raise DistributedError(f"the {job.kind} multi-process job could not start: {err}") from None
    return dataclasses.replace(job, num_processes=jax.process_count(), process_id=jax.process_index())


def multi_process() -> bool:
    """Whether this process is one of several (JAX's distributed runtime is up with > 1 process)."""
    if "jax" not in sys.modules:
        return False
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def process_index() -> int:
    if not multi_process():
        return 0
    import jax

    return jax.process_index()


def is_writer() -> bool:
    """Whether this process writes the artefacts, records and logs (process 0; always on one process)."""
    return process_index() == 0


def where() -> str:
    """``"process i/N: "`` in a multi-process job, else ``""`` (a prefix for messages)."""
    if not multi_process():
        return ""
    import jax

    return f"process {jax.process_index()}/{jax.process_count()}: "


def barrier(name: str) -> None:
    """Wait until every process has arrived here (a no-op on one process)."""
    if multi_process():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _bytes_to_all(data: bytes | None) -> bytes:
    """The writer's ``data`` on every process (others pass None)."""
    import numpy as np
    from jax.experimental import multihost_utils

    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data) if data is not None else 0)))
    buf = np.zeros(max(size, 1), np.uint8)
    if data is not None and size:
        buf[:size] = np.frombuffer(data, np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes()[:size]


def _gather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in process order."""
    import numpy as np
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
    buf = np.zeros(max(int(sizes.max()), 1), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
    return [rows[i, : int(sizes[i])].tobytes() for i in range(len(sizes))]


def _describe(err: BaseException) -> str:
    return f"{err}" if isinstance(err, USER_ERRORS) else f"{type(err).__name__}: {err}"


def on_writer(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on the writer only; its result (JSON-able) is returned on every process. If it
    raised, the writer re-raises and every other process raises :class:`DistributedError` with its
    message, so all of them stop together."""
    if not multi_process():
        return fn()
    if is_writer():
        try:
            result = fn()
        except BaseException as err:
            _bytes_to_all(json.dumps({"error": _describe(err)}).encode())
            raise
        _bytes_to_all(json.dumps({"ok": result}).encode())
        return result
    payload = json.loads(_bytes_to_all(None).decode())
    if "error" in payload:
        raise DistributedError(f"process 0 failed in {what}: {payload['error']}")
    return payload["ok"]


def agree(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on every process; if it raised on any, every process raises (this process's own
    error, or :class:`DistributedError` naming the first process that failed and its message)."""
    if not multi_process():
        return fn()
    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 — shared with the others, then re-raised
        error = err
    reports = [r.decode() for r in _gather_bytes(b"" if error is None else _describe(error).encode())]
    if error is not None:
        raise error
    failed = [(i, r) for i, r in enumerate(reports) if r]
    if failed:
        i, message = failed[0]
        raise DistributedError(f"process {i} failed {what}: {message}")
    return result


def exit_now(status: int) -> None:
    """End this process at once with ``status`` after flushing its output. In a multi-process job
    this skips JAX's shutdown barrier, which would otherwise wait minutes for processes stuck in a
    collective with this one: closing its connections is what tells them (they fail at once)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _mesh_of(tree: Any):
    """The mesh of the first leaf of ``tree`` placed with a ``NamedSharding`` (None if none is)."""
    import jax
    from jax.sharding import NamedSharding

    for leaf in jax.tree_util.tree_leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def put_batch(params: Any, *arrays: Any) -> tuple[Any, ...]:
    """Host batch arrays (first axis: rows; identical on every process) placed where ``params``
    live: on a mesh, global arrays split over its first axis (``data``, ``sharding.make_mesh``),
    each process supplying only the rows of its own devices; on one device, as they are. A row
    count that axis does not divide is replicated instead."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _mesh_of(params)
    if mesh is None:
        return tuple(jnp.asarray(a) for a in arrays)
    data = mesh.axis_names[0]
    out = []
    for a in arrays:
        a = np.asarray(a)
        split = a.ndim >= 1 and a.shape[0] % mesh.shape[data] == 0
        sharding = NamedSharding(mesh, PartitionSpec(data) if split else PartitionSpec())
        out.append(jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]))
    return tuple(out)


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as NumPy, whole (arrays spread over several processes are gathered
    with ``process_allgather``: every process must call this at the same point)."""
    import jax
    import numpy as np

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            if a.is_fully_replicated:
                return np.asarray(a.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(one, tree)


def replicate_local(tree: Any, like: Any) -> Any:
    """In a multi-process job: every leaf of ``tree`` held on this process's devices only (what an
    eager ``jnp`` call makes, e.g. an optimiser's step count) as a global array replicated over the
    mesh of ``like``'s leaves, so that checkpoints and jitted calls see one global value. The
    identity on one process or when ``like`` is on no mesh."""
    if not multi_process():
        return tree
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = _mesh_of(like)
    if mesh is None:
        return tree

    def one(a):
        if isinstance(a, jax.Array) and a.is_fully_addressable:
            value = np.asarray(a)
            return jax.make_array_from_callback(value.shape, NamedSharding(mesh, PartitionSpec()), lambda i: value[i])
        return a

    return jax.tree_util.tree_map(one, tree)
