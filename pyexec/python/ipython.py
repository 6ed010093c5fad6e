"""IPython as rparallel's execution core (module ``_rparallel_ipython``),
used as a library the way xeus-python and ipykernel use it: an
``InteractiveShell`` whose display publisher, display hook, pager,
tracebacks and comms go to rparallel's Rust side (``hooks``) instead of a
ZeroMQ socket of its own. Loaded by ``_rparallel_exec.Shell.ipython()``;
``start(core)`` makes the one shell of the process.
"""

import gc
import importlib.abc
import importlib.util
import logging
import os
import sys

import comm
from comm.base_comm import BaseComm, CommManager
from IPython.core import page
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.inputtransformer2 import TransformerManager
from IPython.core.interactiveshell import InteractiveShell, InteractiveShellABC
from IPython.utils.process import system
from IPython.utils.tokenutil import token_at_cursor
from traitlets import Any, Instance, Type, default

from _rparallel_display import dumps
from _rparallel_exec import Recent

log = logging.getLogger("rparallel")


class FrontendDisplayPublisher(DisplayPublisher):
    """display() / update_display() / clear_output(): to the frontend."""

    def publish(self, data, metadata=None, source=None, *, transient=None,
                update=False, **kwargs):
        self._validate_data(data, metadata)
        sys.stdout.flush()
        sys.stderr.flush()
        self.shell.core.hooks.display(
            dumps(data), dumps(metadata or {}), dumps(transient or {}), bool(update))

    def clear_output(self, wait=False):
        sys.stdout.flush()
        sys.stderr.flush()
        self.shell.core.hooks.clear_output(bool(wait))


