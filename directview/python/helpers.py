"""The client's parts of the rparallel module that are most natural in
Python: import syncing, partitioning and joining for map, scatter and
gather, iteration over results, the %px views, ExecuteReply. Installed as
``rparallel._helpers`` where the client runs. (What engines run for the
client is ``rparallel._remote``.)"""

import builtins
import concurrent.futures
import contextlib
import itertools
import sys
import threading


def partition(seq, lo, hi):
    """seq[lo:hi], keeping numpy arrays as arrays (sent without copies) and
    turning ranges and other sequences into lists."""
    if hasattr(seq, "__array__") and hasattr(seq, "shape"):
        return seq[lo:hi]
    if isinstance(seq, (list, tuple)):
        return list(seq[lo:hi])
    return list(itertools.islice(seq, lo, hi))


def map_part(seq, lo, hi):
    """seq[lo:hi] for a map, whose function sees only the items: a range
    stays a range (a few bytes to pickle and send, not a list of its
    items, and cut without walking it from the start)."""
    if isinstance(seq, range):
        return seq[lo:hi]
    return partition(seq, lo, hi)


def sequence(seq):
    """A sliceable, sized form of seq."""
    if hasattr(seq, "__len__") and hasattr(seq, "__getitem__"):
        return seq
    return list(seq)


def concat(parts):
    """Joins per-engine parts: arrays into one array, anything else into a list."""
    parts = list(parts)
    if parts and all(hasattr(p, "__array__") and hasattr(p, "shape") for p in parts):
        import numpy
        return numpy.concatenate(parts)
    out = []
    for p in parts:
        if isinstance(p, (list, tuple)) or (hasattr(p, "__array__") and hasattr(p, "shape")):
            out.extend(p)
        else:
            out.append(p)
    return out


@contextlib.contextmanager
def sync_imports(view, local=True, quiet=False):
    """Imports inside the block happen on the view's engines too:
    ``with dview.sync_imports(): import numpy``."""
    real_import = builtins.__import__
    done = set()

    def remote_import(name, globals=None, locals=None, fromlist=(), level=0):
        user = sys._getframe(1).f_globals.get("__name__") == "__main__"
        if user and level == 0 and name not in done:
            done.add(name)
            if fromlist:
                names = ", ".join(fromlist)
                if not quiet:
                    print("from %s import %s on engine(s)" % (name, names))
                view.execute("from %s import %s" % (name, names), block=True)
            else:
                if not quiet:
                    print("importing %s on engine(s)" % name)
                view.execute("import %s" % name, block=True)
        if local:
            return real_import(name, globals, locals, fromlist, level)
        return None

    builtins.__import__ = remote_import
    try:
        yield
    finally:
        builtins.__import__ = real_import


def when_done(result, callback):
    """Calls callback(result) from a thread once result is ready."""
    import threading

    def wait_then_call():
        result.wait()
        callback(result)

    threading.Thread(target=wait_then_call, daemon=True).start()


def iterate(result, concat, ordered=True):
    """Iterates an AsyncResult's values as they arrive: in order, or
    (`ordered=False`) each part as soon as it finished."""
    pending = list(range(len(result.msg_ids)))
    while pending:
        i = pending[0] if ordered else result._first_done(pending)
        pending.remove(i)
        part = result._part(i)
        if concat and not isinstance(part, BaseException):
            yield from part
        else:
            yield part


