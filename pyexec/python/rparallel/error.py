"""rparallel.error: the exceptions of remote execution, rendered the way
IPython's parallel tools show them (``[n:execute]:`` blocks)."""

import builtins

__all__ = [
    "IPythonError", "KernelError", "AlreadyDisplayedError", "TaskRejectError", "RemoteError", "CompositeError", "TimeoutError", "EngineError",
    "NoEnginesRegistered", "TaskAborted", "TaskTimeout", "UnmetDependency",
    "ImpossibleDependency", "DependencyTimeout", "InvalidDependency",
]


class IPythonError(Exception):
    """Base of every rparallel error (ipyparallel's name)."""


class KernelError(IPythonError):
    """Base of the errors of remote execution and task scheduling."""


class TimeoutError(KernelError, builtins.TimeoutError):
    """A result was asked for before it was ready."""


class NoEnginesRegistered(KernelError):
    """No engines are registered with the controller."""


class TaskRejectError(KernelError):
    """A task was refused (kept for ipyparallel's sake: the scheduler here
    answers refusals with ImpossibleDependency)."""


class TaskTimeout(KernelError):
    """A load-balanced task waited in the scheduler longer than its
    ``timeout``."""


class UnmetDependency(KernelError):
    """Raised on an engine by a task that cannot run there (a ``@depend``
    check returned False, a ``@require``'d module is missing): the
    scheduler tries another engine."""


class ImpossibleDependency(UnmetDependency):
    """A task's dependencies can never be met."""


class DependencyTimeout(ImpossibleDependency):
    """A task's dependencies were not met within its timeout."""


class InvalidDependency(ImpossibleDependency):
    """A task depends on tasks the scheduler does not know."""


def _engine_str(engine_info):
    if not engine_info:
        return "[Engine Exception]"
    engine = engine_info.get("engine_id")
    return "[%s:%s]" % ("?" if engine is None else engine, engine_info.get("method", "?"))


class RemoteError(KernelError):
    """An exception raised on an engine, with the engine's traceback."""

    def __init__(self, ename, evalue, traceback=None, engine_info=None):
        super().__init__(ename, evalue)
        self.ename = ename
        self.evalue = evalue
        self.traceback = list(traceback or [])
        self.engine_info = dict(engine_info or {})

    def __repr__(self):
        return "<%s[%s]:%s(%s)>" % (type(self).__name__, self.engine_info.get("engine_id", " "),
                                    self.ename, self.evalue)

    # An entry of ``CompositeError.elist`` also reads as ipyparallel's
    # tuple: ``ename, evalue, traceback, engine_info = err.elist[0]``.
    def _fields(self):
        return (self.ename, self.evalue, self.traceback, self.engine_info)

    def __iter__(self):
        return iter(self._fields())

    def __getitem__(self, index):
        return self._fields()[index]

    def __len__(self):
        return 4

    def __bool__(self):
        return True

    def __str__(self):
        return "%s %s: %s" % (_engine_str(self.engine_info), self.ename, self.evalue)

    def render_traceback(self):
        """The lines IPython-style frontends show for this error."""
        lines = ["%s:" % _engine_str(self.engine_info)]
        lines.extend("\n".join(self.traceback).split("\n") if self.traceback
                     else ["%s: %s" % (self.ename, self.evalue)])
        return lines

    def print_traceback(self, excid=None):
        print("\n".join(self.render_traceback()))

    def _render_traceback_(self):
        """IPython shows these lines instead of a traceback of its own."""
        return self.render_traceback()


class EngineError(RemoteError):
    """An engine died (or could not be reached) with work pending."""

    def __init__(self, message, engine_info=None):
        RemoteError.__init__(self, "EngineError", message, ["EngineError: %s" % message],
                             engine_info)

    def __str__(self):
        return self.evalue


class TaskAborted(RemoteError):
    """A queued task was aborted before it ran."""


# RemoteErrors that are also the scheduler's error they name, by ename.
_remote_kinds = {}


def remote_error(ename, evalue, traceback=None, engine_info=None):
    """The RemoteError of an error reply. When ``ename`` is one of this
    module's task errors (TaskTimeout, ImpossibleDependency, ...) it is also
    an instance of that class, so both ``except RemoteError`` and
    ``except ImpossibleDependency`` catch it."""
    kind = globals().get(ename)
    if not (isinstance(kind, type) and issubclass(kind, KernelError)) or issubclass(kind, RemoteError):
        return RemoteError(ename, evalue, traceback, engine_info)
    cls = _remote_kinds.get(ename)
    if cls is None:
        cls = type("RemoteError", (RemoteError, kind), {"__module__": __name__})
        _remote_kinds[ename] = cls
    return cls(ename, evalue, traceback, engine_info)


