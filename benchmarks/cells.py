"""What the width benchmarks share (width_vs_return.py, vision_width.py, sr_width.py): one JSON
file per (method, seed) cell, the cells still to train, the checkpoints of cells in training
(``.partial/``, so that an interrupted cell resumes), where cells run (a pool of one-thread local
workers, or Ray tasks on a cluster: ``--backend``) with a time limit, reading a value at a width,
the "mean ± std" entries of their markdown tables, and seed lists written ``0-9`` or ``0,3,5``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def one_thread() -> None:
    """Cells train on one torch thread: parallel multi-threaded workers would oversubscribe the
    cores, and one thread is what the recorded train times mean."""
    import torch

    torch.set_num_threads(1)


def parse_seeds(text: str) -> list[int]:
    """Seeds written ``0-9`` (a range, both ends included) or ``0,3,5``; ``ValueError`` if malformed."""
    if "-" in text:
        first, _, last = text.partition("-")
        return list(range(int(first), int(last) + 1))
    return [int(x) for x in text.split(",")]


def seeds_label(seeds: Sequence[int]) -> str:
    """Seeds as :func:`parse_seeds` reads them: ``0-9`` for a run of consecutive seeds, else ``0,3,5``."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def params_tag(params: dict[str, Any] | None) -> str:
    """``_<key>-<value>`` per -params override (sorted), reduced to file-name characters: the
    suffix that keeps a variant's results apart from the preset's."""
    tag = "".join(f"_{k}-{v}" for k, v in sorted((params or {}).items()))
    return re.sub(r"[^\w.-]", "", tag)


def cell_path(cell_dir: Path, method: str, seed: int) -> Path:
    """The JSON file of one cell."""
    return cell_dir / f"{method}_s{seed}.json"


