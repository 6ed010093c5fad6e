"""The multi-host tests run inside the lab's head host (`make lab-test`
brings the lab up and runs them there); anywhere else they are skipped.
After each test, nothing the test's clusters started may be left on any
host."""

from __future__ import annotations

import pytest

from lab_helpers import cancel_all_jobs, in_lab, wait_lab_clean


def pytest_collection_modifyitems(config, items):
    if in_lab():
        return
    skip = pytest.mark.skip(reason="multi-host tests run inside the lab: make lab-test")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def nothing_left_on_any_host():
    yield
    left = wait_lab_clean()
    cancel_all_jobs()
    assert not left, f"left running on the lab's hosts: {left}"