class IMap:
    """`LoadBalancedView.imap`: `f` over the items of an iterable (which may
    be endless), keeping at most `max_outstanding` tasks submitted and not
    yet taken; yields results in order, or (`ordered=False`) as they finish.
    `cancel()` stops submitting (tasks already sent finish)."""

    def __init__(self, view, f, iterables, ordered, max_outstanding, return_exceptions):
        if max_outstanding == "auto":
            max_outstanding = 2 * max(1, len(view.client.ids))
        if isinstance(max_outstanding, bool) or not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError("max_outstanding must be a positive int or 'auto', not %r" % (max_outstanding,))
        self._view, self._f = view, f
        self._items = zip(*iterables)
        self._ordered = ordered
        self._max = max_outstanding
        self._return_exceptions = return_exceptions
        self._outstanding = []
        self._cancelled = False
        self._exhausted = False

    def __iter__(self):
        return self

    def _fill(self):
        while not (self._cancelled or self._exhausted) and len(self._outstanding) < self._max:
            try:
                args = next(self._items)
            except StopIteration:
                self._exhausted = True
                break
            self._outstanding.append(self._view.apply_async(self._f, *args))

    def __next__(self):
        self._fill()
        if not self._outstanding:
            raise StopIteration
        if self._ordered:
            ar = self._outstanding.pop(0)
        else:
            ar = self._first_done()
        try:
            return ar.get()
        except Exception as e:
            if self._return_exceptions:
                return e
            raise
        finally:
            self._fill()

    def _first_done(self):
        while True:
            for i, ar in enumerate(self._outstanding):
                if ar.ready():
                    return self._outstanding.pop(i)
            self._outstanding[0].wait(0.002)

    @property
    def outstanding(self):
        """How many tasks are submitted and not yet taken."""
        return len(self._outstanding)

    def cancel(self):
        self._cancelled = True


@contextlib.contextmanager
def temp_flags(view, flags):
    """``view.temp_flags(**flags)``: the flags set for a ``with`` block,
    the old ones back afterwards (even when the block raises)."""
    saved = {name: getattr(view, name) for name in view._flag_names}
    view.set_flags(**flags)
    try:
        yield view
    finally:
        view.set_flags(**saved)


# ------------------------------------------------------- task dependencies

def _is_result(obj):
    import rparallel
    return isinstance(obj, rparallel.AsyncResult)


class Dependency(set):
    """A set of msg_ids a load-balanced task depends on (``after=`` /
    ``follow=``), with how to judge them: ``all`` (else any one),
    ``success`` (successes count), ``failure`` (failures count). Takes
    msg_ids, AsyncResults, lists of them, or another Dependency's
    ``as_dict()``."""

    all = True
    success = True
    failure = False

    def __init__(self, dependencies=(), all=True, success=True, failure=False):
        if isinstance(dependencies, dict):
            all = dependencies.get("all", True)
            success = dependencies.get("success", success)
            failure = dependencies.get("failure", failure)
            dependencies = dependencies.get("dependencies", [])
        if isinstance(dependencies, str) or _is_result(dependencies):
            dependencies = [dependencies]
        ids = []
        for d in dependencies:
            if isinstance(d, str):
                ids.append(d)
            elif _is_result(d):
                ids.extend(d.msg_ids)
            else:
                raise TypeError("invalid dependency type: %r" % type(d))
        set.__init__(self, ids)
        if not (success or failure):
            raise ValueError("Must depend on at least one of successes or failures!")
        self.all, self.success, self.failure = all, success, failure

    def _counting(self, completed, failed):
        against = set()
        if self.success:
            against = set(completed)
        if failed is not None and self.failure:
            against = against.union(failed)
        return against

    def check(self, completed, failed=None):
        """Whether the dependency is met, given the finished msg_ids."""
        if not self:
            return True
        against = self._counting(completed, failed)
        return self.issubset(against) if self.all else not self.isdisjoint(against)

    def unreachable(self, completed, failed=None):
        """Whether the dependency can no longer be met."""
        if not self:
            return False
        against = set()
        if not self.success:
            against = set(completed)
        if failed is not None and not self.failure:
            against = against.union(failed)
        return not self.isdisjoint(against) if self.all else self.issubset(against)

    def as_dict(self):
        """As JSON: what the scheduler reads."""
        return dict(dependencies=list(self), all=self.all, success=self.success,
                    failure=self.failure)

    def __repr__(self):
        return "Dependency(%r, all=%r, success=%r, failure=%r)" % (
            sorted(self), self.all, self.success, self.failure)


