"""The engine's operations on a shell's namespace (module
``rparallel_namespace``): ``apply``, ``push``, ``pull`` and ``clear``, with
values (de)serialized by ``rparallel_serialize``. They use the ``Shell``
seam of ``_rparallel_exec`` (``user_ns``, ``run_user_code``,
``format_error``, ``reset_namespace``). Functions defined interactively
(module ``__main__``: a notebook cell, a script) are re-bound to the
engine's namespace, as ipyparallel does, so a remote function sees and sets
the engine's globals.

Each operation returns ("ok", value) or ("error", (ename, evalue,
traceback)).
"""

import re
import types

from rparallel_serialize import deserialize, serialize

_MISSING = object()


# ---------------------------------------------------------------- re-binding

def _interactive(obj):
    return isinstance(obj, types.FunctionType) and obj.__module__ == "__main__"


def _rebind(func, ns, extra):
    """func with ns as its globals. Names cloudpickle captured for it that ns
    lacks (the sender's helpers and imports) are collected into extra."""
    for name, value in func.__globals__.items():
        if not (name.startswith("__") and name.endswith("__")) and name not in ns:
            extra.setdefault(name, value)
    new = types.FunctionType(func.__code__, ns, func.__name__,
                             func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    new.__annotations__ = dict(getattr(func, "__annotations__", None) or {})
    new.__dict__.update(func.__dict__)
    new.__module__ = "__main__"
    return new


def _rebind_value(value, ns, extra):
    if _interactive(value):
        rebound = _rebind(value, ns, extra)
        # Helpers it calls, shipped along by cloudpickle, see ns too.
        for name, helper in list(extra.items()):
            if _interactive(helper) and helper.__globals__ is value.__globals__:
                extra[name] = _rebind(helper, ns, extra)
        return rebound
    return value


# ---------------------------------------------------------------- errors

def _user_traceback(tb):
    """tb without the frames of this module: the user's code starts after."""
    this_file = _user_traceback.__code__.co_filename
    while tb is not None and tb.tb_frame.f_code.co_filename == this_file:
        tb = tb.tb_next
    return tb


def _error(shell, e):
    """(ename, evalue, traceback) as the shell formats a cell's error."""
    tb = _user_traceback(e.__traceback__)
    try:
        return shell.format_error(type(e), e, tb)
    except Exception:
        import traceback
        return (type(e).__name__, str(e),
                [l.rstrip("\n") for l in traceback.format_exception(type(e), e, tb)])


def _guarded(shell, job, *args):
    """Runs job as user code (interrupts raise in it): ("ok", value) or
    ("error", (ename, evalue, traceback)). KeyboardInterrupt and SystemExit
    are errors too: the engine lives on."""
    try:
        return ("ok", shell.run_user_code(job, shell, *args))
    except BaseException as e:  # noqa: B036
        return ("error", _error(shell, e))


# ---------------------------------------------------------------- namespace operations

# Searches a pickle in place (frames are buffers, not bytes).
_NAMES_REFERENCE = re.compile(b"Reference")


def _dereference(value, ns):
    """value with every ``rparallel.Reference`` in it (itself, or inside
    lists, tuples, sets and dict values) replaced by what its name means in
    ns (NameError when undefined)."""
    from rparallel._remote import Reference
    t = type(value)
    if t is Reference:
        return eval(value.name, ns)
    if t in (list, tuple, set, frozenset):
        return t(_dereference(v, ns) for v in value)
    if t is dict:
        return {k: _dereference(v, ns) for k, v in value.items()}
    return value


def _apply(shell, frames):
    ns = shell.user_ns
    f, args, kwargs = deserialize(frames)
    # Only a pickle that names the class can hold a Reference.
    if _NAMES_REFERENCE.search(frames[0]):
        f, args, kwargs = _dereference((f, tuple(args), dict(kwargs)), ns)
    extra = {}
    f = _rebind_value(f, ns, extra)
    args = [_rebind_value(a, ns, extra) for a in args]
    kwargs = {k: _rebind_value(v, ns, extra) for k, v in dict(kwargs).items()}
    # What the function needs from the sender but the engine lacks is there
    # while it runs, and taken away after (unless the call rebound it), so
    # stale copies of the sender's helpers never shadow later definitions.
    injected = {k: v for k, v in extra.items() if k not in ns}
    ns.update(injected)
    try:
        result = f(*args, **kwargs)
    finally:
        for name, value in injected.items():
            if ns.get(name, _MISSING) is value:
                del ns[name]
    return serialize(result)


def apply(shell, frames):
    """f(*args, **kwargs) of frames = serialize((f, args, kwargs)), in the
    shell's namespace. ("ok", result frames) or ("error", details)."""
    return _guarded(shell, _apply, frames)


def _push(shell, frames):
    ns = shell.user_ns
    values = deserialize(frames)
    if not isinstance(values, dict):
        raise TypeError("push needs a dict of names to values, not %s"
                        % type(values).__name__)
    extra = {}
    values = {k: _rebind_value(v, ns, extra) for k, v in values.items()}
    # A pushed function stays, so what it needs from the sender stays too
    # (without replacing anything the engine has).
    for name, value in extra.items():
        ns.setdefault(name, value)
    ns.update(values)
    return None


def push(shell, frames):
    """Updates the namespace with the dict in frames."""
    return _guarded(shell, _push, frames)


def _pull(shell, names):
    ns = shell.user_ns
    values = [eval(name, ns) for name in names]
    return serialize(values)


def pull(shell, names):
    """serialize([value of each name]); names are evaluated in the namespace,
    so a missing one is a NameError."""
    return _guarded(shell, _pull, list(names))


def _clear(shell):
    shell.reset_namespace()
    import gc
    gc.collect()
    return None


def clear(shell):
    """Empties the namespace (the shell's own In/Out stay, Out emptied)."""
    return _guarded(shell, _clear)
