"""Short training runs of the end-to-end tests, run in separate processes, as many at a time as there are cores.

Each run is single-threaded (its numbers were measured that way: one thread keeps them the same on every machine),
so two of them on a two-core machine take the time of one. :func:`start_runs` submits the runs that the session
selected to a pool of spawned processes; each test waits for its own run's future, so a failing run fails only
its test, with the worker's exception.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

#: At most this many runs at a time (the CI machine has two cores).
MAX_WORKERS = 2


def selected_params(request: pytest.FixtureRequest, test_name: str) -> list[dict[str, Any]]:
    """The parameters of the selected items of the test function ``test_name`` (``-k`` and friends respected)."""
    return [
        item.callspec.params
        for item in request.session.items
        if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")
    ]


@contextmanager
def start_runs(fn: Callable[..., Any], runs: Mapping[Hashable, tuple[Any, ...]]) -> Iterator[dict[Hashable, Future]]:
    """Submit ``fn(*args)`` for every ``key: args`` of ``runs``; yield ``key -> Future``; shut the pool down after.

    ``fn`` must be a module-level function (the processes are spawned, not forked: torch's threads and the
    parent's state do not carry over).
    """
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1, len(runs)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {key: pool.submit(fn, *args) for key, args in runs.items()}
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()
