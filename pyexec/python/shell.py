"""The Python half of rparallel's execution core: ``Shell``, one
persistent namespace, run through IPython's ``InteractiveShell`` (module
``_rparallel_ipython``) as xeus-python and ipykernel run it: input
transformation, magics, ``!cmd``, ``?``, display, tracebacks, comms.

IPython costs ≈ 14 MiB and ≈ 0.1 s, so a process that may never need it
(an engine that only runs ``apply``) starts *lean*: a cell that is plain
Python, fails nowhere and shows no value runs with ``exec`` here. The first
thing that needs IPython loads it, once, for good: a cell that is not
plain Python (a magic, ``!``, ``?``), a value to show, an error to format,
``display()`` / ``get_ipython()``, or importing matplotlib (so the inline
backend finds its shell). The kernel loads it at start.

What uses it:

- Rust (`shell.rs`): ``Shell(hooks, ipython_source, eager)``,
  ``run_cell``, ``user_expressions``, ``complete``, ``inspect``,
  ``is_complete``, ``comm_message``, ``at_exit``, ``execution_count``;
  answers are JSON strings.
- the engine's namespace operations (``rparallel_namespace``):
  ``user_ns``, ``run_user_code``, ``format_error``, ``reset_namespace``.
- the %px family (``rparallel``): ``ipython()``, ``run_local``.

Everything a cell shows goes out through ``hooks``, an object implemented
in Rust:

    hooks.stream(name, text)
    hooks.display(data, metadata, transient, update)
    hooks.result(execution_count, data, metadata)   (the execute_result)
    hooks.clear_output(wait)
    hooks.message(msg_type, content, metadata, buffers)   (comms)
    hooks.parent() -> the request being served (JSON)
    hooks.input(prompt, password) -> str   (raises StdinNotImplementedError)
"""

import builtins
import importlib.abc
import json
import linecache
import os
import signal
import sys
import types

from _rparallel_display import OutStream, dumps


class StdinNotImplementedError(RuntimeError):
    """input() was called but the frontend cannot answer input requests."""


# As ipykernel: matplotlib shows figures inline, but is imported only when
# the user imports it (importing the backend costs 60 MiB and 0.5 s).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class _LoadIPythonFirst(importlib.abc.MetaPathFinder):
    """Loads IPython before the first import of matplotlib in a lean shell,
    so the inline backend finds the shell it registers with."""

    def __init__(self, shell):
        self._shell = shell

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "matplotlib":
            sys.meta_path.remove(self)
            self._shell.ipython()
        return None


class Recent:
    """The last few results of a pure function of a cell's text, for cells
    run again and again (``%px`` in a loop, ``execute`` in a loop), where
    the work before running a small cell costs more than running it."""

    KEEP = 128
    LONGEST = 4096  # characters of a key's text; longer cells are not kept

    def __init__(self):
        self._kept = {}

    def get(self, key, text, compute):
        """compute(), or what it gave last time for `key` (whose text is
        `text`). Exceptions pass through and are not kept."""
        kept = self._kept.get(key)
        if kept is None:
            kept = compute()
            if len(text) <= self.LONGEST:
                if len(self._kept) >= self.KEEP:
                    del self._kept[next(iter(self._kept))]  # the oldest
                self._kept[key] = kept
        return kept


class _LeanCompiler:
    """Compiles lean cells, keeping the last few (parsing to an AST and
    compiling that costs more than running a small cell). A cell's code is a
    pure function of its text and file name, so a cell run again only needs
    its new file name (for tracebacks)."""

    def __init__(self):
        self._recent = Recent()

    def get(self, code, silent, filename):
        """(body, last): the cell to exec, and its last expression to eval
        and show (None when it ends with a statement, a `;`, or is silent).
        Raises SyntaxError (and ValueError, OverflowError) as compile does."""
        body, last, compiled_as = self._recent.get(
            (code, silent), code, lambda: self._compile(code, silent, filename))
        if compiled_as != filename:
            body = _refile(body, filename)
            last = last and _refile(last, filename)
        return body, last

    @staticmethod
    def _compile(code, silent, filename):
        import ast
        tree = ast.parse(code, filename, "exec")
        last = None
        if not silent and tree.body and isinstance(tree.body[-1], ast.Expr) \
                and not code.rstrip().endswith(";"):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
        return compile(tree, filename, "exec"), last, filename