class ResultDisplayHook(DisplayHook):
    """The value of a cell's last expression: published at once as the
    execute_result (as ipykernel does, so figures shown after the cell
    follow it), and kept for the kernel's output history."""

    def start_displayhook(self):
        self.shell.rparallel_in_displayhook = True

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        shell = self.shell
        md_dict = md_dict or {}
        sys.stdout.flush()
        sys.stderr.flush()
        shell.core.hooks.result(self.prompt_count, dumps(format_dict), dumps(md_dict))
        shell.rparallel_result = (format_dict, md_dict)

    def finish_displayhook(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.shell.rparallel_in_displayhook = False


class FrontendComm(BaseComm):
    """A comm whose messages go out as the process's own outputs."""

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = dict(keys, data=data or {}, comm_id=self.comm_id)
        buffers = [bytes(b) if not isinstance(b, bytes) else b for b in buffers or []]
        _shell().core.hooks.message(msg_type, dumps(content), dumps(metadata or {}), buffers)


class FrontendKernel:
    """What libraries look up as ``get_ipython().kernel``: the request being
    served (ipywidgets' Output widget captures output by its msg_id) and
    the comm manager."""

    def __init__(self, shell, comm_manager):
        self._shell = shell
        self.comm_manager = comm_manager

    def get_parent(self, channel=None):
        return self._shell.core.parent()


class RecentTransforms(TransformerManager):
    """IPython's input transformation, keeping the last few results of its
    token stage (``%magic``, ``!cmd``, ``x = %magic``, ``obj?``): it
    tokenizes the cell once per transform and once more, which costs more
    than the rest of a small cell. That stage is a pure function of the
    lines while its transformers are IPython's own; the cleanup and line
    stages, where users and ``%autopx`` add theirs, run every time."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recent = Recent()
        self._own = tuple(self.token_transformers)

    def do_token_transforms(self, lines):
        if tuple(self.token_transformers) != self._own:
            return super().do_token_transforms(lines)
        key = tuple(lines)
        done = self._recent.get(key, "".join(key),
                                lambda: tuple(super(RecentTransforms, self).do_token_transforms(lines)))
        return list(done)


class RparallelShell(InteractiveShell):
    """IPython's shell in an rparallel kernel or engine."""

    displayhook_class = Type(ResultDisplayHook)
    display_pub_class = Type(FrontendDisplayPublisher)
    # No terminal: no readline, no autoindent (as ipykernel's shell).
    readline_use = False
    autoindent = False
    exiter = Instance(ZMQExitAutocall)
    kernel = Any()
    core = Any()
    # The state of the cell running: its value, the last error shown, and
    # whether displaying its value failed. Plain attributes, not traits:
    # they change several times per cell.
    rparallel_result = None
    rparallel_error = None
    rparallel_in_displayhook = False
    rparallel_display_failed = False

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    @default("input_transformer_manager")
    def _default_input_transformer_manager(self):
        return RecentTransforms()

    def init_environment(self):
        """Subprocesses cannot page or ask for a terminal here (ipykernel's)."""
        env = os.environ
        env.setdefault("TERM", "xterm-color")
        env.setdefault("CLICOLOR", "1")
        env.setdefault("PAGER", "cat")
        env.setdefault("GIT_PAGER", "cat")

    def init_user_ns(self):
        super().init_user_ns()
        # The core's get_ipython, which pickles by reference (see there).
        get = sys.modules[type(self.core).__module__].get_ipython
        self.user_ns["get_ipython"] = self.user_ns_hidden["get_ipython"] = get

    def init_virtualenv(self):
        """The interpreter already runs in the environment it was given."""

    def init_hooks(self):
        super().init_hooks()
        self.set_hook("show_in_pager", page.as_hook(self._page), 99)

    def _page(self, strg, start=0, screen_lines=0, pager_cmd=None):
        """`obj?` and other pagers: a `page` payload on the reply."""
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def ask_exit(self):
        keep = bool(self.keepkernel_on_exit)
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": keep})

    keepkernel_on_exit = None

    def set_next_input(self, text, replace=False):
        self.payload_manager.write_payload(
            {"source": "set_next_input", "text": text, "replace": replace})

    def should_run_async(self, raw_cell, *, transformed_cell=None,
                         preprocessing_exc_tuple=None):
        # IPython compiles every cell once more to look for top-level
        # `await`; a cell that does not contain the word cannot have one.
        cell = raw_cell if transformed_cell is None else transformed_cell
        if "await" not in cell and "async" not in cell:
            return False
        return super().should_run_async(raw_cell, transformed_cell=transformed_cell,
                                        preprocessing_exc_tuple=preprocessing_exc_tuple)

    def enable_gui(self, gui=None):
        if gui not in (None, "inline"):
            raise UsageError("GUI event loops are not available in rparallel (%r); "
                             "use %%matplotlib inline" % gui)

    # Output of `!cmd` through sys.stdout, in order with prints (ipykernel's).
    def system_piped(self, cmd):
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        self.user_ns["_exit_code"] = system(self.var_expand(cmd, depth=1))

    system = system_piped

    # -- errors, as ipykernel: every traceback shown is an error output at
    # once; the reply tells the cell's own error, with the last traceback.
    def _showtraceback(self, etype, evalue, stb):
        self._show_error({"ename": etype.__name__, "evalue": _safe_str(evalue),
                          "traceback": list(stb)})

    def show_usage_error(self, exc):
        self._show_error(_usage_error(exc))

    def _show_error(self, error):
        sys.stdout.flush()
        sys.stderr.flush()
        self.core.hooks.error(dumps(error))
        self.rparallel_error = error
        if self.rparallel_in_displayhook:
            # A value that failed to display fails its cell (ipykernel's).
            self.rparallel_display_failed = True

    def _format_exception_for_storage(self, exception, filename=None,
                                      running_compiled_code=False):
        # IPython's calls str() on the error; one whose __str__ raises must
        # not turn into a second error.
        try:
            return super()._format_exception_for_storage(
                exception, filename=filename, running_compiled_code=running_compiled_code)
        except Exception:
            return {"ename": type(exception).__name__, "evalue": _safe_str(exception),
                    "traceback": []}

    # -- what the core asks
    def rparallel_run(self, code, silent, store_history):
        """Runs a cell; its outcome for the execute path."""
        core = self.core
        self._rparallel_reset()
        count = self.execution_count
        core.executing = True
        try:
            result = self.run_cell(code, store_history=store_history, silent=silent)
        finally:
            core.executing = False
        outcome = {"status": "ok", "execution_count": count,
                   "payload": self.payload_manager.read_payload()}
        self.payload_manager.clear_payload()
        # The in-memory history database has no saving thread: its cache
        # would grow with every cell.
        history = self.history_manager
        if len(history.db_input_cache) >= 100:
            history.writeout_cache()
        e = result.error_before_exec or result.error_in_exec
        if e is not None:
            shown = self.rparallel_error or {}
            outcome.update(status="error", error_shown=bool(shown), ename=type(e).__name__,
                           evalue=_safe_str(e), traceback=shown.get("traceback", []))
            if isinstance(e, UsageError):
                outcome["ename"] = "UsageError"
        elif self.rparallel_display_failed:
            outcome.update(self._failed_display())
        elif self.rparallel_result is not None:
            outcome["data"], outcome["metadata"] = self.rparallel_result
        self._rparallel_reset()
        return outcome

    def _rparallel_reset(self):
        self.rparallel_result = self.rparallel_error = None
        self.rparallel_in_displayhook = self.rparallel_display_failed = False

    def _failed_display(self):
        return dict(self.rparallel_error, status="error", error_shown=True)

    def rparallel_show(self, value, count, stored):
        """Shows a lean cell's value (``Out[count]``): what to add to its
        outcome (the value's data, or the error displaying it)."""
        self._rparallel_reset()
        # As in run_cell: the count has moved on when the value is shown
        # (the display hook's prompt is `execution_count - 1`).
        self.execution_count = count + 1
        try:
            self.displayhook(value)
        finally:
            self.execution_count = count + 1 if stored else count
        if self.rparallel_display_failed:
            added = self._failed_display()
        elif self.rparallel_result is not None:
            added = {"data": self.rparallel_result[0], "metadata": self.rparallel_result[1]}
        else:
            added = {}
        self._rparallel_reset()
        return added

    def rparallel_format_error(self, etype, evalue, tb):
        """(ename, evalue, traceback lines) as IPython shows a cell's error."""
        if issubclass(etype, UsageError):
            error = _usage_error(evalue)
        else:
            render = getattr(evalue, "_render_traceback_", None)
            stb = render() if callable(render) else \
                self.InteractiveTB.structured_traceback(etype, evalue, _user_frames(tb))
            error = {"ename": etype.__name__, "evalue": _safe_str(evalue), "traceback": list(stb)}
        return error["ename"], error["evalue"], error["traceback"]

    def rparallel_user_expressions(self, expressions):
        return self.user_expressions(expressions)

    def rparallel_complete(self, code, cursor_pos):
        """IPython's completer, as ipykernel answers (with completion types)."""
        from IPython.core.completer import provisionalcompleter, rectify_completions
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        with provisionalcompleter():
            completions = list(rectify_completions(
                code, self.Completer.completions(code, cursor_pos)))
        types = [{"start": c.start, "end": c.end, "text": c.text, "type": c.type,
                  "signature": c.signature} for c in completions]
        start, end = (completions[0].start, completions[0].end) if completions \
            else (cursor_pos, cursor_pos)
        return {"status": "ok", "matches": [c.text for c in completions],
                "cursor_start": start, "cursor_end": end,
                "metadata": {"_jupyter_types_experimental": types}}

    def rparallel_inspect(self, code, cursor_pos, detail_level):
        name = token_at_cursor(code, len(code) if cursor_pos is None else cursor_pos)
        try:
            data = self.object_inspect_mime(name, detail_level=detail_level)
            if not self.enable_html_pager:
                data.pop("text/html", None)
            return {"status": "ok", "found": True, "data": data, "metadata": {}}
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}

    def rparallel_is_complete(self, code):
        # A cell magic ends at a blank line; a terminal sends it as a final
        # newline (IPython would want two).
        if code.lstrip().startswith("%%") and code.endswith("\n"):
            return {"status": "complete"}
        status, indent = self.input_transformer_manager.check_complete(code)
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    def rparallel_comm(self, msg, buffers):
        """A comm message from the frontend; the reply content, if any."""
        manager = comm.get_comm_manager()
        msg_type = msg.get("header", {}).get("msg_type") or msg.get("msg_type")
        content = msg.get("content")
        if not isinstance(content, dict):
            log.warning("%s with malformed content dropped", msg_type)
            return None
        if msg_type == "comm_info_request":
            target = content.get("target_name")
            comms = {cid: {"target_name": c.target_name} for cid, c in manager.comms.items()
                     if target is None or c.target_name == target}
            return {"status": "ok", "comms": comms}
        if not isinstance(content.get("comm_id"), str):
            log.warning("%s without a comm_id dropped", msg_type)
            return None
        if content["comm_id"] not in manager.comms and msg_type != "comm_open":
            log.warning("%s for unknown comm %s dropped", msg_type, content["comm_id"])
            return None
        msg["buffers"] = list(buffers)
        handler = {"comm_open": manager.comm_open, "comm_msg": manager.comm_msg,
                   "comm_close": manager.comm_close}.get(msg_type)
        if handler is None:
            return None
        self.core.executing = True
        try:
            handler(None, None, msg)
        except Exception:
            log.exception("%s failed", msg_type)
        finally:
            self.core.executing = False
        return None


