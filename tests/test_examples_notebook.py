"""`notebooks/ipyparallel-examples.ipynb`: examples from ipyparallel's own
documentation (its tutorial pages and example notebooks, each named in a
markdown cell) with only `import ipyparallel as ipp` changed to `import
rparallel as ipp`, executed by `jupyter nbconvert --execute` on the
rparallel kernel as `make demo` does.

The cells that demonstrate errors (ipyparallel raises there too) are tagged
`raises-exception`; they must raise, and no other cell may. A few results
are checked for what ipyparallel's documentation shows, and afterwards no
process the run started may be left.
"""

from __future__ import annotations

import re

import pytest

from kernel_helpers import REPO, strip_ansi
from notebook_helpers import cell, check_clean_notebook, check_nothing_left, execute_notebook, text

pytestmark = pytest.mark.timeout(300)

NOTEBOOK = REPO / "notebooks" / "ipyparallel-examples.ipynb"
NBCONVERT_TIMEOUT = 240

# cells checked by id
METADATA = "c91b4976"
QUEUE_STATUS = "90556b29"
SPEEDUP = "7f89e6ec"
CONTEXT_MANAGER = "fc54d5e4"
ASYNC_CONTEXT_MANAGER = "061d7d76"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    check_clean_notebook(NOTEBOOK)
    return execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("examples"), NBCONVERT_TIMEOUT)


def plain(c) -> str:
    """Everything a cell showed, as text."""
    parts = []
    for o in c.outputs:
        if o.output_type == "stream":
            parts.append(text(o.text))
        elif "data" in o:
            parts.append(text(o.data.get("text/plain", "")))
    return strip_ansi("".join(parts))


def test_only_the_import_changed():
    nb = check_clean_notebook(NOTEBOOK)
    code = "\n".join(text(c.source) for c in nb.cells if c.cell_type == "code")
    assert "ipyparallel" not in code
    assert "import rparallel as ipp" in code
    sources = [text(c.source) for c in nb.cells if c.cell_type == "markdown"]
    examples = [s for s in sources if re.match(r"## \d+\. ", s)]
    assert len(examples) >= 10, examples
    assert all("docs/source/" in s for s in examples), "every example names its source"


def test_every_cell_ran_and_only_the_error_demonstrations_raised(executed):
    nb = executed[0]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    raising = 0
    for c in code:
        errors = [(o.ename, strip_ansi(o.evalue)[:200]) for o in c.outputs if o.output_type == "error"]
        if "raises-exception" in c.metadata.get("tags", []):
            assert errors, f"cell {c.id} should raise: {text(c.source)[:200]!r}"
            raising += 1
        else:
            assert not errors, f"cell {c.id} raised {errors}: {text(c.source)[:200]!r}"
    assert raising >= 5


def test_results_look_as_in_ipyparallels_documentation(executed):
    nb = executed[0]
    md = plain(cell(nb, METADATA))
    for key in ("msg_id", "submitted", "engine_uuid", "engine_id", "stdout"):
        assert f"'{key}'" in md, md[:500]
    status = plain(cell(nb, QUEUE_STATUS))
    assert re.search(r"0: \{'queue': \d+, 'completed': \d+, 'tasks': \d+\}", status), status
    assert "'unassigned': 0" in status
    speedup = plain(cell(nb, SPEEDUP))
    assert re.search(r"Speedup\s*:\s*[\d.]+x / 4", speedup), speedup
    for cid, engines in ((CONTEXT_MANAGER, 4), (ASYNC_CONTEXT_MANAGER, 2)):
        pids = plain(cell(nb, cid))
        assert re.fullmatch(r"\{" + ", ".join(rf"{i}: \d+" for i in range(engines)) + r"\}\n?", pids), pids


def test_nothing_left_running(executed):
    check_nothing_left(executed)