def render_dependency(dep):
    """An ``after``/``follow`` flag as the scheduler reads it (msg_ids, or
    a Dependency's dict); ValueError when it is not a dependency."""
    if dep is None:
        return []
    if isinstance(dep, Dependency):
        return dep.as_dict()
    if _is_result(dep):
        return list(dep.msg_ids)
    if isinstance(dep, str):
        return [dep]
    if isinstance(dep, dict):
        if set(dep) != {"dependencies", "all", "success", "failure"}:
            raise ValueError("Invalid dependency: %r" % (dep,))
        return Dependency(dep).as_dict()
    if isinstance(dep, (list, set, tuple, frozenset)):
        if not all(isinstance(d, str) or _is_result(d) for d in dep):
            raise ValueError("Invalid dependency: %r" % (dep,))
        return list(Dependency(dep))
    raise ValueError("Invalid dependency: %r" % (dep,))


# ----------------------------------------------------------------- executor

class ViewExecutor(concurrent.futures.Executor):
    """``view.executor``: a ``concurrent.futures.Executor`` running on a
    view. ``submit`` returns a real Future (it works with
    ``concurrent.futures.wait`` and ``as_completed``), completed by one
    watching thread; ``map`` yields results in order; ``shutdown`` waits
    for the submitted work but leaves the engines running."""

    def __init__(self, view):
        self.view = view
        self._max_workers = len(view)
        self._pending = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watcher = None
        self._closed = False

    def submit(self, fn, /, *args, **kwargs):
        """Runs ``fn(*args, **kwargs)`` on the view; a Future of its value."""
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        ar = self.view.apply_async(fn, *args, **kwargs)
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._pending.append((ar, future))
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, daemon=True,
                                                 name="rparallel-executor")
                self._watcher.start()
        self._wake.set()
        return future

    def _watch(self):
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                if self._closed:
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            pending[0][0].wait(0.01)
            done = [(ar, f) for ar, f in pending if ar.ready()]
            for ar, future in done:
                try:
                    future.set_result(ar.get())
                except BaseException as e:  # noqa: B036 - the caller sees it
                    future.set_exception(e)
            if done:
                with self._lock:
                    finished = {id(f) for _, f in done}
                    self._pending = [p for p in self._pending if id(p[1]) not in finished]

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """``fn`` over the iterables on the view: the values, in order."""
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if hasattr(self.view, "imap"):
            return self.view.imap(fn, *iterables)
        return iter(self.view.map(fn, *iterables, block=False))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stops taking work; with ``wait``, waits for what was submitted.
        The engines go on."""
        self._closed = True
        self._wake.set()
        if wait:
            with self._lock:
                futures = [f for _, f in self._pending]
            concurrent.futures.wait(futures)


# Views the %px family runs on, by magic suffix ("" for %px itself).
active_views = {}


def activate(view, suffix=""):
    """Makes `view` the one %px{suffix}, %%px{suffix}, %autopx{suffix} and
    %pxresult{suffix} use (registering them in the running IPython)."""
    active_views[suffix] = view
    register_magics(suffix=suffix)
    return view


# ---------------------------------------------------------------- %px magics

_magics = None
_registered = set()  # (id of the IPython shell, suffix)


def magics():
    """The one state of the %px family in this process (``rparallel.Magics``)."""
    global _magics
    if _magics is None:
        import rparallel
        _magics = rparallel.Magics()
    return _magics


def register_magics(ip=None, suffix=""):
    """Registers %px{suffix}, %%px{suffix}, %autopx{suffix},
    %pxresult{suffix} (also %result{suffix}) and %pxconfig{suffix} in IPython
    (the running one by default; nothing without one)."""
    if ip is None:
        import sys
        if "IPython" not in sys.modules:
            return
        ip = sys.modules["IPython"].get_ipython()
        if ip is None:
            return
    if (id(ip), suffix) in _registered:
        return
    _registered.add((id(ip), suffix))
    m = magics()

    def px(line, cell=None):
        if cell is not None:
            # As ipyparallel's %%px: the options line expands {name} (the
            # cell itself goes to the engines as written).
            line = ip.var_expand(line)
        return m.px(suffix, line, cell)

    def pxresult(line):
        return m.pxresult("pxresult" + suffix, suffix, line)

    def result(line):
        return m.pxresult("result" + suffix, suffix, line)

    def pxconfig(line):
        return m.pxconfig(suffix, line)

    def autopx(line):
        return m.autopx(suffix, line)

    # The code goes to the engines as written: no $name / {name} expansion
    # of it (as ipyparallel's magics); only %%px's options line expands.
    from IPython.core.magic import no_var_expand
    for magic in (px, pxresult, result, pxconfig, autopx):
        no_var_expand(magic)
    px.__doc__ = ("%%px%s CODE / %%%%px%s [options]: runs the code on the engines of "
                  "the active view (options: see the rparallel README)." % (suffix, suffix))
    pxresult.__doc__ = result.__doc__ = "Shows the outputs and errors of the last %px."
    pxconfig.__doc__ = "New defaults for %px: --targets, --block, --stream, --verbose, ..."
    autopx.__doc__ = "Toggles running every cell on the engines, as %%px."
    ip.register_magic_function(px, "line_cell", "px" + suffix)
    ip.register_magic_function(pxresult, "line", "pxresult" + suffix)
    ip.register_magic_function(result, "line", "result" + suffix)
    ip.register_magic_function(pxconfig, "line", "pxconfig" + suffix)
    ip.register_magic_function(autopx, "line", "autopx" + suffix)
    if _autopx_transform not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(_autopx_transform)


# %autopx: the suffix cells go to, while on.
_autopx = [None]


def set_autopx(suffix):
    """Turns %autopx on for suffix (off with None); whether it was on."""
    was = _autopx[0] is not None
    _autopx[0] = suffix
    return was


def _autopx_transform(lines):
    """While %autopx is on, a cell runs as %%px, except blank cells and
    cells that start with a magic (%autopx turns it off; %pxresult and
    %%px -t 0 keep working)."""
    suffix = _autopx[0]
    if suffix is None:
        return lines
    first = next((line for line in lines if line.strip()), None)
    if first is None or first.lstrip().startswith("%"):
        return lines
    return ["%%%%px%s\n" % suffix] + lines


# Not for is_complete: a cell's completeness is its own, not %%px's.
_autopx_transform.has_side_effects = True


def load_ipython_extension(ip):
    """``%load_ext rparallel``: the %px family in this IPython."""
    register_magics(ip)


class Metadata(dict):
    """One request's metadata (``ar.metadata``): a dict with a fixed set of
    keys, also readable as attributes (``md.engine_id``), as ipyparallel's.
    Timestamps are timezone-aware UTC datetimes."""

    KEYS = ("msg_id", "submitted", "started", "completed", "received",
            "engine_uuid", "engine_id", "follow", "after", "status",
            "execute_input", "execute_result", "error", "stdout", "stderr",
            "outputs", "data", "label")

    def __init__(self, *args, **kwargs):
        dict.__init__(self)
        for key in self.KEYS:
            dict.__setitem__(self, key, None)
        dict.__setitem__(self, "stdout", "")
        dict.__setitem__(self, "stderr", "")
        dict.__setitem__(self, "outputs", [])
        dict.__setitem__(self, "data", {})
        self.update(dict(*args, **kwargs))

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __getattr__(self, key):
        if key in self:
            return self[key]
        raise AttributeError(key)

    def __setattr__(self, key, value):
        if key not in self:
            raise AttributeError(key)
        self[key] = value

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(key)
        dict.__setitem__(self, key, value)


def parse_date(text):
    """An ISO 8601 timestamp as an aware datetime (None stays None)."""
    if not text:
        return None
    import datetime
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def metadata(fields):
    """A Metadata from the client's fields, timestamps parsed."""
    for key in ("submitted", "started", "completed", "received"):
        fields[key] = parse_date(fields.get(key))
    return Metadata(fields)