def _refile(code, filename):
    """`code` (and the functions and classes it defines) as if compiled
    from `filename`."""
    consts = tuple(_refile(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


_the_shell = None


def get_ipython():
    """The process's IPython shell, loaded on first use. A module function
    (IPython's is a bound method): a function that calls it pickles by
    reference, and on an engine finds the engine's shell."""
    return _the_shell.ipython()


class Shell:
    """One persistent namespace and the machinery around it."""

    def __init__(self, hooks, ipython_source, eager, user_module_name="__main__"):
        self.hooks = hooks
        self._ipython_source = ipython_source
        self.ip = None
        # The kernel's frontend renders widgets; an engine's output goes to
        # a client first.
        self.frontend_renders_widgets = bool(eager)
        # Lean mode's state, handed to IPython when it loads.
        self._count = 1
        self._cells = []  # (file name, execution count, code) of stored cells
        self.executing = False
        self._compiled = _LeanCompiler()
        module = types.ModuleType(user_module_name)
        module.__dict__["__builtins__"] = builtins
        sys.modules[user_module_name] = module
        self.user_module = module
        self.user_ns = module.__dict__
        self.user_ns.update({"_": "", "__": "", "___": ""})
        sys.stdout = OutStream("stdout", hooks)
        sys.stderr = OutStream("stderr", hooks)
        builtins.display = self._display
        global _the_shell
        _the_shell = self
        builtins.get_ipython = get_ipython
        builtins.clear_output = self.clear_output
        builtins.input = self.input
        builtins.raw_input = self.input
        try:
            import getpass
            getpass.getpass = lambda prompt="Password: ", stream=None: self.input(prompt, True)
        except ImportError:
            pass
        sys.argv = [""]
        # As ipykernel: modules in the working directory (a notebook's
        # folder, `%%file mod.py`) import.
        if not sys.path or sys.path[0] != "":
            sys.path.insert(0, "")
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        try:
            signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:
            pass  # not Python's main thread (an embedding test): no interrupts
        if eager:
            self.ipython()
        else:
            sys.meta_path.insert(0, _LoadIPythonFirst(self))

    # -- IPython, loaded once
    def ipython(self):
        """The IPython shell (``get_ipython()``), loading it on first use."""
        if self.ip is None:
            name = "_rparallel_ipython"
            module = types.ModuleType(name)
            module.__file__ = "<rparallel>/ipython.py"
            sys.modules[name] = module
            exec(compile(self._ipython_source, module.__file__, "exec"), module.__dict__)
            self.ip = module.start(self)
        return self.ip

    @property
    def execution_count(self):
        return self._count if self.ip is None else self.ip.execution_count

    def lean_cells(self):
        """[(file name, count, code)] of the cells run before IPython loaded."""
        return list(self._cells)

    # -- interrupts: SIGINT raises only while user code runs
    def _on_sigint(self, signum, frame):
        if self.executing:
            raise KeyboardInterrupt

    # -- builtins the cells see
    def _display(self, *objs, **kwargs):
        from IPython.display import display
        self.ipython()
        return display(*objs, **kwargs)

    def clear_output(self, wait=False):
        self.hooks.clear_output(bool(wait))

    def parent(self):
        """The request being served (a message dict without content)."""
        return json.loads(self.hooks.parent())

    def input(self, prompt="", password=False):
        sys.stdout.flush()
        return self.hooks.input(str(prompt), bool(password))

    # -- running cells
    def run_cell(self, code, silent=False, store_history=True):
        """Runs code; returns a JSON string describing the outcome."""
        if self.ip is None:
            outcome = self._run_lean(code, silent, store_history)
            if outcome is not None:
                return dumps(outcome)
        return dumps(self.ip.rparallel_run(code, silent, store_history))

    def _run_lean(self, code, silent, store_history):
        """Runs a cell of plain Python with ``exec`` and returns its outcome
        (IPython loads to show a value or format an error); None when the
        cell is not plain Python (a magic, `!`, `?`, or a real syntax
        error): IPython is loaded then and runs it."""
        store_history = store_history and not silent
        count = self._count
        filename = "<rparallel-cell-%d>" % count
        try:
            body, last = self._compiled.get(code, silent, filename)
        except (SyntaxError, ValueError, OverflowError):
            self.ipython()
            return None
        if store_history:
            self._count += 1
            self._cells.append((filename, count, code))
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        outcome = {"status": "ok", "execution_count": count, "payload": []}
        value = None
        self.executing = True
        try:
            exec(body, self.user_ns)
            if last is not None:
                value = eval(last, self.user_ns)
        except BaseException as e:  # noqa: B036 - SystemExit too: the process lives on
            self.executing = False
            sys.last_type, sys.last_value = type(e), e
            sys.last_traceback = e.__traceback__.tb_next or e.__traceback__
            ename, evalue, tb = self.format_error(type(e), e, e.__traceback__.tb_next)
            outcome.update(status="error", ename=ename, evalue=evalue, traceback=tb)
            return outcome
        finally:
            self.executing = False
        if value is not None:
            outcome.update(self.ipython().rparallel_show(value, count, store_history))
        return outcome

    def run_local(self, code):
        """Runs code in the user's namespace from inside a running cell
        (``%%px --local``), as a cell would, without a new execution count.
        Errors propagate to the running cell."""
        ip = self.ipython()
        result = ip.run_cell(code, store_history=False)
        result.raise_error()

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
        return self.ipython().rparallel_format_error(etype, evalue, tb)

    def reset_namespace(self):
        """Empties the user's namespace (``%reset``): In stays."""
        if self.ip is not None:
            self.ip.reset(new_session=False)
            return
        ns = self.user_ns
        for name in [n for n in ns if not (n.startswith("__") and n.endswith("__"))]:
            del ns[name]
        ns.update({"_": "", "__": "", "___": ""})

    def at_exit(self):
        """Runs the atexit handlers cells registered (the kernel is exiting)."""
        import atexit
        if self.ip is not None:
            self.ip.atexit_operations()
        atexit._run_exitfuncs()
        # mpi4py finalizes MPI in Py_Finalize, which an embedded interpreter
        # never reaches; mpiexec counts a rank that exits unfinalized as a
        # failure of the whole job.
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            mpi.Finalize()
        return "null"

    # -- questions about code, and comms: IPython's
    def user_expressions(self, expressions):
        return dumps(self.ipython().rparallel_user_expressions(json.loads(expressions)))

    def complete(self, code, cursor_pos):
        return dumps(self.ipython().rparallel_complete(code, cursor_pos))

    def inspect(self, code, cursor_pos, detail_level=0):
        return dumps(self.ipython().rparallel_inspect(code, cursor_pos, detail_level))

    def is_complete(self, code):
        return dumps(self.ipython().rparallel_is_complete(code))

    def comm_message(self, msg, buffers):
        """A comm_open / comm_msg / comm_close / comm_info_request from the
        frontend (``msg``: its JSON); returns the reply content (JSON) or
        "null"."""
        return dumps(self.ipython().rparallel_comm(json.loads(msg), buffers))

