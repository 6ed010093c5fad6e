"""IPython-style tracebacks for rparallel's execution core: cells show as
``Cell In[N], line L``, frames of the core itself are left out.

Part of the hand-written core that IPython will replace; the seam is
``_rparallel_exec.Shell``.
"""

import linecache
import os
import re
import traceback

TB_WIDTH = 75
CONTEXT_LINES = 2
# The core's own modules are loaded from files named so (see pyexec's
# `package::CORE_FILES`); their frames are not the user's.
CORE_PREFIX = "<rparallel>/"


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
        if code.co_filename.startswith(CORE_PREFIX):
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
