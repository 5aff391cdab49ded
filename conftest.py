"""Root pytest configuration: globals for the doctests of the package (STYLE rule 13)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def add_doctest_deps(doctest_namespace: dict) -> None:
    """Make ``torch`` and ``vireid_layers`` available to every doctest, in the package and in the tests."""
    import vireid_layers

    doctest_namespace["torch"] = torch
    doctest_namespace["vireid_layers"] = vireid_layers
