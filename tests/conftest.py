import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per test process (and per CLI subprocess it starts): two workers share two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the files of minutes each first (the two CartPole learning files, SB3's suite), so that the two
    # test processes start on them and the short files fill in beside them, not after
    slow = ("test_learning", "test_sb3_conformance")
    items.sort(key=lambda item: not item.path.name.startswith(slow))


@pytest.fixture
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import a script of ``benchmarks/`` by its name (they are scripts, not a package), registered
    in ``sys.modules`` as the scripts import one another (and dataclasses look modules up there)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Callable[[Callable[[list[str]], int], list[str]], tuple[int, str]]:
    """Run a command line's ``main(argv)`` in this process (seconds cheaper than a fresh
    interpreter): its exit code, returned or raised as ``SystemExit``, and what it wrote to stderr."""

    def run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        return code, capsys.readouterr().err

    return run
