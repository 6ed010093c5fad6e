"""rparallel._remote: what engines run on behalf of the client, so every
rparallel process (kernel, engines, scripts) has it and functions here are
pickled by reference: the chunk function of ``view.map``, and the
decorators of remote functions (``@require``, ``@interactive``)."""

import functools
import sys
import types


def map_chunk(f, *chunks):
    """What one engine runs for view.map: f over its part of the sequences."""
    return list(map(f, *chunks))


def require(*mods):
    """Decorator: import these modules (names or module objects) on the
    engine before the function runs, into its globals. A module that cannot
    be imported raises UnmetDependency."""
    names = []
    for m in mods:
        if isinstance(m, types.ModuleType):
            names.append(m.__name__)
        elif isinstance(m, str):
            names.append(m)
        else:
            raise TypeError("require takes module names or modules, not %r" % (m,))

    def decorate(f):
        @functools.wraps(f)
        def with_requirements(*args, **kwargs):
            import importlib
            from rparallel.error import UnmetDependency
            for name in names:
                try:
                    module = importlib.import_module(name)
                except Exception as e:
                    raise UnmetDependency("cannot import %s: %s" % (name, e)) from None
                f.__globals__[name.split(".")[0]] = sys.modules[name.split(".")[0]]
                del module
            return f(*args, **kwargs)
        return with_requirements
    return decorate


def interactive(f):
    """Marks f as defined in __main__, so it runs in the engine's namespace."""
    f.__module__ = "__main__"
    return f