class CompositeError(RemoteError):
    """Errors from several engines, one RemoteError each in ``elist``.

    At most ``tb_limit`` tracebacks are rendered; the rest are counted.
    """

    tb_limit = 5

    def __init__(self, message, elist):
        self.msg = message
        self.elist = list(elist)
        first = self.elist[0] if self.elist else RemoteError("Exception", "")
        RemoteError.__init__(self, first.ename, first.evalue, first.traceback,
                             first.engine_info)
        self.args = (message, self.elist)

    def _methods(self):
        methods = []
        for e in self.elist:
            m = e.engine_info.get("method", "?")
            if m not in methods:
                methods.append(m)
        return ", ".join(methods)

    def __str__(self):
        lines = ["one or more exceptions raised in: %s" % self._methods()]
        shown = self.elist[:self.tb_limit]
        for e in shown:
            lines.append("%s%s: %s" % (_engine_str(e.engine_info), e.ename, e.evalue))
        more = len(self.elist) - len(shown)
        if more > 0:
            lines.append("... %d more exceptions ..." % more)
        return "\n".join(lines)

    def __repr__(self):
        return "CompositeError(%d)" % len(self.elist)

    def render_traceback(self, excid=None):
        if excid is not None:
            return self.elist[excid].render_traceback() + [""]
        lines = []
        shown = self.elist[:self.tb_limit]
        for e in shown:
            lines.extend(e.render_traceback())
            lines.append("")
        more = len(self.elist) - len(shown)
        if more > 0:
            lines.append("... %d more exceptions ..." % more)
        return lines

    def print_traceback(self, excid=None):
        print("\n".join(self.render_traceback(excid)))

    def raise_exception(self, excid=0):
        """Raises the error of entry ``excid`` as a RemoteError."""
        try:
            e = self.elist[excid]
        except IndexError:
            raise IndexError("an exception with index %s does not exist" % excid) from None
        raise RemoteError(e.ename, e.evalue, e.traceback, e.engine_info) from None

    # A CompositeError is one error, not a sequence of fields.
    __iter__ = None
    __getitem__ = None
    __len__ = None


class AlreadyDisplayedError(RemoteError):
    """Errors whose tracebacks were already shown (as the output of a
    ``%px`` cell): raised so the cell fails without showing them again."""

    def __init__(self, original_error):
        self.original_error = original_error
        self.n = len(getattr(original_error, "elist", [original_error]))
        RemoteError.__init__(self, getattr(original_error, "ename", "Exception"),
                             getattr(original_error, "evalue", ""),
                             getattr(original_error, "traceback", []),
                             getattr(original_error, "engine_info", {}))

    def __repr__(self):
        return "<%s(%d errors)>" % (type(self).__name__, self.n)

    def __str__(self):
        return "%d errors" % self.n

    def render_traceback(self):
        return [str(self)]


class _InterruptedRemote(RemoteError, KeyboardInterrupt):
    """An engine's KeyboardInterrupt, after Ctrl-C (or the stop button)
    interrupted the wait for it: also a KeyboardInterrupt here, so
    ``except KeyboardInterrupt`` and a script's exit on Ctrl-C work as for
    local code. Shown under its base's name."""


class _InterruptedComposite(CompositeError, KeyboardInterrupt):
    """The engines' KeyboardInterrupts after an interrupt (see
    ``_InterruptedRemote``)."""


_InterruptedRemote.__name__ = "RemoteError"
_InterruptedComposite.__name__ = "CompositeError"


def collect_exceptions(errors, method, single=False):
    """A single-engine result raises its error itself; anything sent to
    several engines raises a CompositeError, even if only one failed.
    When every engine was interrupted, the error is a KeyboardInterrupt too."""
    interrupted = bool(errors) and all(e.ename == "KeyboardInterrupt" for e in errors)
    if single and len(errors) == 1:
        e = errors[0]
        if interrupted and type(e) is RemoteError:
            e = _InterruptedRemote(e.ename, e.evalue, e.traceback, e.engine_info)
        return e
    composite = _InterruptedComposite if interrupted else CompositeError
    return composite("one or more exceptions raised in: %s" % method, errors)
