"""rparallel._remote: what engines run on behalf of the client, so every
rparallel process (kernel, engines, scripts) has it and functions here are
pickled by reference: the chunk function of ``view.map``, and the
decorators of remote functions (``@require``, ``@interactive``,
``@depend`` and its ``dependent`` functions)."""

import functools
import sys
import types


def map_chunk(f, *chunks):
    """What one engine runs for view.map: f over its part of the sequences."""
    return list(map(f, *chunks))


def require(*objects, **mapping):
    """Decorator: what the function needs on the engine. Modules (names or
    module objects) are imported there before it runs, into its globals;
    functions given positionally, and any object given by keyword, are
    sent along and put in its globals under their names. A module that
    cannot be imported raises UnmetDependency."""
    names = []
    values = dict(mapping)
    for m in objects:
        if isinstance(m, types.ModuleType):
            names.append(m.__name__)
        elif isinstance(m, str):
            names.append(m)
        elif callable(m) and hasattr(m, "__name__"):
            values[m.__name__] = m
        else:
            raise TypeError("require takes modules, module names and functions "
                            "(other objects by keyword), not %r" % (m,))

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
            if values:
                # As ipyparallel: pushed to the engine's namespace, under
                # their names (and where f looks them up).
                import __main__
                __main__.__dict__.update(values)
                f.__globals__.update(values)
            return f(*args, **kwargs)
        return with_requirements
    return decorate


def interactive(f):
    """Marks f as defined in __main__, so it runs in the engine's namespace."""
    f.__module__ = "__main__"
    return f


class dependent:
    """``f`` with a functional dependency: on the engine, ``df(*dargs,
    **dkwargs)`` runs first, and when it returns False the task raises
    UnmetDependency, so the scheduler gives it to another engine (never
    the same one twice). A class, not a closure, so it pickles."""

    def __init__(self, _wrapped_f, _wrapped_df, *dargs, **dkwargs):
        self.f = _wrapped_f
        self.__name__ = getattr(_wrapped_f, "__name__", "f")
        self.__doc__ = getattr(_wrapped_f, "__doc__", None)
        self.df = _wrapped_df
        self.dargs = dargs
        self.dkwargs = dkwargs

    def check_dependency(self):
        if self.df(*self.dargs, **self.dkwargs) is False:
            from rparallel.error import UnmetDependency
            raise UnmetDependency("%s's dependency is not met on this engine" % self.__name__)

    def __call__(self, *args, **kwargs):
        self.check_dependency()
        return self.f(*args, **kwargs)

    def __repr__(self):
        return "<dependent %s on %s>" % (self.__name__, getattr(self.df, "__name__", self.df))


class depend:
    """Decorator: ``@depend(df, *args, **kwargs)`` makes a task run only on
    engines where ``df(*args, **kwargs)`` does not return False."""

    def __init__(self, _wrapped_f, *args, **kwargs):
        self.f = _wrapped_f
        self.args = args
        self.kwargs = kwargs

    def __call__(self, f):
        return dependent(f, self.f, *self.args, **self.kwargs)


class Reference:
    """A name in the engine's namespace, given as an argument (or as the
    function) of ``apply``/``map``: the engine passes the value the name
    has there. ``Reference('a.b')`` evaluates the dotted name; an undefined
    one raises NameError on the engine."""

    __slots__ = ("_name",)

    def __init__(self, name):
        if not isinstance(name, str):
            raise TypeError("Reference needs a name (str), not %r" % (name,))
        self._name = name

    @property
    def name(self):
        """The name (or dotted name) it stands for on the engine."""
        return self._name

    def __reduce__(self):
        return (Reference, (self.name,))

    def __repr__(self):
        return "<Reference: %r>" % self.name

    def __call__(self, *args, **kwargs):
        raise TypeError("a Reference is resolved on the engine; %r cannot be called here"
                        % self.name)


def start_dask_worker(address, nthreads):
    """On an engine: a dask.distributed Worker of the scheduler at
    ``address``, on an event loop of its own thread (the engine's Python
    thread stays free for requests)."""
    import asyncio
    import threading
    import distributed

    ready = threading.Event()
    state = {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def start():
            # Loopback only, no web server: a worker runs whatever it is
            # sent, unauthenticated.
            worker = await distributed.Worker(address, nthreads=nthreads, host="127.0.0.1",
                                              dashboard=False, dashboard_address=None)
            state["worker"], state["loop"] = worker, loop
            ready.set()
            await worker.finished()

        try:
            loop.run_until_complete(start())
        except BaseException as e:  # reported to the caller
            state["error"] = e
            ready.set()

    threading.Thread(target=run, daemon=True, name="dask-worker").start()
    ready.wait(60)
    if "error" in state:
        raise state["error"]
    import __main__
    __main__.__dict__["_rparallel_dask_worker"] = state
    return state["worker"].address


def stop_dask_worker():
    """On an engine: closes the Worker ``start_dask_worker`` started."""
    import asyncio
    import __main__
    state = __main__.__dict__.pop("_rparallel_dask_worker", None)
    if state and "worker" in state:
        done = asyncio.run_coroutine_threadsafe(state["worker"].close(), state["loop"])
        done.result(30)


def bind_kernel(**kwargs):
    """On an engine: serve its namespace as a Jupyter kernel too, so a
    frontend can attach (``jupyter console --existing kernel-<pid>.json``);
    returns that connection file's path. Elsewhere (the kernel, a script)
    it does nothing and returns None, as ipyparallel's. The kernel listens
    on 127.0.0.1 with a key of its own; its file is mode 0600 in Jupyter's
    runtime directory, and goes when the engine stops."""
    import os
    import rparallel
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        runtime = jupyter_runtime_dir()
    except ImportError:
        runtime = os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter", "runtime")
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    path = os.path.join(runtime, "kernel-%d.json" % os.getpid())
    if os.path.exists(path):
        return path  # bound already
    if not rparallel._bind_kernel(path):
        return None
    print("To connect a client: --existing %s" % os.path.basename(path))
    return path
