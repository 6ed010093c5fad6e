"""rparallel: interactive parallel Python with ipyparallel's API.

    import rparallel as ipp
    with ipp.Cluster(n=4) as rc:
        print(rc[:].map_sync(lambda x: x * x, range(8)))

Client, DirectView, AsyncResult, Cluster, ``rparallel.error`` and the
``%px`` magics (registered in a running IPython) come from the compiled
module ``rparallel._native``, the same code as the ``rparallel`` kernel's.
"""

import sys as _sys

if _sys.version_info < (3, 11):
    raise ImportError(
        "rparallel needs CPython 3.11 or later; this is %d.%d"
        % _sys.version_info[:2])

import atexit as _atexit

from rparallel._native import install as _install, at_exit as _at_exit

_install()
# A script that exits without stopping its clusters stops them here (a
# killed one takes them along: they die with their parent), and its files
# in /dev/shm go.
_atexit.register(_at_exit)
del _install, _atexit
