"""Starts the kernel matrix's VMs in the background as soon as pytest has collected, when any
matrix test is selected (see tests/kernels/vm.py, Matrix): the VMs take one core while the rest
of the suite runs on the other, which keeps `make test` well under its 30 minutes."""
import os
import sys

import pytest

from tests.kernels import vm

_matrix = None


def pytest_collection_finish(session):
    global _matrix
    selected = [k for k in vm.MATRIX
                if any(item.nodeid.endswith(f"test_debian_kernel_in_a_vm[{k}]") for item in session.items)]
    if selected and os.geteuid() == 0 and not session.config.option.collectonly:
        _matrix = vm.Matrix(selected, [sys.executable, *vm.SMOKE]).start()


def pytest_sessionfinish(session):
    if _matrix is not None:
        _matrix.stop()


@pytest.fixture(scope="session")
def matrix():
    """The background run (None when pytest started none: not root, or not collected)."""
    return _matrix
