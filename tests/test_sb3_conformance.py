"""Drop-in means drop-in: Stable-Baselines3's own test suite, run with USDQN, USPPO and USA2C in
place of DQN, PPO and A2C, passes except for the listed cases (each with its reason, also in the
README).

Two lists. ``EXPECTED_FAILURES``: cases that assert SB3 internals a US algorithm cannot match;
they must fail (a pass means the list is stale). ``LEARNING_THRESHOLDS``: cases that assert how
fast a fixed budget learns; the sandwich rule with inplace distillation misses those thresholds
today (the method issue for actor-critic owns the fix, and the same is measured for US-DQN),
so they may fail or pass, and the run reports which.

The tests come from the stable-baselines3 sdist of the installed version, downloaded once with
pip into a cache folder that survives between runs (``$USRL_SB3_TESTS_CACHE``, default
``~/.cache/usrl/sb3-tests``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import stable_baselines3

HERE = Path(__file__).parent
# every SB3 test file that constructs DQN, PPO or A2C
SB3_FILES = [
    "test_buffers.py", "test_callbacks.py", "test_cnn.py", "test_custom_policy.py", "test_deterministic.py",
    "test_dict_env.py", "test_gae.py", "test_her.py", "test_identity.py", "test_logger.py", "test_n_step_replay.py",
    "test_predict.py", "test_run.py", "test_save_load.py", "test_sde.py", "test_spaces.py", "test_tensorboard.py",
    "test_train_eval_mode.py", "test_utils.py", "test_vec_envs.py", "test_vec_extract_dict_obs.py",
    "test_vec_monitor.py", "test_vec_normalize.py",
]  # fmt: skip

# node id (file::test[params] as pytest prints it) -> why the case cannot pass with a US algorithm
EXPECTED_FAILURES: dict[str, str] = {}

# node id -> the learning threshold it asserts and what misses it (US-A2C's and US-PPO's identity
# and GAE cases pass since their default teacher_guard="drift" and are asserted like any other case)
LEARNING_THRESHOLDS: dict[str, str] = {
    "test_callbacks.py::test_eval_success_logging": (
        "HER + DQN > 50% evaluation success on 2-bit flipping after 500 steps; US-DQN is at the edge "
        "(passed in some runs, 40% in another): the same distillation slowdown as test_performance_her"
    ),
    "test_her.py::test_performance_her[10]": (
        "HER + DQN > 90% success on 10-bit flipping after 1500 steps; US-DQN's distillation (mse, huber or kl) "
        "keeps it near 0% (n_widths=1: 94-98%, distill=None: 22-94% over 3 seeds; SB3 DQN 14-92%)"
    ),
}


def sb3_tests_dir() -> Path:
    """SB3's ``tests/`` folder for the installed version, downloaded into the cache on first use."""
    version = stable_baselines3.__version__
    root = Path(os.environ.get("USRL_SB3_TESTS_CACHE", Path.home() / ".cache" / "usrl" / "sb3-tests"))
    target = root / version
    if (target / "tests" / "test_run.py").is_file():
        return target / "tests"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
             f"stable-baselines3=={version}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, f"cannot download the stable-baselines3 {version} sdist: {res.stderr[-2000:]}"
        (sdist,) = Path(tmp).glob("*.tar.gz")
        staging = Path(tmp) / "unpacked"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/tests/" in m.name]
            tar.extractall(staging, members=members, filter="data")
        (tests,) = staging.glob("*/tests")
        target.mkdir(parents=True, exist_ok=True)
        tests.rename(target / "tests")  # atomic: a half-extracted folder is never used
    return target / "tests"


def run_suite(tests: Path, report: Path, files: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE / "sb3_conformance"), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", *files, "-p", "usrl_substitute", "-p", "no:cacheprovider", "-q",
         "-o", "addopts=", "-m", "not expensive", f"--junitxml={report}", "-W", "ignore::DeprecationWarning"],
        cwd=tests, env=env, capture_output=True, text=True, timeout=3000,
    )  # fmt: skip


def outcomes(report: Path) -> dict[str, str]:
    """``{node id: "passed" | "failed" | "skipped"}`` from a JUnit XML report."""
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        file = case.get("classname", "").split(".")[-1] + ".py"
        node = f"{file}::{case.get('name')}"
        kinds = {child.tag for child in case}
        out[node] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return out


def test_sb3_suite_passes_with_us_algorithms(tmp_path: Path) -> None:
    tests = sb3_tests_dir()
    report = tmp_path / "report.xml"
    res = run_suite(tests, report, SB3_FILES)
    assert report.is_file(), res.stdout[-3000:] + res.stderr[-3000:]
    results = outcomes(report)
    failed = sorted(n for n, o in results.items() if o == "failed")
    unexpected = [n for n in failed if n not in EXPECTED_FAILURES and n not in LEARNING_THRESHOLDS]
    slow = [n for n in failed if n in LEARNING_THRESHOLDS]
    print(f"learning thresholds missed: {len(slow)} of {len(LEARNING_THRESHOLDS)}", *slow, sep="\n  ")
    fixed = [n for n in EXPECTED_FAILURES if results.get(n) == "passed"]
    assert not unexpected, (
        f"{len(unexpected)} unexpected failures:\n" + "\n".join(unexpected) + "\n" + res.stdout[-5000:]
    )
    assert not fixed, "listed as expected failures but passed (update EXPECTED_FAILURES and the README):\n" + "\n".join(
        fixed
    )
    assert sum(o == "passed" for o in results.values()) > 250  # the suite really ran (284 cases selected)
