"""Serialisation for rparallel (module ``rparallel_serialize``).

An object travels as a list of frames: frame 0 is
``cloudpickle.dumps(obj, protocol=5, buffer_callback=...)`` and every
out-of-band ``PickleBuffer`` (numpy data) is a frame of its own, so array
bytes are never copied into the pickle, base64'd or JSON-encoded.
``deserialize`` is ``pickle.loads(frames[0], buffers=frames[1:])``: an array
is rebuilt over the buffer it arrived in.

Frames given to ``deserialize`` may be any bytes-like objects; ``serialize``
returns ``bytes`` and ``memoryview`` objects, which Rust turns into frames
without copying.
"""

import importlib.util
import pickle
import types

# cloudpickle is imported on first use: an engine that only runs cells
# starts faster (64 engines register noticeably sooner). Its absence is
# still an error at start-up.
if importlib.util.find_spec("cloudpickle") is None:
    raise ImportError("No module named 'cloudpickle'")


def _cloudpickle_dumps(obj, **kwargs):
    if _PICKLER == "dill":
        import dill
        return dill.dumps(obj, protocol=PROTOCOL, recurse=True, **kwargs)
    import cloudpickle
    return cloudpickle.dumps(obj, protocol=PROTOCOL, **kwargs)


# Which pickler ships what plain pickle cannot (functions defined in a
# notebook, lambdas, closures): "cloudpickle" (the default) or "dill",
# switched on both sides by ``view.use_dill()`` / ``use_cloudpickle()``.
_PICKLER = "cloudpickle"


def use_cloudpickle():
    """Functions and classes travel by value with cloudpickle (the default)."""
    global _PICKLER
    _PICKLER = "cloudpickle"


def use_pickle():
    """ipyparallel's return to its default serialization. Here the default
    already ships interactively defined functions (cloudpickle), so this is
    ``use_cloudpickle()``."""
    use_cloudpickle()


def use_dill():
    """Functions, closures and classes travel with dill (must be installed)."""
    import dill  # noqa: F401  (ImportError here, not at the first send)
    global _PICKLER
    _PICKLER = "dill"

PROTOCOL = 5
_MISSING = object()


# ---------------------------------------------------------------- frames

def _describe(obj):
    try:
        text = repr(obj)
    except Exception:
        text = "<unrepresentable>"
    if len(text) > 80:
        text = text[:77] + "..."
    return "%s object %s" % (type(obj).__name__, text)


def serialize(obj):
    """obj as [pickle, buffer, ...]; a TypeError names what cannot be pickled."""
    buffers = []
    try:
        head = _fast_dumps(obj)
        if head is None:
            head = _cloudpickle_dumps(obj, buffer_callback=buffers.append)
    except Exception as e:
        raise TypeError("cannot serialize %s: %s: %s"
                        % (_describe(obj), type(e).__name__, e)) from e
    frames = [head]
    for buf in buffers:
        try:
            frames.append(buf.raw())
        except BufferError:
            # Not contiguous: numpy only hands out contiguous buffers, but a
            # third-party type might not; one copy then.
            frames.append(memoryview(buf).tobytes())
    return frames


# ---------------------------------------------------------------- small-call fast path
#
# Tiny tasks are dominated by pickling: cloudpickle pickles a function
# defined in a notebook by value, in Python, every call (tens of µs). Two
# shortcuts, both exact:
# - plain data (numbers, strings, small lists/dicts of them) goes through
#   the C pickler;
# - a function whose pickle can only change if its code, defaults or the
#   modules it names change is pickled once and its bytes reused; the
#   engine unpickles each distinct function once.

_ATOMS = frozenset([type(None), bool, int, float, complex, str, bytes])
_FUNCTIONS = {}  # id(code) -> (code, fingerprint, pickled bytes)
_LOADED = {}     # pickled bytes -> function (on the engine)
_CACHE_SIZE = 512


def _simple(x, depth=0):
    t = type(x)
    if t in _ATOMS:
        return True
    if depth >= 2 or t not in (tuple, list, dict) or len(x) > 64:
        return False
    if t is dict:
        return all(type(k) is str and _simple(v, depth + 1) for k, v in x.items())
    return all(_simple(v, depth + 1) for v in x)


def _global_names(code):
    """Names a code object (and the code nested in it: comprehensions,
    lambdas, inner functions and classes) may look up globally."""
    names = set()
    pending = [code]
    while pending:
        c = pending.pop()
        names.update(c.co_names)
        pending.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return tuple(sorted(names))


def _fingerprint(f):
    """What f's pickle depends on, if that is only its code, simple defaults
    and modules (else None: it refers to data that may change in place)."""
    if f.__closure__ is not None or f.__kwdefaults__ or f.__dict__:
        return None
    defaults = f.__defaults__
    if defaults and not all(type(d) in _ATOMS for d in defaults):
        return None
    entry = _FUNCTIONS.get(id(f.__code__))
    names = entry[1][0] if entry is not None and entry[0] is f.__code__ \
        else _global_names(f.__code__)
    g = f.__globals__
    values = tuple(g.get(n, _MISSING) for n in names)
    for v in values:
        if v is not _MISSING and type(v) is not types.ModuleType:
            return None
    return (names, values, defaults, f.__module__, f.__qualname__, f.__name__, f.__doc__)


class _Pickled:
    """A function by its cached pickle; unpickles through _load_function."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return (_load_function, (self.data,))


def _load_function(data):
    f = _LOADED.get(data)
    if f is None:
        if len(_LOADED) >= _CACHE_SIZE:
            _LOADED.clear()
        f = _LOADED[data] = pickle.loads(data)
    return f


def _pickled_function(f):
    fingerprint = _fingerprint(f)
    if fingerprint is None:
        return None
    code = f.__code__
    entry = _FUNCTIONS.get(id(code))
    if entry is not None and entry[0] is code and entry[1] == fingerprint:
        return entry[2]
    data = _cloudpickle_dumps(f)
    if len(_FUNCTIONS) >= _CACHE_SIZE:
        _FUNCTIONS.clear()
    pickled = _Pickled(data)
    _FUNCTIONS[id(code)] = (code, fingerprint, pickled)
    return pickled


def _fast_dumps(obj):
    """obj pickled by the shortcuts above, or None."""
    if _simple(obj):
        return pickle.dumps(obj, protocol=PROTOCOL)
    if (_PICKLER == "cloudpickle" and type(obj) is tuple and len(obj) == 3
            and type(obj[0]) is types.FunctionType
            and _simple(obj[1]) and _simple(obj[2])):
        pickled = _pickled_function(obj[0])
        if pickled is not None:
            return pickle.dumps((pickled, obj[1], obj[2]), protocol=PROTOCOL)
    return None


def deserialize(frames):
    """The object of serialize's frames."""
    frames = list(frames)
    if not frames:
        raise ValueError("cannot deserialize: no frames")
    return pickle.loads(frames[0], buffers=frames[1:])