def get_dict(values, engine_ids):
    """``AsyncResult.get_dict``: values keyed by the engine that made each."""
    out = {}
    for engine_id, value in zip(engine_ids, values):
        if engine_id in out:
            raise ValueError("Cannot build dict, %d jobs ran on engine #%s"
                             % (engine_ids.count(engine_id), engine_id))
        out[engine_id] = value
    return out


def wait_parts(result, timeout, return_when):
    """``AsyncResult.wait(return_when=...)``: ``(done, pending)``, sets of
    the single-request results of ``result.split()``, as
    ``concurrent.futures.wait`` returns them."""
    import time
    from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION
    parts = result.split()
    deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
    while True:
        done = {p for p in parts if p.ready()}
        pending = set(parts) - done
        if not pending:
            break
        if return_when == FIRST_COMPLETED and done:
            break
        if return_when == FIRST_EXCEPTION and any(not p.successful() for p in done):
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        result._wait_any([i for i, p in enumerate(parts) if p in pending], left)
    return done, pending


class ExecuteReply:
    """What ``execute`` gives for one engine: its execution count and the
    value of the code's last expression (``data``, a MIME bundle; empty if
    there was none). Shown as ``Out[N:k]: value``. The request's metadata
    reads as attributes too (``reply.stdout``, ``reply.engine_uuid``)."""

    def __init__(self, msg_id, engine_id, execution_count, data, metadata, shown,
                 request_metadata=None):
        self.msg_id = msg_id
        self.engine_id = engine_id
        self.execution_count = execution_count
        self.data = data
        self.metadata = metadata
        self._shown = shown
        self._request_metadata = request_metadata or {}

    def __getattr__(self, key):
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._request_metadata[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key):
        return self._request_metadata[key]

    def __repr__(self):
        text = self.data.get("text/plain", "")
        if len(text) > 32:
            text = text[:29] + "..."
        return "<ExecuteReply[%d]: %s>" % (self.execution_count, text)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return (dict(self._shown), dict(self.metadata)) if self.data else ({}, {})


