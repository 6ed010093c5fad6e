"""``python -m rparallel`` and the ``rparallel`` script: the command line
(``install``, ``kernel``, ``cluster``, ``controller``, ``engine``)."""

import sys


def main():
    from rparallel._native import main as run
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    main()
