"""Shared set-up of the load-balanced view's tests: a 4-engine cluster in
the kernel with `c`, `rc`, `lv`, `pids` (the engines' pids by id) and
`outcome(ar)`, which says how a task ended in a JSON-able form."""

from __future__ import annotations

from kernel_helpers import execute, execute_ok

START = """
import os, random, tempfile, time
import rparallel as ipp
c = ipp.Cluster(n=4)
rc = c.start_and_connect_sync()
lv = rc.load_balanced_view()
pids = rc[:].apply_sync(os.getpid)

ERRORS = ('RemoteError', 'UnmetDependency', 'ImpossibleDependency',
          'InvalidDependency', 'TaskTimeout', 'TaskAborted')

def outcome(ar, timeout=10):
    '''How a task ended: ['ok', value]; ['error', ename, the classes of
    ERRORS in ipp.error the raised exception is an instance of]; or
    ['pending'] if it is still not done after `timeout` seconds.'''
    ar.wait(timeout)
    if not ar.ready():
        return ['pending']
    try:
        return ['ok', ar.get(timeout=1)]
    except Exception as e:
        return ['error', getattr(e, 'ename', type(e).__name__),
                [n for n in ERRORS if isinstance(e, getattr(ipp.error, n, ()))]]
"""

# What `outcome()` gives for the scheduler's timeout.
TIMED_OUT = ["error", "TaskTimeout", ["RemoteError", "TaskTimeout"]]


def balanced_cluster(kc, more: str = ""):
    """Runs START (then `more`) in the kernel; yields the kernel client and
    stops the cluster afterwards (use as a fixture's body)."""
    execute_ok(kc, START + more, timeout=60)
    yield kc
    execute(kc, "c.stop_cluster_sync()", timeout=30)
