"""`notebooks/load-balanced.ipynb` executed by `jupyter nbconvert --execute`
on the rparallel kernel, as `make demo` does: a cluster of four engines, a
first-come `lv.map(..., ordered=False)` over 24 Monte Carlo simulations of
very uneven size with a progress line, the same work split statically by a
DirectView for comparison, a small task graph built with `after=`
dependencies, `rc.executor()` as a `concurrent.futures.Executor`, and the
cluster stopped at the end.

Cells are found by their nbformat ids. The saved notebook must hold no
error; the printed numbers must show what the load-balanced view promises
(every result arrives once, the same prices as the static split, every
engine busy, dependencies respected, executor results in order), and
afterwards no process the run started (kernel, controller, engines) may be
left.
"""

from __future__ import annotations

import re

import pytest

from kernel_helpers import REPO
from notebook_helpers import cell as _cell
from notebook_helpers import check_cells_ran, check_clean_notebook, check_nothing_left, execute_notebook
from notebook_helpers import stdout as _stdout
from notebook_helpers import summary as _summary

# the whole run takes a few seconds; nbconvert gets 60 s, the cleanup 20 s
pytestmark = pytest.mark.timeout(90)

NOTEBOOK = REPO / "notebooks" / "load-balanced.ipynb"
NBCONVERT_TIMEOUT = 60
ENGINES = 4

# the notebook's cells, by id
START = "69a73ab1"
SETUP = "57a3b562"
BALANCED_MAP = "bd0d592d"
COMPARISON = "a7b86058"
DEPENDENCIES = "44f1c637"
EXECUTOR = "83f51d72"
STOP = "905aacd3"

# the notebook's inputs (cell SETUP) and the Black-Scholes price it prints
SIZES = [2_000 * n**3 for n in range(24, 0, -1)]
S0, STRIKE, RATE, VOL, YEARS = 100.0, 105.0, 0.02, 0.25, 1.0
EXACT = 8.6990
SUBMITTED = (20_000_000, 2_000_000, 8_000_000, 200_000)
MAPPED = (100_000, 200_000, 400_000)

NUM = r"(-?\d+\.\d+)"
STEP_RE = re.compile(rf"^(\w+)\s+{NUM} s → \s*{NUM} s", re.M)
SHARES_RE = r"\s+(\d+\.\d+)s\s+\[([\d, ]*)\]"


def test_notebook_is_clean_and_targets_rparallel():
    nb = check_clean_notebook(NOTEBOOK)
    code_ids = [c.id for c in nb.cells if c.cell_type == "code"]
    assert code_ids == [START, SETUP, BALANCED_MAP, COMPARISON, DEPENDENCIES, EXECUTOR, STOP]
    # the cluster the notebook starts is stopped by its last cell
    assert nb.cells[-1].source.strip() == "cluster.stop_cluster_sync()"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs the notebook once through nbconvert (no --allow-errors) with its
    cluster in a temporary RPARALLEL_DIR; yields (notebook, process, path,
    leftovers, rp_dir)."""
    yield execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("load-balanced"), NBCONVERT_TIMEOUT)


def _simulate_price(n_paths, chunk=250_000):
    """The notebook's `simulate` (seeded by n_paths), here: its price."""
    import numpy as np

    rng = np.random.default_rng(n_paths)
    total, done = 0.0, 0
    while done < n_paths:
        m = min(chunk, n_paths - done)
        z = rng.standard_normal(m)
        st = S0 * np.exp((RATE - VOL**2 / 2) * YEARS + VOL * np.sqrt(YEARS) * z)
        total += np.maximum(st - STRIKE, 0.0).sum()
        done += m
    return float(np.exp(-RATE * YEARS) * total / n_paths)


def test_nothing_left_running(executed):
    check_nothing_left(executed)


