"""The streams that replace ``sys.stdout`` / ``sys.stderr`` in rparallel's
execution core, and the JSON that crosses to Rust. What is shown goes out
through ``hooks``, an object implemented in Rust (see ``_rparallel_exec``).
"""

import base64
import io
import json


def _jsonable(value):
    """What json cannot encode by itself: bytes (an image's, base64, as
    Jupyter sends them), then anything else as its str."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# One encoder for every message (json.dumps with options makes a new one
# per call).
_encoder = json.JSONEncoder(ensure_ascii=False, default=_jsonable)


def dumps(obj):
    """JSON for the Rust side, which takes only valid UTF-8: a lone
    surrogate (from bytes decoded with surrogateescape, or written by hand)
    becomes U+FFFD instead of failing the whole message."""
    text = _encoder.encode(obj)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class OutStream(io.TextIOBase):
    """sys.stdout / sys.stderr: every write goes to Rust, which coalesces
    small writes and publishes them while the cell runs."""

    def __init__(self, name, hooks):
        super().__init__()
        self._name = name
        self._hooks = hooks

    @property
    def name(self):
        return "<%s>" % self._name

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if text:
            self._hooks.stream(self._name, text)
        return len(text)

    def flush(self):
        pass
