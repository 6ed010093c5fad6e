"""The Python half of rparallel's execution core.

Runs cells in a persistent namespace the way IPython does (last expression
displayed, In/Out/_/__/___, IPython-style tracebacks), and answers
completion, inspection and is-complete questions. Everything a cell shows
goes out through ``hooks``, an object implemented in Rust:

    hooks.stream(name, text)
    hooks.display(data, metadata, transient, update)
    hooks.clear_output(wait)
    hooks.input(prompt, password) -> str   (raises StdinNotImplementedError)

Results are returned to Rust as JSON strings.
"""

import ast
import base64
import builtins
import codeop
import io
import json
import linecache
import os
import pprint
import re
import signal
import sys
import traceback
import types
import uuid

TB_WIDTH = 75
_CORE_FILE = globals().get("__file__", "rparallel_exec.py")
CONTEXT_LINES = 2


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


class StdinNotImplementedError(RuntimeError):
    """input() was called but the frontend cannot answer input requests."""


class UsageError(Exception):
    """A magic was used wrongly (or does not exist)."""


def _debug_magic(args):
    """%debug: the post-mortem debugger on the last error of a cell, talking
    through input() (the frontend's stdin). `sys.last_value` is the error."""
    tb = getattr(sys, "last_traceback", None)
    if tb is None:
        raise UsageError("%debug: no error to debug yet")
    import pdb
    debugger = pdb.Pdb()  # no stdout given: it reads with input()
    debugger.reset()
    debugger.interaction(None, tb)


# Line magics of the kernel's own Python (the %px family lives in Rust).
_LINE_MAGICS = {"debug": _debug_magic}


def _no_line_magic(name, args):
    magic = _LINE_MAGICS.get(name)
    if magic is None:
        raise UsageError("Line magic function `%%%s` not found." % name)
    return magic(args)


def _no_cell_magic(name, args, body):
    raise UsageError("Cell magic `%%%%%s` not found." % name)


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


# ---------------------------------------------------------------- formatting

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


# ---------------------------------------------------------------- tracebacks

def cell_filename(count):
    return "<cell-%d>" % count


_CELL_RE = re.compile(r"^<cell-(\d+)>$")


def _location(filename, lineno, func, frame):
    cell = _CELL_RE.match(filename)
    if cell:
        where = "Cell In[%s], line %d" % (cell.group(1), lineno)
        return where if func == "<module>" else "%s, in %s()" % (where, func)
    home = os.path.expanduser("~")
    shown = "~" + filename[len(home):] if home != "/" and filename.startswith(home + os.sep) else filename
    return "File %s:%d, in %s()" % (shown, lineno, func)


def _numbered_lines(filename, lineno):
    lines = linecache.getlines(filename)
    if not lines or not (1 <= lineno <= len(lines)):
        return ""
    first = max(1, lineno - CONTEXT_LINES)
    last = min(len(lines), lineno + CONTEXT_LINES)
    out = []
    for i in range(first, last + 1):
        text = lines[i - 1].rstrip("\n")
        if i == lineno:
            pad = 7 - len(str(i))
            arrow = "-" * (pad - 2) + "> " if pad >= 2 else ">"
            out.append("%s%d %s" % (arrow, i, text))
        else:
            out.append("%7d %s" % (i, text))
    return "\n".join(out) + "\n"


def safe_str(value):
    """str(value), even when its __str__ fails."""
    try:
        return str(value)
    except Exception:
        return "<unprintable %s object>" % type(value).__name__


def _exception_line(etype, evalue):
    text = safe_str(evalue) if evalue is not None else ""
    return "%s: %s" % (etype.__name__, text) if text else etype.__name__


def _syntax_error_block(evalue):
    filename = evalue.filename or ""
    cell = _CELL_RE.match(filename)
    lineno = evalue.lineno or 1
    where = ("Cell In[%s], line %d" % (cell.group(1), lineno)) if cell else (
        "File %s:%d" % (filename, lineno))
    block = ["  " + where]
    text = evalue.text
    if text is None and filename:
        text = linecache.getline(filename, lineno)
    if text:
        stripped = text.rstrip("\n")
        indent = len(stripped) - len(stripped.lstrip())
        block.append("    " + stripped.strip())
        if evalue.offset:
            caret_start = max(0, evalue.offset - 1 - indent)
            end = getattr(evalue, "end_offset", None) or evalue.offset + 1
            width = max(1, min(end - evalue.offset, len(stripped) - evalue.offset + 1))
            if getattr(evalue, "end_lineno", lineno) != lineno:
                width = 1
            block.append("    " + " " * caret_start + "^" * width)
    return "\n".join(block)


