"""pytest configuration for the end-to-end tests of the rparallel kernel.

Runs standalone (``.venv/bin/python -m pytest tests``) as well as from
``make test``: the kernelspec is looked up in ``<repo>/.venv/share/jupyter``
and the connection files of the kernels go to ``<repo>/target/pytest-runtime``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("JUPYTER_PATH", str(_REPO / ".venv" / "share" / "jupyter"))
os.environ.setdefault("JUPYTER_RUNTIME_DIR", str(_REPO / "target" / "pytest-runtime"))
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
Path(os.environ["JUPYTER_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: E402

from kernel_helpers import KERNEL_NAME, drain, shutdown_and_check, start_kernel  # noqa: E402


def pytest_report_header(config):
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        where = f"{spec.resource_dir} argv={spec.argv}"
    except NoSuchKernel:
        where = "NOT INSTALLED (run `make kernelspec`)"
    return [
        f"kernel under test: {KERNEL_NAME} -> {where}",
        f"JUPYTER_PATH={os.environ['JUPYTER_PATH']}",
    ]


@pytest.fixture
def kernel():
    """A fresh kernel and a started BlockingKernelClient: ``(km, kc)``.

    Shut down at the end of the test; the teardown fails if the kernel's
    process (or anything started with its connection file) is left over.
    """
    km, kc = start_kernel()
    try:
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def kc(kernel):
    """Just the client of the ``kernel`` fixture."""
    return kernel[1]


@pytest.fixture(scope="module")
def shared_kernel():
    """One kernel for a whole module, for tests that do not disturb it."""
    km, kc = start_kernel()
    try:
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def skc(shared_kernel):
    """The client of ``shared_kernel``, with its channels drained."""
    kc = shared_kernel[1]
    drain(kc)
    return kc
