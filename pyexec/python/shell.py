"""The Python half of rparallel's execution core: ``Shell``, one
persistent namespace. It runs cells the way IPython does (last expression
displayed, In/Out/_/__/___, IPython-style tracebacks) and answers
completion, inspection and is-complete questions.

``Shell`` is the seam between Rust and the Python that runs cells; the
hand-written parts behind it (this module, ``_rparallel_display``,
``_rparallel_tracebacks``) are what IPython will replace. What uses it:

- Rust (`shell.rs`): ``Shell(hooks, magic_call, cell_magic_call)``,
  ``run_cell``, ``user_expressions``, ``complete``, ``inspect``,
  ``is_complete``, ``at_exit``, ``execution_count``; answers are JSON
  strings.
- the engine's namespace operations (``rparallel_namespace``):
  ``user_ns``, ``run_user_code``, ``format_error``, ``reset_namespace``.
- the kernel's %px family: ``run_local``, ``user_ns``, ``UsageError``.

Everything a cell shows goes out through ``hooks``, an object implemented
in Rust:

    hooks.stream(name, text)
    hooks.display(data, metadata, transient, update)
    hooks.clear_output(wait)
    hooks.input(prompt, password) -> str   (raises StdinNotImplementedError)
"""

import ast
import builtins
import codeop
import json
import linecache
import re
import signal
import sys
import traceback
import types
import uuid

from _rparallel_display import OutStream, DisplayHandle, _dumps, mime_bundle
from _rparallel_tracebacks import cell_filename, format_exception, safe_str


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


class Exiter:
    """`exit` / `quit` in a cell: ask the frontend to end the session
    (jupyter console leaves and shuts the kernel down), as IPython does."""

    def __init__(self, shell):
        self._shell = shell

    def __repr__(self):
        return "Use exit() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, keep_kernel=False):
        self._shell.payload.append({"source": "ask_exit", "keepkernel": bool(keep_kernel)})


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
        shows_value = not silent and not code.rstrip().endswith(";")
        try:
            body, tail = self._compile(code, filename, shows_value)
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

    @staticmethod
    def _compile(code, filename, shows_value):
        """(body, tail): the cell's code, and its last expression compiled
        apart when its value is to be shown (else tail is None)."""
        tree = ast.parse(code, filename, "exec")
        last = None
        if shows_value and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, filename, "exec")
        tail = compile(last, filename, "eval") if last is not None else None
        return body, tail

    def run_local(self, code):
        """Runs code in the user's namespace from inside a running cell
        (``%%px --local``); the last expression's value is displayed.
        Errors propagate to the running cell."""
        body, tail = self._compile(code, "<px --local>", True)
        exec(body, self.user_ns)
        if tail is not None:
            value = eval(tail, self.user_ns)
            if value is not None:
                self.display(value)

    # -- for the engine's namespace operations (rparallel_namespace)
    def run_user_code(self, job, *args):
        """job(*args) as user code: an interrupt raises KeyboardInterrupt in
        it. (Not a context manager: this is on every apply's path, and
        contextlib's costs several times the call.)"""
        was = self.executing
        self.executing = True
        try:
            return job(*args)
        finally:
            self.executing = was

    def format_error(self, etype, evalue, tb):
        """(ename, evalue, traceback lines), as a failing cell shows them."""
        out = self._error({}, etype, evalue, tb)
        return out["ename"], out["evalue"], list(out["traceback"])

    def reset_namespace(self):
        """Empties the user's namespace. In stays; Out is emptied."""
        ns = self.user_ns
        for name in [n for n in ns if not (n.startswith("__") and n.endswith("__"))]:
            del ns[name]
        self.output_history.clear()
        ns.update({
            "In": self.history, "Out": self.output_history,
            "_ih": self.history, "_oh": self.output_history,
            "_": "", "__": "", "___": "", "_i": "", "_ii": "", "_iii": "",
        })

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