class Progress:
    """A progress bar for work on the engines: tqdm's (``tqdm.auto``: a
    widget in a notebook, text in a terminal) when tqdm is installed, else
    one display updated in place (HTML ``<progress>`` and text)."""

    def __init__(self, total, unit, desc):
        import time
        self.total, self.unit, self.desc = total, unit, desc
        self._started = time.monotonic()
        self._bar = self._handle = None
        try:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, unit=unit, desc=desc)
        except Exception:  # tqdm (or ipywidgets, which it needs here) missing
            from IPython.display import display
            self._handle = display(self._bundle(0), raw=True, display_id=True)

    def _bundle(self, done):
        import time
        seconds = time.monotonic() - self._started
        width = 20
        filled = done * width // self.total if self.total else width
        text = "%s: [%s%s] %d/%d %s finished after %.1f s" % (
            self.desc, "#" * filled, "-" * (width - filled), done, self.total, self.unit, seconds)
        html = "<progress value=\"%d\" max=\"%d\"></progress> %s" % (
            done, self.total, text.split("] ", 1)[1])
        return {"text/plain": text, "text/html": html}

    def update(self, done):
        """Shows that `done` of the total have finished."""
        if self._bar is not None:
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
        elif self._handle is not None:
            self._handle.update(self._bundle(done), raw=True)

    def close(self, done):
        self.update(done)
        if self._bar is not None:
            self._bar.close()


def in_thread(fn, *args):
    """A concurrent.futures.Future of fn(*args), run on a daemon thread."""
    import concurrent.futures
    import threading

    future = concurrent.futures.Future()

    def run():
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: B036 - the caller sees it
            future.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return future


def awaitable(result):
    """``await ar``: an asyncio future completed from a waiting thread."""
    import asyncio
    import concurrent.futures
    future = concurrent.futures.Future()

    def settle(r):
        try:
            future.set_result(r.get())
        except BaseException as e:  # the remote error, or an interrupt
            future.set_exception(e)

    when_done(result, settle)
    return asyncio.wrap_future(future)


