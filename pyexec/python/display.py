"""Display for rparallel's execution core: the streams that replace
``sys.stdout`` / ``sys.stderr``, rich representations (MIME bundles) of
values, and display handles. What is shown goes out through ``hooks``, an
object implemented in Rust (see ``_rparallel_exec``).

Part of the hand-written core that IPython will replace; the seam is
``_rparallel_exec.Shell``.
"""

import base64
import io
import json
import pprint


def _dumps(obj):
    """JSON for the Rust side, which takes only valid UTF-8: a lone
    surrogate (from bytes decoded with surrogateescape, or written by hand)
    becomes U+FFFD instead of failing the whole message."""
    text = json.dumps(obj, ensure_ascii=False)
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


_RICH_REPRS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("text/latex", "_repr_latex_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("image/svg+xml", "_repr_svg_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
)
_BINARY = {"image/png", "image/jpeg"}


def plain_text(obj):
    """IPython-like text/plain: pretty-printed containers, repr otherwise."""
    if type(obj) in (dict, list, tuple, set, frozenset):
        return pprint.pformat(obj, width=79, sort_dicts=False)
    return repr(obj)


def _jsonable(mime, value):
    if mime in _BINARY and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def mime_bundle(obj, include=None, exclude=None):
    """(data, metadata) for obj, from _repr_mimebundle_ and _repr_*_ methods."""
    data, metadata = {}, {}
    if not isinstance(obj, type):  # a class's own _repr_* are unbound
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method):
            try:
                got = method(include=include, exclude=exclude)
            except Exception:
                got = None
            if isinstance(got, tuple) and len(got) == 2:
                got, md = got
                metadata.update(md or {})
            if isinstance(got, dict):
                data.update(got)
        for mime, attr in _RICH_REPRS:
            if mime in data:
                continue
            method = getattr(obj, attr, None)
            if not callable(method):
                continue
            try:
                value = method()
            except Exception:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                value, md = value
                if md:
                    metadata[mime] = md
            if value is not None:
                data[mime] = value
    if "text/plain" not in data:
        try:
            data["text/plain"] = plain_text(obj)
        except Exception as e:  # a broken __repr__ must not break the cell
            data["text/plain"] = "<%s object (repr failed: %r)>" % (type(obj).__name__, e)
    data = {m: _jsonable(m, v) for m, v in data.items()}
    if include:
        data = {m: v for m, v in data.items() if m in include}
    if exclude:
        data = {m: v for m, v in data.items() if m not in exclude}
    return data, metadata


class DisplayHandle:
    """Returned by display(..., display_id=...): update the output in place."""

    def __init__(self, display_id, shell):
        self.display_id = display_id
        self._shell = shell

    def __repr__(self):
        return "<DisplayHandle display_id=%s>" % self.display_id

    def display(self, obj, **kwargs):
        self._shell.display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj, **kwargs):
        self._shell.display(obj, display_id=self.display_id, update=True, **kwargs)
