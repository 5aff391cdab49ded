"""Shared pytest configuration of the test suite: the hypothesis ``ci`` profile and the helper import path.

The doctests of the package import what they use themselves (as a user copying them needs), so no globals are injected.
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


# --------------------------------------------------------------------------------------------------------------
# The device the tests run on
# --------------------------------------------------------------------------------------------------------------
#
# * `--device DEVICE` (or the environment variable VIREID_TEST_DEVICE; default "cpu") sets the `device` fixture:
#   a test that takes `device` builds its modules and tensors there, so `pytest --device cuda tests/...` runs those
#   tests on the GPU. Every test that takes `device` is marked `cuda` when the device is a CUDA one, so
#   `pytest -m cuda --device cuda` selects them together with the tests written for CUDA only.
# * A test that takes `target_device` runs once per device: "cpu" always, "cuda" (marked `cuda`), and the
#   configured `--device` when it is neither (e.g. "cuda:1").
# * A test marked `cuda` is skipped, with the reason printed, when no CUDA device is present; asking for
#   `--device cuda` without one is a usage error rather than a run in which every device test is skipped.

DEVICE_ENV = "VIREID_TEST_DEVICE"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default=None,
        help=f"torch device of the tests that take the `device` fixture (default: ${DEVICE_ENV} or 'cpu')",
    )


def configured_device(config: pytest.Config) -> torch.device:
    """The device of the `device` fixture: ``--device``, else ``$VIREID_TEST_DEVICE``, else the CPU."""
    name = config.getoption("--device") or os.environ.get(DEVICE_ENV) or "cpu"
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise pytest.UsageError(f"--device / {DEVICE_ENV}: {name!r} is not a torch device ({error})") from None


def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def pytest_configure(config: pytest.Config) -> None:
    device = configured_device(config)
    if _is_cuda(device) and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: CUDA is not available on this machine")
    if _is_cuda(device) and device.index is not None and device.index >= torch.cuda.device_count():
        raise pytest.UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")


def pytest_report_header(config: pytest.Config) -> str:
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"vireid test device: {configured_device(config)} (CUDA: {cuda})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `target_device` over the CPU, CUDA (marked `cuda`) and the configured device."""
    if "target_device" not in metafunc.fixturenames:
        return
    names = ["cpu", "cuda"]
    configured = str(configured_device(metafunc.config))
    if configured not in names:
        names.append(configured)
    params = [
        pytest.param(torch.device(n), id=n, marks=[pytest.mark.cuda] if n.startswith("cuda") else []) for n in names
    ]
    metafunc.parametrize("target_device", params)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the `cuda` marks added here count for `-m cuda`
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    device = configured_device(config)
    skip = pytest.mark.skip(reason="needs a CUDA device (none is present)")
    for item in items:
        if _is_cuda(device) and "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device the test builds its modules and tensors on (``--device``, ``$VIREID_TEST_DEVICE``, or the CPU)."""
    return configured_device(pytestconfig)


@pytest.fixture
def exact_float32() -> Iterator[None]:
    """No TF32 in CUDA matrix products and convolutions during the test (float32 compared with a reference)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="session")
def quick_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick run's synthetic dataset: 48 identities (32 for training), 4 images per camera, 64x32.

    ``make_synthetic_dataset``'s defaults, as ``vireid-train`` writes it; shared by the end-to-end short runs,
    which only read it.
    """
    from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("quick-synthetic"), seed=0)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset per test module: 16 identities (10 for training), 2 images per camera, 64x32."""
    from vireid_layers.data.datasets.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        num_identities=16,
        train_identities=10,
        images_per_camera=2,
        height=64,
        width=32,
        seed=0,
    )
