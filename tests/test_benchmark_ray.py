"""The width benchmarks' Ray backend, on a local Ray cluster started for this module (loopback,
2 CPUs): the same cells as the local backend, workers that die retried or reported, data folders
checked up front."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a Ray head node on this machine, stopped after the module's tests. Loopback
    only, so without token authentication (Ray turns it on where ~/.ray/auth_token exists, and
    then every driver must be given the token)."""
    port = _free_port()
    quiet = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env = {**os.environ, **quiet}
    # its own short temp dir (Ray's sockets live there): teardown stops this cluster's processes
    # only, not other Ray clusters on the machine as `ray stop` would
    temp = Path(tempfile.mkdtemp(prefix="usrlray", dir="/tmp"))
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]  # fmt: skip
    try:
        subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
        with pytest.MonkeyPatch.context() as mp:  # the drivers in this process see the same settings
            for key, value in quiet.items():
                mp.setenv(key, value)
            yield f"127.0.0.1:{port}"
    finally:
        _stop_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_processes_of(temp: Path) -> None:
    """Terminate (then kill) one Ray cluster's processes: those whose command line names ``temp``
    and their children (the agents rename themselves ``ray::...``)."""
    import psutil  # a dependency of ray

    ours: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp) in part for part in proc.info["cmdline"] or []):
            for p in [proc, *proc.children(recursive=True)]:
                ours[p.pid] = p
    for proc in ours.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(list(ours.values()), timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _report(path: Path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("Command:")]
    return [re.sub(r"[^|]*\|$", "", line) if line.startswith("|") else line for line in lines]


def test_ray_backend_gives_the_local_backends_cells(load_benchmark, cluster: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wvr = load_benchmark("width_vs_return")
    common = ["--task", "tiny", "--seeds", "0", "--methods", "us", "individual_0.5"]
    with pytest.raises(SystemExit) as exc:  # a cluster flag without the ray backend is a usage error
        wvr.main([*common, "--address", cluster, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--address needs --backend ray" in capsys.readouterr().err
    nobody = f"127.0.0.1:{_free_port()}"  # an address nothing listens at: one error line at once
    assert wvr.main([*common, "--backend", "ray", "--address", nobody, "--out", str(tmp_path / "x")]) == 2
    assert f"error: no Ray cluster answers at {nobody}" in capsys.readouterr().err
    assert not (tmp_path / "x" / "cells" / "tiny").exists() or not any((tmp_path / "x" / "cells" / "tiny").iterdir())
    assert wvr.main([*common, "--out", str(tmp_path / "local")]) == 0
    sigterm = signal.getsignal(signal.SIGTERM)
    assert wvr.main([*common, "--backend", "ray", "--address", cluster, "--out", str(tmp_path / "ray")]) == 0
    # ray.init's own SIGTERM handler does not outlive the run (local workers forked later inherit handlers)
    assert signal.getsignal(signal.SIGTERM) == sigterm
    for method in ("us", "individual_0.5"):
        local = json.loads((tmp_path / "local" / "cells" / "tiny" / f"{method}_s0.json").read_text())
        remote = json.loads((tmp_path / "ray" / "cells" / "tiny" / f"{method}_s0.json").read_text())
        for cell in (local, remote):  # the same seeded cell, whichever backend ran it, times aside
            del cell["train_time_s"]
            for segment in cell["segments"]:
                del segment["wall_s"]
        assert remote == local
    # the reports differ only in their command line and the tables' last (train time) column
    assert _report(tmp_path / "local" / "tiny.md") == _report(tmp_path / "ray" / "tiny.md")
    capsys.readouterr()
    assert wvr.main([*common, "--backend", "ray", "--address", cluster, "--out", str(tmp_path / "ray")]) == 0
    assert "0 cells to train, 2 done already" in capsys.readouterr().out  # finished cells are skipped


CRASHY = """
    import os
    from pathlib import Path


    def cell(name: str, markers: str) -> dict:
        marker = Path(markers) / name
        if name == "always_dies" or (name == "dies_once" and not marker.exists()):
            marker.touch()
            os._exit(1)
        return {"name": name}
"""


def test_dead_workers_are_retried_or_reported(cluster: str, tmp_path: Path, load_benchmark, capsys) -> None:  # type: ignore[no-untyped-def]
    cells = load_benchmark("cells")
    package = tmp_path / "crashy_cells"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(CRASHY))
    sys.path.insert(0, str(tmp_path))
    try:
        import crashy_cells  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    markers = tmp_path / "markers"
    markers.mkdir()
    saved: dict[str, dict] = {}
    backend = cells.RayBackend(address=cluster, retries=1, py_modules=(str(package),))
    calls = [(name, str(markers)) for name in ("ok", "dies_once", "always_dies")]
    failed = cells.run_pool(crashy_cells.cell, calls, 1, save=lambda call, r: saved.update({call[0]: r}),
                            describe=lambda call: call[0], backend=backend)  # fmt: skip
    assert failed == 1 and saved == {"ok": {"name": "ok"}, "dies_once": {"name": "dies_once"}}
    assert "cell always_dies failed:" in capsys.readouterr().out

    missing = cells.RayBackend(address=cluster, paths=(str(tmp_path / "no_such_data"),))
    with pytest.raises(cells.BackendError, match="no_such_data does not exist on node"):
        cells.run_pool(crashy_cells.cell, calls[:1], 1, save=lambda call, r: None, backend=missing)