def signal_number(sig):
    """A signal given by number or name ("SIGINT", "INT") as its number;
    ValueError for anything that is not a signal here."""
    import signal
    if isinstance(sig, str):
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        found = getattr(signal, name, None)
        if not isinstance(found, signal.Signals):
            raise ValueError("%r is not a signal name" % sig)
        return int(found)
    try:
        number = int(sig)
    except (TypeError, ValueError):
        raise ValueError("a signal is a number or a name, not %r" % (sig,)) from None
    if number not in signal.valid_signals():
        raise ValueError("%d is not a valid signal" % number)
    return number


def client_wait_interactive(client, jobs, interval, timeout):
    """``Client.wait_interactive``: a progress bar until ``jobs`` finish."""
    import time
    ids = set(client._job_ids(jobs)) if jobs is not None else set(client.outstanding)
    total = len(ids)
    bar = Progress(total, "tasks", "wait_interactive")
    started = time.monotonic()
    while True:
        left = ids & client.outstanding
        done = total - len(left)
        if not left:
            break
        if timeout is not None and timeout >= 0 and time.monotonic() - started >= timeout:
            break
        bar.update(done)
        client.wait(list(left), interval)
    bar.close(total - len(ids & client.outstanding))


def wait_futures(futures, timeout):
    """``concurrent.futures.wait`` for Futures given to ``rc.wait``."""
    import concurrent.futures
    return concurrent.futures.wait(futures, timeout=timeout)


class Completed:
    """What ipyparallel's coroutine methods of ``Cluster`` return here: the
    work is done when the method is called, and awaiting gives its value,
    so both ``await cluster.start_engines(2)`` and a plain call work."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        return self.value
        yield  # a generator: awaitable

    def __repr__(self):
        return "<Completed: %r>" % (self.value,)


class ClusterManager:
    """The clusters of this machine's user, by key (``profile:cluster_id``
    in ipyparallel; here the profile, which is the cluster's id):
    ``load_clusters()`` finds the running ones, ``new_cluster(**kw)`` makes
    one (not started), ``get_cluster(key)``, ``remove_cluster(key)``
    (forgets it; stopping is the cluster's own business)."""

    def __init__(self, **kwargs):
        self.clusters = {}

    def load_clusters(self, **kwargs):
        """Adds every running cluster, drops stopped ones; the clusters."""
        import rparallel
        for key in list(self.clusters):
            if not self.clusters[key]._is_running():
                self.clusters.pop(key)
        for profile in rparallel.Cluster._running_profiles():
            if profile not in self.clusters:
                self.clusters[profile] = rparallel.Cluster.from_file(profile=profile)
        return self.clusters

    def new_cluster(self, **kwargs):
        """``(key, cluster)`` of a new Cluster(**kwargs)."""
        import rparallel
        cluster = rparallel.Cluster(**kwargs)
        key = cluster.cluster_id
        if key in self.clusters:
            raise KeyError("Cluster %s already exists!" % key)
        self.clusters[key] = cluster
        return key, cluster

    def get_cluster(self, cluster_id):
        """The Cluster of ``cluster_id`` (KeyError if unknown)."""
        return self.clusters[cluster_id]

    def remove_cluster(self, cluster_id):
        """Forgets the Cluster of ``cluster_id`` (it is not stopped)."""
        del self.clusters[cluster_id]


# ------------------------------------------------------- joblib and dask

def joblib_backend(view=None, **kwargs):
    """A joblib backend running joblib's batches as tasks of ``view`` (a
    load-balanced view). Without a view: the cluster of the default
    profile, or a new local one (stopped when joblib is done with it)."""
    from joblib.parallel import AutoBatchingMixin, ParallelBackendBase

    class RparallelBackend(AutoBatchingMixin, ParallelBackendBase):
        supports_retrieve_callback = True

        def __init__(self, view=None, **kwargs):
            super().__init__(**kwargs)
            self._cluster = None
            self._client = None
            if view is None:
                import rparallel
                try:
                    cluster = rparallel.Cluster.from_file()
                except FileNotFoundError:
                    cluster = self._cluster = rparallel.Cluster()
                    cluster.start_cluster_sync()
                self._client = cluster.connect_client_sync()
                view = self._client.load_balanced_view()
            self._view = view

        def effective_n_jobs(self, n_jobs):
            return max(1, len(self._view))

        def submit(self, func, callback=None):
            result = self._view.apply_async(func)
            if callback is not None:
                result.add_done_callback(callback)
            return result

        def retrieve_result_callback(self, out):
            return out.get()

        def terminate(self):
            if self._client is not None:
                self._client.close()
            if self._cluster is not None:
                self._cluster.stop_cluster_sync()

    return RparallelBackend(view=view, **kwargs)


def register_joblib_backend(view=None, name="ipyparallel", make_default=False):
    """Registers ``name`` as a joblib backend running on ``view`` (see
    ``joblib_backend``)."""
    from joblib.parallel import register_parallel_backend
    register_parallel_backend(name, lambda **kwargs: joblib_backend(view, **kwargs),
                              make_default=make_default)


class DaskScheduler:
    """A dask.distributed Scheduler on an event loop of its own thread in
    the client's process (``rc.become_dask()``)."""

    def __init__(self):
        import asyncio
        import logging
        import threading
        import distributed

        # Its INFO lines (every worker and client coming and going) would
        # fill the notebook; warnings still show.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        ready = threading.Event()
        self._error = None

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)

            async def start():
                # No dashboard: it would listen on a public port.
                self.scheduler = await distributed.Scheduler(
                    host="127.0.0.1", port=0, dashboard=False, dashboard_address=None)
                ready.set()
                await self.scheduler.finished()

            try:
                self.loop.run_until_complete(start())
            except BaseException as e:
                self._error = e
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name="dask-scheduler")
        self._thread.start()
        ready.wait(60)
        if self._error is not None:
            raise self._error
        self.address = self.scheduler.address

    def close(self):
        import asyncio
        asyncio.run_coroutine_threadsafe(self.scheduler.close(), self.loop).result(30)
        self._thread.join(30)


