import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per test process (and per CLI subprocess it starts): two workers share two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the two CartPole learning files (minutes each) first, so the two test processes start them at once
    items.sort(key=lambda item: not item.path.name.startswith("test_learning"))