def _frames_blocks(tb):
    blocks = []
    for frame, lineno in traceback.walk_tb(tb):
        code = frame.f_code
        if code.co_filename == _CORE_FILE:
            continue  # input(), display() and friends are ours, not the user's
        block = _location(code.co_filename, lineno, code.co_name, frame) + "\n"
        block += _numbered_lines(code.co_filename, lineno)
        blocks.append(block)
    return blocks


def format_exception(etype, evalue, tb, _seen=None):
    """An IPython-style traceback: a list of strings to be joined by newlines."""
    seen = _seen if _seen is not None else set()
    seen.add(id(evalue))
    out = []
    cause = getattr(evalue, "__cause__", None)
    context = getattr(evalue, "__context__", None)
    if cause is not None and id(cause) not in seen:
        out += format_exception(type(cause), cause, cause.__traceback__, seen)
        out += ["", "The above exception was the direct cause of the following exception:", ""]
    elif (context is not None and id(context) not in seen
          and not getattr(evalue, "__suppress_context__", False)):
        out += format_exception(type(context), context, context.__traceback__, seen)
        out += ["", "During handling of the above exception, another exception occurred:", ""]
    name = etype.__name__
    rule = "Traceback (most recent call last)"
    if issubclass(etype, SyntaxError) and tb is None:
        out.append(_syntax_error_block(evalue))
        out.append(_exception_line(etype, evalue.msg if isinstance(evalue, SyntaxError) else evalue))
        return out
    out.append("-" * TB_WIDTH)
    out.append("%s%s%s" % (name, " " * max(1, TB_WIDTH - len(name) - len(rule)), rule))
    out += _frames_blocks(tb)
    if issubclass(etype, SyntaxError):
        out.append(_syntax_error_block(evalue))
        out.append(_exception_line(etype, evalue.msg))
    else:
        out.append(_exception_line(etype, evalue))
    # PEP 678 notes (e.g. which engine a result that failed to unpickle
    # came from), as Python and IPython print them.
    notes = getattr(evalue, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        out += [safe_str(n) for n in notes]
    return out


# ---------------------------------------------------------------- the shell

class Exiter:
    """`exit` / `quit` in a cell: ask the frontend to end the session
    (jupyter console leaves and shuts the kernel down), as IPython does."""

    def __init__(self, shell):
        self._shell = shell

    def __repr__(self):
        return "Use exit() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, keep_kernel=False):
        self._shell.payload.append({"source": "ask_exit", "keepkernel": bool(keep_kernel)})


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


class Shell:
    """One persistent namespace and the machinery around it."""

    def __init__(self, hooks, magic_call, cell_magic_call, user_module_name="__main__"):
        self.hooks = hooks
        self.execution_count = 1
        self.executing = False
        module = types.ModuleType(user_module_name)
        module.__dict__["__builtins__"] = builtins
        sys.modules[user_module_name] = module
        self.user_module = module
        self.user_ns = module.__dict__
        self.history = [""]
        self.payload = []
        self.output_history = {}
        self.user_ns.update({
            "In": self.history, "Out": self.output_history,
            "_": "", "__": "", "___": "", "_i": "", "_ii": "", "_iii": "",
            "_ih": self.history, "_oh": self.output_history,
        })
        sys.stdout = OutStream("stdout", hooks)
        sys.stderr = OutStream("stderr", hooks)
        sys.displayhook = self._displayhook
        builtins.display = self.display
        builtins.clear_output = self.clear_output
        # Input transformation (Rust: `input`) rewrites `%name args` lines
        # and `%%name` cells into calls of these builtins; the kernel's %px
        # family wraps them.
        setattr(builtins, magic_call, _no_line_magic)
        setattr(builtins, cell_magic_call, _no_cell_magic)
        builtins.exit = builtins.quit = Exiter(self)
        builtins.input = self.input
        builtins.raw_input = self.input
        try:
            import getpass
            getpass.getpass = lambda prompt="Password: ", stream=None: self.input(prompt, True)
        except ImportError:
            pass
        sys.argv = [""]
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:
            pass  # not Python's main thread (an embedding test): no interrupts

    # -- interrupts: SIGINT raises only while user code runs
    def _on_sigint(self, signum, frame):
        if self.executing:
            raise KeyboardInterrupt

    # -- builtins the cells see
    def display(self, *objs, include=None, exclude=None, metadata=None,
                transient=None, display_id=None, raw=False, clear=False,
                update=False, **kwargs):
        if clear:
            self.clear_output(wait=True)
        if display_id is True:
            display_id = uuid.uuid4().hex
        for obj in objs:
            if raw:
                data, md = dict(obj), {}
            else:
                data, md = mime_bundle(obj, include, exclude)
            if metadata:
                md.update(metadata)
            tr = dict(transient or {})
            if display_id is not None:
                tr["display_id"] = display_id
            self.hooks.display(_dumps(data), _dumps(md), _dumps(tr), bool(update))
        if display_id is not None and not update:
            return DisplayHandle(display_id, self)
        return None

    def clear_output(self, wait=False):
        self.hooks.clear_output(bool(wait))

    def input(self, prompt="", password=False):
        sys.stdout.flush()
        return self.hooks.input(str(prompt), bool(password))

    def _displayhook(self, value):
        # Used only if user code calls sys.displayhook itself.
        if value is not None:
            data, md = mime_bundle(value)
            self.hooks.display(_dumps(data), _dumps(md), "{}", False)

    # -- running cells
    def _record_input(self, count, code):
        self.history.append(code)
        ns = self.user_ns
        ns["_iii"], ns["_ii"], ns["_i"] = ns.get("_ii", ""), ns.get("_i", ""), code
        ns["_i%d" % count] = code

    def _record_output(self, count, value):
        self.output_history[count] = value
        ns = self.user_ns
        ns["___"], ns["__"], ns["_"] = ns.get("__", ""), ns.get("_", ""), value
        ns["_%d" % count] = value

    def run_cell(self, code, silent=False, store_history=True):
        """Runs code; returns a JSON string describing the outcome."""
        store_history = store_history and not silent
        count = self.execution_count
        if store_history:
            self.execution_count += 1
            self._record_input(count, code)
        filename = cell_filename(count)
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        outcome = {"status": "ok", "execution_count": count}
        self.payload = outcome["payload"] = []
        try:
            tree = ast.parse(code, filename, "exec")
        except (SyntaxError, ValueError) as e:
            return _dumps(self._error(outcome, type(e), e, None))
        last = None
        if (not silent and tree.body and isinstance(tree.body[-1], ast.Expr)
                and not code.rstrip().endswith(";")):
            last = ast.Expression(tree.body.pop().value)
        try:
            body = compile(tree, filename, "exec")
            tail = compile(last, filename, "eval") if last is not None else None
        except (SyntaxError, ValueError) as e:
            return _dumps(self._error(outcome, type(e), e, None))
        value = None
        self.executing = True
        try:
            exec(body, self.user_ns)
            if tail is not None:
                value = eval(tail, self.user_ns)
        except BaseException as e:  # noqa: B036 - SystemExit too: the kernel lives on
            self.executing = False
            # As in the interactive interpreter, for %debug and pdb.pm().
            sys.last_type, sys.last_value = type(e), e
            sys.last_traceback = e.__traceback__.tb_next or e.__traceback__
            return _dumps(self._error(outcome, type(e), e, e.__traceback__.tb_next))
        finally:
            self.executing = False
        if isinstance(value, Exiter):  # a bare `exit` means exit()
            value()
            value = None
        if value is not None:
            if store_history:
                self._record_output(count, value)
            data, md = mime_bundle(value)
            outcome["data"], outcome["metadata"] = data, md
        return _dumps(outcome)

    def run_local(self, code):
        """Runs code in the user's namespace from inside a running cell
        (``%%px --local``); the last expression's value is displayed."""
        tree = ast.parse(code, "<px --local>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<px --local>", "exec"), self.user_ns)
        if last is not None:
            value = eval(compile(last, "<px --local>", "eval"), self.user_ns)
            if value is not None:
                self.display(value)

    def at_exit(self):
        """Runs the atexit handlers cells registered (the kernel is exiting)."""
        import atexit
        atexit._run_exitfuncs()
        return "null"

    def user_expressions(self, expressions):
        """Evaluates each {name: expression} after a cell, as Jupyter asks."""
        results = {}
        for name, expr in json.loads(expressions).items():
            try:
                value = eval(expr, self.user_ns)
                data, md = mime_bundle(value)
                results[name] = {"status": "ok", "data": data, "metadata": md}
            except Exception as e:
                results[name] = self._error({}, type(e), e, e.__traceback__.tb_next)
        return _dumps(results)

    def _error(self, outcome, etype, evalue, tb):
        try:
            if issubclass(etype, UsageError):
                tb_lines = ["UsageError: %s" % evalue]
            elif callable(getattr(evalue, "render_traceback", None)):
                # Remote errors render as the engines' tracebacks ([n:execute]).
                tb_lines = list(evalue.render_traceback())
            else:
                tb_lines = format_exception(etype, evalue, tb)
        except Exception:  # never lose the error because formatting failed
            tb_lines = traceback.format_exception(etype, evalue, tb)
        outcome.update({
            "status": "error",
            "ename": etype.__name__,
            "evalue": safe_str(evalue),
            "traceback": tb_lines,
        })
        return outcome

    # -- questions about code
    def complete(self, code, cursor_pos):
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        try:
            matches, start = self._complete_jedi(code, cursor_pos)
        except Exception:
            matches, start = self._complete_rl(code, cursor_pos)
        return _dumps({"matches": matches, "cursor_start": start,
                           "cursor_end": cursor_pos, "metadata": {}, "status": "ok"})

    def _complete_jedi(self, code, cursor_pos):
        import jedi
        before = code[:cursor_pos]
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1)
        completions = jedi.Interpreter(code, [self.user_ns]).complete(line, column)
        matches, start = [], cursor_pos
        for c in completions:
            typed = len(c.name) - len(c.complete)
            start = cursor_pos - typed
            matches.append(c.name)
        return matches, start

    def _complete_rl(self, code, cursor_pos):
        import rlcompleter
        token = re.search(r"[\w.]*$", code[:cursor_pos]).group(0)
        completer = rlcompleter.Completer(self.user_ns)
        matches = []
        for state in range(1000):
            m = completer.complete(token, state)
            if m is None:
                break
            matches.append(m.rstrip("("))
        return matches, cursor_pos - len(token)

    def inspect(self, code, cursor_pos, detail_level=0):
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        name = self._name_at(code, cursor_pos)
        found, obj = self._lookup(name) if name else (False, None)
        if not found:
            return _dumps({"status": "ok", "found": False, "data": {}, "metadata": {}})
        import inspect as _inspect
        lines = []
        try:
            sig = str(_inspect.signature(obj))
            lines.append("Signature: %s%s" % (name, sig))
        except (TypeError, ValueError):
            pass
        if not callable(obj) or isinstance(obj, type):
            pass
        try:
            text = repr(obj)
            if not callable(obj):
                lines.append("String form: %s" % (text if len(text) < 200 else text[:200] + "..."))
        except Exception:
            pass
        doc = _inspect.getdoc(obj)
        if doc:
            lines.append("Docstring:\n%s" % doc if "\n" in doc else "Docstring: %s" % doc)
        else:
            lines.append("Docstring: <no docstring>")
        if detail_level:
            try:
                lines.append("Source:\n%s" % _inspect.getsource(obj))
            except (TypeError, OSError):
                pass
        try:
            filename = _inspect.getfile(obj)
            lines.append("File: %s" % filename)
        except TypeError:
            pass
        lines.append("Type: %s" % type(obj).__name__)
        return _dumps({"status": "ok", "found": True,
                           "data": {"text/plain": "\n".join(lines)}, "metadata": {}})

    @staticmethod
    def _name_at(code, cursor_pos):
        """The dotted name under or just before the cursor (or the callee when
        the cursor is inside a call's parentheses)."""
        left = re.search(r"[\w.]*$", code[:cursor_pos]).group(0)
        right = re.match(r"\w*", code[cursor_pos:]).group(0)
        name = (left + right).strip(".")
        if name:
            return name
        depth = 0
        for i in range(cursor_pos - 1, -1, -1):
            ch = code[i]
            if ch == ")":
                depth += 1
            elif ch == "(":
                if depth == 0:
                    return re.search(r"[\w.]*$", code[:i]).group(0).strip(".")
                depth -= 1
        return ""

    def _lookup(self, name):
        parts = name.split(".")
        if parts[0] in self.user_ns:
            obj = self.user_ns[parts[0]]
        elif hasattr(builtins, parts[0]):
            obj = getattr(builtins, parts[0])
        else:
            return False, None
        for part in parts[1:]:
            try:
                obj = getattr(obj, part)
            except Exception:
                return False, None
        return True, obj

    def is_complete(self, code):
        status, indent = self._is_complete(code)
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = indent
        return _dumps(reply)

    @staticmethod
    def _is_complete(code):
        if not code.strip():
            return "complete", ""
        lines = code.split("\n")
        last = lines[-1]
        if code.rstrip("\n").endswith("\\"):
            return "incomplete", re.match(r"\s*", last).group(0)
        try:
            compiled = codeop.compile_command(code, "<input>", "exec")
        except (SyntaxError, OverflowError, ValueError):
            return "invalid", ""
        last_code = next((l for l in reversed(lines) if l.strip()), "")
        body_indent = re.match(r"\s*", last_code).group(0)
        if compiled is None:
            indent = body_indent + ("    " if last_code.rstrip().endswith(":") else "")
            return "incomplete", indent
        # Compiles, but a block is still open: wait for a blank line.
        if body_indent and last.strip():
            return "incomplete", body_indent
        return "complete", ""