def become_dask(client, targets, port, nthreads, kwargs):
    """``rc.become_dask()``: a scheduler here, a worker on each engine of
    ``targets``; a ``distributed.Client`` of them."""
    import distributed
    if kwargs:
        raise TypeError("become_dask() got unexpected keyword arguments: %s"
                        % ", ".join(sorted(kwargs)))
    stop_dask(client)
    scheduler = DaskScheduler()
    client._dask_scheduler = scheduler
    view = client.direct_view(targets)
    from rparallel._remote import start_dask_worker
    view.apply_sync(start_dask_worker, scheduler.address, nthreads or 1)
    client._dask_view = view
    return distributed.Client(scheduler.address)


def stop_dask(client):
    """``rc.stop_dask()``: closes the workers and the scheduler."""
    view = getattr(client, "_dask_view", None)
    scheduler = getattr(client, "_dask_scheduler", None)
    client._dask_view = client._dask_scheduler = None
    if view is not None:
        try:
            from rparallel._remote import stop_dask_worker
            view.apply_sync(stop_dask_worker)
        except Exception:
            pass
    if scheduler is not None:
        scheduler.close()


def register_module_joblib_backend(name="ipyparallel", make_default=False):
    """``rparallel.register_joblib_backend()``: joblib's backend ``name``
    runs on the default profile's cluster (a new local one if none runs)."""
    register_joblib_backend(None, name, make_default)


# ------------------------------------------------------- the task record

_DATE_KEYS = ("submitted", "started", "completed", "received")


def query_to_json(query):
    """A ``db_query`` filter with datetimes as the record's ISO strings."""
    import datetime

    def plain(value):
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            stamp = value.astimezone(datetime.timezone.utc)
            return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [plain(v) for v in value]
        return value

    if not isinstance(query, dict):
        raise TypeError("a query is a dict, not %s" % type(query).__name__)
    return plain(query)


