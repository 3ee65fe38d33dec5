"""Shared test setup: hypothesis profiles and small deterministic helpers.

Profiles: ``ci`` (default, small example counts so the suite stays fast on 2 cores) and
``thorough`` (opt in with ``AVBLOCKS_PROFILE=thorough``). Tests marked ``slow`` run only
with ``AVBLOCKS_SLOW=1``.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("AVBLOCKS_PROFILE", "ci"))

torch.set_num_threads(1)  # pytest -n 2 on 2 cores: one thread per worker


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AVBLOCKS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set AVBLOCKS_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