def pending(cell_dir: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """The (method, seed) cells with no file yet, seed-major."""
    return [(m, s) for s in seeds for m in methods if not cell_path(cell_dir, m, s).exists()]


def load_cells(cell_dir: Path, methods: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The cells' JSON, seed-major."""
    return [json.loads(cell_path(cell_dir, m, s).read_text()) for s in seeds for m in methods]


def save_cell(path: Path, result: dict[str, Any]) -> None:
    """Write a cell's JSON whole or not at all (the driver does this, never a worker)."""
    from usrl.utils import atomic_write_text  # makes the folder

    atomic_write_text(path, json.dumps(result, indent=1))


PARTIAL = ".partial"  # the folder, beside a grid's cells, of the checkpoints of cells in training


def partial_dir(out_dir: str | Path, method: str, seed: int) -> Path:
    """Where a cell keeps its mid-training checkpoints (deleted once its JSON is written)."""
    return Path(out_dir) / PARTIAL / f"{method}_s{seed}"


def discard_partial(out_dir: str | Path, method: str, seed: int) -> None:
    """Delete a finished cell's checkpoints (and the checkpoints folder once it is empty)."""
    import shutil

    folder = partial_dir(out_dir, method, seed)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # other cells' checkpoints are there, or it is gone already


def resuming_note(partials: Iterable[Path]) -> str:
    """The note ", N of them from their last checkpoint" for cells whose :func:`partial_dir`
    exists ("" if none)."""
    n = sum(folder.exists() for folder in partials)
    return f", {n} of them from their last checkpoint" if n else ""


def save_finished_cell(out_dir: str | Path, method: str, seed: int, result: dict[str, Any]) -> None:
    """Write a finished cell's JSON under ``out_dir``, then delete its checkpoints."""
    save_cell(cell_path(Path(out_dir), method, seed), result)
    discard_partial(out_dir, method, seed)


def trainer_run(
    out_dir: str | Path, method: str, seed: int, args: Sequence[str], device: str, total_flag: str
) -> list[str]:
    """The arguments that train a cell with one of usrl's trainer CLIs (``usrl.vision.train``,
    ``usrl.sr.train``) in ``trainer_folder(...)``: ``--resume`` to the total that ``args`` give
    ``total_flag`` (``--epochs``, ``--steps``) where an earlier attempt with the same ``args`` left a
    checkpoint there (the cell was killed or timed out), otherwise ``args`` with ``--out`` in a
    fresh folder. The wall time of each attempt is recorded beside it: see :func:`trainer_wall_time`."""
    import shutil

    folder, run = partial_dir(out_dir, method, seed), trainer_folder(out_dir, method, seed)
    identity = folder / "identity.json"
    segments: list[dict[str, Any]] = []
    resume = (run / "checkpoint.pt").is_file() and identity.is_file() and json.loads(identity.read_text()) == list(args)
    if resume:
        segments = _segments(folder)
        last = segments[-1] if segments else None
        if last is not None and last["wall_s"] is None:  # killed: its work counts up to its last checkpoint
            last["wall_s"] = round(max(0.0, (run / "checkpoint.pt").stat().st_mtime - last["started"]), 1)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        identity.write_text(json.dumps(list(args)))
    segments.append({"started": time.time(), "wall_s": None})
    (folder / "segments.json").write_text(json.dumps(segments))
    if resume:
        return ["--resume", str(run), "--device", device, total_flag, args[list(args).index(total_flag) + 1]]
    return [*args, "--out", str(run), "--device", device]


def trainer_folder(out_dir: str | Path, method: str, seed: int) -> Path:
    """The run folder of a cell trained by :func:`trainer_run`'s arguments."""
    return partial_dir(out_dir, method, seed) / "run"


def trainer_wall_time(out_dir: str | Path, method: str, seed: int) -> tuple[float, int]:
    """Once the trainer has finished: the cell's wall time over its attempts (an interrupted one
    counted up to its last checkpoint, whose work the next one resumed) and how many there were."""
    folder = partial_dir(out_dir, method, seed)
    segments = _segments(folder)
    segments[-1]["wall_s"] = round(time.time() - segments[-1]["started"], 1)
    return sum(s["wall_s"] for s in segments), len(segments)


def train_trainer_cell(
    train: Callable[[list[str]], int],
    label: str,
    out_dir: str | Path,
    method: str,
    seed: int,
    args: Sequence[str],
    device: str,
    total_flag: str,
) -> tuple[Path, float, int]:
    """Train a cell with a trainer CLI's ``main`` (``train``) and :func:`trainer_run`'s arguments,
    resuming an interrupted attempt; returns the trainer's run folder, the wall time over the
    attempts and their number. ``RuntimeError`` if the trainer fails (its checkpoint stays)."""
    cli = trainer_run(out_dir, method, seed, args, device, total_flag)
    if cli[0] == "--resume":
        print(f"{label} {method} seed {seed}: resuming from its last checkpoint", flush=True)
    if train(cli) != 0:
        raise RuntimeError(f"training failed: {cli}")
    return (trainer_folder(out_dir, method, seed), *trainer_wall_time(out_dir, method, seed))


def _segments(folder: Path) -> list[dict[str, Any]]:
    path = folder / "segments.json"
    return json.loads(path.read_text()) if path.is_file() else []


@dataclass(frozen=True)
class RayBackend:
    """Cells as Ray tasks on a cluster (``--backend ray``).

    ``address`` is that of a running cluster (``"auto"``, ``HOST:PORT``), or None for Ray's own
    choice (``RAY_ADDRESS``, else a cluster started on this machine, else a new local one).
    Workers get the benchmark scripts (``working_dir``) and the driver's ``usrl`` (plus any
    ``py_modules``) through Ray's runtime environment; the packages usrl needs (torch, SB3, ...) must be
    installed where the workers run. ``paths`` (data folders) must exist on every node and are
    checked before any cell starts. A cell whose worker process dies is run again up to
    ``retries`` times; an exception raised by a cell is not retried."""

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    retries: int = 2
    paths: tuple[str, ...] = ()
    working_dir: str = str(Path(__file__).resolve().parent)
    py_modules: tuple[str, ...] = ()

    def runtime_env(self) -> dict[str, Any]:
        """The runtime environment of the cells: the scripts, usrl and any extra module folders."""
        import usrl

        return {
            "working_dir": self.working_dir,
            "excludes": ["results/", ".data/", "plans/", "__pycache__/"],
            "py_modules": [str(Path(usrl.__file__).parent), *self.py_modules],
            "env_vars": {"OMP_NUM_THREADS": str(self.threads)},
        }

    @property
    def threads(self) -> int:
        """Torch threads per cell: its CPU request, at least one."""
        return max(1, int(self.cpus_per_cell))


class BackendError(RuntimeError):
    """The cluster cannot run the cells (unreachable, or a data folder missing on a node)."""


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--backend`` flags that every width benchmark takes."""
    g = p.add_argument_group("where cells run")
    g.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: processes on this machine (--jobs); ray: tasks on a Ray cluster")  # fmt: skip
    g.add_argument("--address", help="Ray cluster: 'auto' (the one this machine belongs to) or HOST:PORT; default: "
                   "Ray's (RAY_ADDRESS, else a cluster started here with 'ray start', else a new local one)")  # fmt: skip
    g.add_argument("--cpus-per-cell", type=float, default=1.0, help="Ray: CPUs per cell (its torch threads)")
    g.add_argument("--gpus-per-cell", type=float, default=0.0,
                   help="Ray: GPUs per cell (> 0: the cell trains on cuda)")  # fmt: skip
    g.add_argument("--retries", type=int, default=2, help="Ray: re-runs of a cell whose worker died")


def backend_from_args(
    p: argparse.ArgumentParser, args: argparse.Namespace, paths: Sequence[str | Path] = ()
) -> RayBackend | None:
    """The Ray backend the flags ask for (None: local processes); a flag error exits through ``p``."""
    if args.backend == "local":
        given = [f for f, v, d in (("--address", args.address, None), ("--cpus-per-cell", args.cpus_per_cell, 1.0),
                                   ("--gpus-per-cell", args.gpus_per_cell, 0.0), ("--retries", args.retries, 2))
                 if v != d]  # fmt: skip
        if given:
            p.error(f"{given[0]} needs --backend ray")
        return None
    if args.cpus_per_cell <= 0 or args.gpus_per_cell < 0 or args.retries < 0:
        p.error("--cpus-per-cell must be > 0, --gpus-per-cell and --retries >= 0")
    try:
        import ray  # noqa: F401
    except ImportError:
        p.error('--backend ray needs Ray: pip install -e ".[cluster]"')
    return RayBackend(args.address, args.cpus_per_cell, args.gpus_per_cell, args.retries,
                      tuple(str(Path(x).resolve()) for x in paths))  # fmt: skip


def cell_device(backend: RayBackend | None) -> str:
    """The torch device cells train on: cuda where the backend gives each cell a GPU."""
    return "cuda" if backend is not None and backend.gpus_per_cell > 0 else "cpu"


def run_pool(
    fn: Callable[..., dict[str, Any]],
    calls: Sequence[tuple[Any, ...]],
    jobs: int,
    time_limit_s: float | None = None,
    describe: Callable[[tuple[Any, ...]], str] = str,
    *,
    save: Callable[[tuple[Any, ...], dict[str, Any]], None],
    backend: RayBackend | None = None,
) -> int:
    """Run ``fn(*call)`` for each call, and ``save(call, result)`` here as each one finishes.

    Locally, ``jobs`` at a time in fresh worker processes on one thread each (in this process
    for ``jobs=1`` without a time limit); with a :class:`RayBackend`, as Ray tasks on its cluster
    (``jobs`` is then the cluster's business). At ``time_limit_s`` the unfinished calls are
    stopped. Returns how many failed; a failure is printed (with ``describe(call)``) and does not
    stop the others. Raises :class:`BackendError` when the cluster cannot run cells at all."""
    if not calls:
        return 0
    if backend is not None:
        with _sigterm_handler():  # ray.init installs its own, which must not outlive the run
            return _run_ray(fn, calls, backend, time_limit_s, describe, save)
    if jobs <= 1 and time_limit_s is None:
        one_thread()  # cells always train on one thread, so their train times compare across --jobs
        for call in calls:
            save(call, fn(*call))
        return 0
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    with _sigterm_handler(_exit_on_signal):  # a SIGTERM to this driver stops its workers too
        return _run_local(fn, calls, max(1, jobs), deadline, describe, save)


def train_cells(
    fn: Callable[..., dict[str, Any]],
    calls: Sequence[tuple[Any, ...]],
    jobs: int,
    time_limit_s: float | None = None,
    describe: Callable[[tuple[Any, ...]], str] = str,
    *,
    save: Callable[[tuple[Any, ...], dict[str, Any]], None],
    backend: RayBackend | None = None,
) -> int:
    """:func:`run_pool` for a benchmark's command line: its exit code (0: every cell landed, 1: some
    failed, 2: the cluster cannot run cells), with the error line printed."""
    try:
        failed = run_pool(fn, calls, jobs, time_limit_s, describe, save=save, backend=backend)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failed:
        print(f"error: {failed} of {len(calls)} cells failed (above): no report until every cell is there; "
              "rerun to retry them", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _run_local(
    fn: Callable[..., dict[str, Any]],
    calls: Sequence[tuple[Any, ...]],
    jobs: int,
    deadline: float | None,
    describe: Callable[[tuple[Any, ...]], str],
    save: Callable[[tuple[Any, ...], dict[str, Any]], None],
) -> int:
    """:func:`run_pool` on this machine: each call in a fresh process of its own, ``jobs`` at a time.

    Plain processes rather than a ``multiprocessing.Pool``: a cell may start processes of its
    own (a Pool's workers are daemonic and cannot), a worker that dies (OOM-killed, segfault) is
    reported instead of waited on forever, and stopping never blocks on a worker that missed
    its SIGTERM (``Pool.terminate`` joins its workers without a timeout)."""
    import multiprocessing
    import multiprocessing.connection

    ctx = multiprocessing.get_context()
    pending = list(calls)
    running: dict[Any, tuple[tuple[Any, ...], Any]] = {}  # process -> (its call, the pipe's reading end)
    failed = 0
    try:
        while pending or running:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                print(f"time limit reached: {len(running) + len(pending)} cells stopped unfinished", flush=True)
                break
            while pending and len(running) < jobs:
                call = pending.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_local_cell, args=(fn, call, send))
                proc.start()
                send.close()  # the child holds the only writing end: its exit is EOF here
                running[proc] = (call, receive)
            ready = multiprocessing.connection.wait([r for _, r in running.values()], timeout=left)
            for proc, (call, receive) in list(running.items()):
                if receive not in ready:
                    continue
                try:
                    ok, value = receive.recv()
                except EOFError:  # it died without a word
                    ok, value = False, None
                receive.close()
                proc.join(_STOP_GRACE_S)  # it has nothing left to do but exit
                _stop(proc)
                if not ok and value is None:
                    value = f"its worker process died (exit code {proc.exitcode}) before returning"
                del running[proc]
                if ok:
                    save(call, value)
                else:
                    failed += 1
                    print(f"cell {describe(call)} failed: {value}", flush=True)
    finally:
        _stop(*running)
        for _, receive in running.values():
            receive.close()
    return failed


_STOP_GRACE_S = 10.0


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_handler(handler: Callable[[int, Any], None] | None = None) -> Iterator[None]:
    """Within the block, SIGTERM goes to ``handler`` (if given); after it, the handler from before
    comes back, whatever the block installed. Only the main thread can set handlers: elsewhere this
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _local_cell(fn: Callable[..., dict[str, Any]], call: tuple[Any, ...], send: Any) -> None:
    """A local worker process: ``fn(*call)`` on one thread, sent back as ``(True, result)`` or
    ``(False, "ExceptionType: message")``."""
    # SIGTERM ends a worker whatever handler its parent had (Ray's driver installs one); Ctrl-C
    # reaches the whole process group, and the driver, not each worker, answers it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_thread()
    try:
        outcome: tuple[bool, Any] = (True, fn(*call))
    except Exception as e:  # noqa: BLE001  (reported by the driver; one cell's failure must not lose the others)
        outcome = (False, f"{type(e).__name__}: {e}")
    send.send(outcome)
    send.close()


def _stop(*procs: Any) -> None:
    """End worker processes: SIGTERM to each, then SIGKILL to those still alive after one grace
    period (a SIGTERM that lands between fork and the child's own signal setup can be lost)."""
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for proc in alive:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join()


def _ray_cell(fn: Callable[..., dict[str, Any]], call: tuple[Any, ...], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return fn(*call)


def _missing(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if not Path(p).exists()]


def _by_name(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as its module's attribute: a script's functions (module ``__main__``) are sent to
    the workers by the script's module name, which they import from the working dir."""
    if fn.__module__ != "__main__":
        return fn
    import importlib

    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if main_file is None:
        raise BackendError(f"{fn.__qualname__} is defined interactively: Ray workers cannot import it")
    return getattr(importlib.import_module(Path(main_file).stem), fn.__qualname__)


def _run_ray(
    fn: Callable[..., dict[str, Any]],
    calls: Sequence[tuple[Any, ...]],
    backend: RayBackend,
    time_limit_s: float | None,
    describe: Callable[[tuple[Any, ...]], str],
    save: Callable[[tuple[Any, ...], dict[str, Any]], None],
) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # runs offline: no usage reports
    import ray

    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    _check_reachable(backend.address)
    try:
        ray.init(address=backend.address, include_dashboard=False, runtime_env=backend.runtime_env(),
                 logging_level=logging.WARNING, configure_logging=True)  # fmt: skip
    except Exception as e:  # noqa: BLE001  (Ray raises bare Exception when a local start times out)
        where = backend.address or "Ray's default address"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"cannot reach or start the Ray cluster at {where}: {reason}") from None
    failed = 0
    try:
        _check_paths(ray, backend.paths)
        task = ray.remote(_ray_cell).options(num_cpus=backend.cpus_per_cell, num_gpus=backend.gpus_per_cell,
                                             max_retries=backend.retries, retry_exceptions=False)  # fmt: skip
        fn = _by_name(fn)
        running = {task.remote(fn, call, backend.threads): call for call in calls}
        while running:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1, timeout=left)
            if not done:
                print(f"time limit reached: {len(running)} cells stopped unfinished", flush=True)
                for ref in running:
                    ray.cancel(ref, force=True)
                break
            call = running.pop(done[0])
            try:
                value = ray.get(done[0])
            except ray.exceptions.RayError as e:
                failed += 1
                cause = getattr(e, "cause", None) or e
                reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                print(f"cell {describe(call)} failed: {type(cause).__name__}: {reason}", flush=True)
            else:
                save(call, value)
    finally:
        ray.shutdown()
    return failed


def _check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Raise :class:`BackendError` at once when nothing listens at a ``HOST:PORT`` address (Ray
    itself retries for minutes before it gives up)."""
    if address is None or address == "auto" or "://" in address:
        return
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--address {address!r}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BackendError(f"no Ray cluster answers at {address}: {e}") from None


def _check_paths(ray: Any, paths: Sequence[str]) -> None:
    """Raise :class:`BackendError` naming the first data folder that a node with CPUs lacks."""
    if not paths:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    check = ray.remote(_missing)
    refs = {}
    for n in nodes:
        on_node = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        refs[check.options(num_cpus=0, scheduling_strategy=on_node).remote(list(paths))] = n
    for ref, node in refs.items():
        missing = ray.get(ref)
        if missing:
            raise BackendError(
                f"{missing[0]} does not exist on node {node.get('NodeManagerAddress', node['NodeID'])}: "
                "data folders must be at the same path on every node"
            )


def value_at(rows: Sequence[dict[str, Any]], w: float, key: str) -> float | None:
    """``key`` of the row at width ``w`` (None if that width was not evaluated)."""
    return next((r[key] for r in rows if r["width"] is not None and abs(r["width"] - w) < 1e-6), None)


def mean_std(xs: Sequence[float], digits: int) -> str:
    """A table entry: mean ± std over seeds, or a dash without values."""
    return f"{np.mean(xs):.{digits}f} ± {np.std(xs):.{digits}f}" if len(xs) else "–"