InteractiveShellABC.register(RparallelShell)


def _user_frames(tb):
    """tb without the execution core's frames at its head (files named
    ``<rparallel>/…``): the user's code starts after them."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith("<rparallel>/"):
        tb = tb.tb_next
    return tb


def _safe_str(value):
    try:
        return str(value)
    except Exception as e:
        return "<unprintable %s object: %r>" % (type(value).__name__, e)


def _usage_error(exc):
    return {"ename": "UsageError", "evalue": _safe_str(exc),
            "traceback": ["UsageError: %s" % _safe_str(exc)]}


class _TqdmSeesANotebook(importlib.abc.MetaPathFinder):
    """``tqdm.auto`` shows its widget bar only when it finds ipykernel's
    shell module loaded; a frontend of this kernel renders widgets too, so
    ``tqdm.autonotebook`` gets the notebook bar here (when ipywidgets is
    installed)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tqdm.autonotebook":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def run_then_choose(module):
            run(module)
            try:
                from tqdm.notebook import IProgress, tqdm, trange
            except ImportError:
                return
            if IProgress is not None:
                module.tqdm, module.trange = tqdm, trange

        spec.loader.exec_module = run_then_choose
        return spec


_the_shell = None


def _shell():
    return _the_shell


def start(core):
    """The process's IPython shell over ``core``'s namespace (a
    ``_rparallel_exec.Shell``), with what ran before it was loaded."""
    global _the_shell
    from traitlets.config import Config
    config = Config()
    # History stays in memory: many kernels and engines, no shared sqlite.
    config.HistoryManager.hist_file = ":memory:"
    # tqdm.auto and others tell a notebook kernel by this (as ipykernel).
    config.IPKernelApp.tqdm = "rparallel"
    ip = RparallelShell.instance(config=config, core=core, user_module=core.user_module,
                                 user_ns=core.user_ns)
    _the_shell = ip
    manager = CommManager()
    comm.create_comm = FrontendComm
    comm.get_comm_manager = lambda: manager
    ip.kernel = FrontendKernel(ip, manager)
    # IPython's applications load this one by default (ipykernel too): %store.
    try:
        ip.extension_manager.load_extension("storemagic")
    except Exception:  # a broken install must not stop the shell
        log.warning("storemagic (%%store) could not be loaded", exc_info=True)
    if core.frontend_renders_widgets:
        sys.meta_path.insert(0, _TqdmSeesANotebook())
    # IPython's many long-lived objects need not be scanned by every full
    # garbage collection of the cells' objects.
    gc.freeze()
    # Cells run before IPython came keep their numbers, names and In[n].
    ip.execution_count = core.execution_count
    for filename, count, code in core.lean_cells():
        ip.compile._filename_map[filename] = count
        ip.history_manager.store_inputs(count, code)
    return ip
