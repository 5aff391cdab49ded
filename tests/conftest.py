"""Shared pytest configuration of the test suite: the hypothesis ``ci`` profile and the helper import path.

The doctest globals live in the root ``conftest.py`` so that they also reach the doctests of the package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# The tests are not a package (rootdir-based discovery), so shared helpers (`strategies.py`) are imported by
# putting this directory on the path once, here.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

# Reproducible property tests (STYLE rule 15): the same examples on every run, no wall-clock deadline, and the
# failing example's blob printed so it can be replayed with `@reproduce_failure`. `database=None` keeps runs
# independent of (and from writing) a local `.hypothesis/` directory.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30, print_blob=True, database=None)
settings.register_profile("dev", deadline=None, max_examples=200, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The unit tests use tiny tensors, for which intra-op threads only add latency: on a busy 2-core machine one
# parallel `bmm` on a (2, 12, 3) batch took ~25 ms with 2 threads and ~5 us with one. Override with
# VIREID_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("VIREID_TEST_THREADS", "1")))


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Readable test ids for dtypes: ``test_reference[float64-...]`` rather than ``[dtype3-...]``."""
    if isinstance(val, torch.dtype):
        return str(val).removeprefix("torch.")
    return None


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """An empty ``torch.compile`` cache before and after the test, so compile tests do not see each other's graphs."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