def hub_records(records, buffers):
    """Records from the controller: timestamps as datetimes, buffer
    counts replaced by the buffers (which follow in record order)."""
    at = 0
    for record in records:
        for key in _DATE_KEYS:
            if key in record:
                record[key] = parse_date(record[key])
        for key in ("buffers", "result_buffers"):
            if key in record:
                n = record[key]
                record[key] = buffers[at:at + n]
                at += n
    return records


def keep_results(client, result):
    """``get_result(owner=False)``: values and metadata also go to
    ``client.results`` / ``client.metadata``, as each request finishes."""

    def keep(part, msg_id):
        try:
            client.results[msg_id] = part.get(0)
        except Exception as e:
            client.results[msg_id] = e
        client.metadata[msg_id] = part.metadata

    for part, msg_id in zip(result.split(), result.msg_ids):
        if part.ready():
            keep(part, msg_id)
        else:
            when_done(part, lambda p, m=msg_id: keep(p, m))


class FutureShim:
    """What ``concurrent.futures.wait`` and ``as_completed`` use of a
    Future besides its methods (its condition and waiter list), for an
    AsyncResult: a thread waits for the result and wakes the waiters."""

    def __init__(self, result):
        import threading
        self._condition = threading.Condition()
        self._waiters = []
        self._finished = False
        when_done(result, self._notify)

    def _notify(self, result):
        with self._condition:
            self._finished = True
            failed = False
            try:
                result.get(0)
            except BaseException:
                failed = True
            for waiter in self._waiters:
                if failed:
                    waiter.add_exception(result)
                else:
                    waiter.add_result(result)
            self._condition.notify_all()

    def state(self):
        return "FINISHED" if self._finished else "RUNNING"


def in_loop(callback, context=None):
    """``callback`` as an AsyncResult runs it when done: in the event loop
    running in this thread, if one is (as an asyncio future would: asyncio
    itself registers callbacks so), else in the thread that waited."""
    import asyncio
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return callback

    def call(result):
        if context is None:
            loop.call_soon_threadsafe(callback, result)
        else:
            loop.call_soon_threadsafe(callback, result, context=context)

    return call


def result_status(client, msg_ids, status_only=True):
    """``Client.result_status``: ``{'pending': [...], 'completed': [...]}``
    from the controller's record; with ``status_only=False`` the completed
    ones' values too, keyed by msg_id."""
    ids = client._job_ids(msg_ids)
    found = {r["msg_id"]: r for r in client.db_query(
        {"msg_id": {"$in": ids}}, keys=["msg_id", "completed"])}
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise KeyError("no task %s in the record (unknown, purged, or too old)" % unknown[0])
    completed = [i for i in ids if found[i]["completed"] is not None]
    status = {"pending": [i for i in ids if i not in completed], "completed": completed}
    if not status_only and completed:
        values = client.get_result(completed, block=True).get()
        status.update(zip(completed, values))
    return status


def remote(view, block=None, **flags):
    """``rparallel.remote(view)``: ``view.remote(block=...)`` as a function
    (flags set on the view for each call)."""
    def decorate(f):
        remote_function = view.remote(block=block)(f)
        if not flags:
            return remote_function

        def call(*args, **kwargs):
            with view.temp_flags(**flags):
                return remote_function(*args, **kwargs)
        return call
    return decorate


def parallel(view, dist="b", block=None, ordered=True, **flags):
    """``rparallel.parallel(view)``: ``view.parallel(...)`` as a function."""
    kwargs = {"dist": dist, "block": block}
    if hasattr(view, "imap"):
        kwargs["ordered"] = ordered
    def decorate(f):
        parallel_function = view.parallel(**kwargs)(f)
        if not flags:
            return parallel_function

        def call(*args, **kw):
            with view.temp_flags(**flags):
                return parallel_function(*args, **kw)
        call.map = parallel_function.map
        return call
    return decorate