def test_every_cell_ran_without_error(executed):
    nb = executed[0]
    check_cells_ran(nb)
    for cell in nb.cells:
        stderr = [o for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"cell {cell.id} wrote to stderr: {_summary(cell)}"


def test_cluster_of_four_and_the_inputs(executed):
    nb = executed[0]
    start = _cell(nb, START)
    ids = [o.data["text/plain"] for o in start.outputs if o.output_type == "execute_result"]
    assert ids == ["[0, 1, 2, 3]"], _summary(start)
    out = _stdout(_cell(nb, SETUP))
    assert "24 simulations, 27,648,000 down to 2,000 paths, 180,000,000 in all" in out, out
    assert f"exact price: {EXACT:.4f}" in out, out


def test_first_come_map_progress_and_wall_time(executed):
    cell = _cell(executed[0], BALANCED_MAP)
    out = _stdout(cell)
    # one progress line per result, rewritten in place with `\r`
    progress = re.findall(r"\[([# ]{30})\]\s+(\d+)/24  last:\s+([\d,]+) paths", out)
    assert [int(done) for _, done, _ in progress] == list(range(1, 25)), _summary(cell)
    assert progress[-1][0] == "#" * 30, progress[-1]
    assert re.search(r"\[#{30}\] 24/24  last:", out), out
    # every simulation came back exactly once
    arrived = [int(paths.replace(",", "")) for _, _, paths in progress]
    assert sorted(arrived) == sorted(SIZES), arrived
    m = re.search(r"\nload-balanced: (\d+\.\d+) s\n", out)
    assert m, out
    assert 0 < float(m.group(1)) < NBCONVERT_TIMEOUT, out
    m = re.search(r"largest run: 27,648,000 paths, price (\d+\.\d+) \(exact (\d+\.\d+)\)", out)
    assert m, out
    assert float(m.group(2)) == EXACT, out
    assert abs(float(m.group(1)) - EXACT) < 0.05, out


def test_same_prices_and_cpu_shares_of_four_engines(executed):
    cell = _cell(executed[0], COMPARISON)
    out = _stdout(cell)
    assert "same prices either way: True" in out.splitlines(), out
    shares = {}
    for name in ("load-balanced", "static split"):
        m = re.search(rf"^{name}{SHARES_RE}$", out, re.M)
        assert m, f"no {name!r} line in {out!r}"
        assert float(m.group(1)) > 0, out
        shares[name] = [int(s) for s in m.group(2).split(",")]
    for name, per_engine in shares.items():
        # CPU time spent in each of four engine processes, in rounded percent
        assert len(per_engine) == ENGINES, f"{name}: {per_engine} in {out!r}"
        assert per_engine == sorted(per_engine), per_engine
        assert 97 <= sum(per_engine) <= 103, f"{name}: {per_engine}"
    # the first four tasks alone (the largest) give every engine over 10 % of
    # the work: a scheduler that keeps all engines busy leaves none idle
    assert shares["load-balanced"][0] >= 5, out


def test_dependencies_respected(executed):
    cell = _cell(executed[0], DEPENDENCIES)
    out = _stdout(cell)
    steps = {name: (float(start), float(end)) for name, start, end in STEP_RE.findall(out)}
    assert sorted(steps) == ["clean", "combine", "features", "load", "unrelated"], out
    # printed sorted by start time
    starts = [float(s) for _, s, _ in STEP_RE.findall(out)]
    assert starts == sorted(starts), out
    for name, seconds in (("load", 0.4), ("clean", 0.3), ("features", 0.5), ("combine", 0.2), ("unrelated", 0.1)):
        start, end = steps[name]
        assert 0 <= start and end - start >= seconds - 0.011, f"{name}: {steps[name]} in {out}"
    # (rounded to 0.01 s, so an end may print equal to the next start)
    load_end = steps["load"][1]
    assert load_end <= steps["clean"][0], f"clean started before load ended:\n{out}"
    assert load_end <= steps["features"][0], f"features started before load ended:\n{out}"
    combine_start = steps["combine"][0]
    assert combine_start >= steps["clean"][1], f"combine started before clean ended:\n{out}"
    assert combine_start >= steps["features"][1], f"combine started before features ended:\n{out}"
    # no dependency: it runs on another engine while load still runs
    assert steps["unrelated"][0] < load_end, f"unrelated waited for load:\n{out}"


def test_executor_results_and_map_in_order(executed):
    cell = _cell(executed[0], EXECUTOR)
    out = _stdout(cell)
    results = re.findall(r"^\s*([\d,]+) paths: (\d+\.\d+) \((\d+) ms of CPU\)$", out, re.M)
    assert len(results) == 4, _summary(cell)
    assert sorted(int(n.replace(",", "")) for n, _, _ in results) == sorted(SUBMITTED), out
    for _, price, _ in results:
        assert abs(float(price) - EXACT) < 0.1, out
    m = re.search(r"^in order: \[([^\]]*)\]$", out, re.M)
    assert m, out
    prices = [float(p) for p in m.group(1).split(",")]
    assert len(prices) == 3, out
    # `ex.map` keeps the order of its inputs: each price is that of its own
    # (seeded, so reproducible here) simulation
    expected = [_simulate_price(n) for n in MAPPED]
    assert prices == pytest.approx(expected, abs=0.0011), (prices, expected)


def test_cluster_stopped_by_last_cell(executed):
    cell = _cell(executed[0], STOP)
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert cell.execution_count is not None and not errors, _summary(cell)
