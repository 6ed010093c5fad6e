#!/usr/bin/env python3
"""Print an executed notebook as plain text, the way a console would show it.

    python tools/show_notebook.py target/demo/direct-interface.ipynb [--markdown]

For each code cell: ``In [n]:`` and its source, then its outputs — stream
text, the text/plain form of results (``Out[n]:``) and displays (with the
richer MIME types it also carries listed; the per-engine results of ``%px``,
displays reading ``Out[engine:n]: ...``, are shown as they read), errors as
their traceback (or ``ename: evalue``). With ``--markdown`` the markdown
cells are printed too.
Only the standard library is used (the notebook is read as JSON).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# the text/plain of a %px result, displayed once per engine: ``Out[0:3]: 42``
ENGINE_RESULT_RE = re.compile(r"Out\[\d+:\d+\]:")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def joined(value) -> str:
    """nbformat stores multi-line strings either whole or as a list of lines."""
    if isinstance(value, list):
        return "".join(value)
    return value if isinstance(value, str) else json.dumps(value, indent=1)


def indent_block(prefix: str, text: str) -> str:
    """``Out[3]: value``; multi-line values start on the next line, like IPython."""
    text = text.rstrip("\n")
    if "\n" in text:
        return f"{prefix}\n{text}"
    return f"{prefix} {text}"


def other_types(data: dict) -> str:
    rich = sorted(k for k in data if k != "text/plain")
    return f"  [also: {', '.join(rich)}]" if rich else ""


def render_output(out: dict, count) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        text = strip_ansi(joined(out.get("text", "")))
        if out.get("name") == "stderr":
            lines = text.rstrip("\n").split("\n")
            return "\n".join(f"[stderr] {line}" for line in lines)
        return text.rstrip("\n")
    if kind == "execute_result":
        data = out.get("data", {})
        text = joined(data.get("text/plain", ""))
        n = out.get("execution_count", count)
        return indent_block(f"Out[{n}]:", text) + other_types(data)
    if kind == "display_data":
        data = out.get("data", {})
        text = strip_ansi(joined(data.get("text/plain", ""))) if "text/plain" in data else "<display>"
        if ENGINE_RESULT_RE.match(text):
            return text.rstrip("\n") + other_types(data)
        return indent_block("[display]", text) + other_types(data)
    if kind == "update_display_data":
        return "[update display]" + other_types(out.get("data", {}))
    if kind == "error":
        tb = out.get("traceback") or []
        if tb:
            return strip_ansi("\n".join(tb)).rstrip("\n")
        return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
    return f"[{kind} output]"


def show(path: str, markdown: bool = False, stream=sys.stdout) -> int:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    rule = "-" * 75
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("display_name", "?")
    print(f"{path}  (kernel: {kernel})", file=stream)
    errors = 0
    for cell in nb.get("cells", []):
        kind = cell.get("cell_type")
        source = joined(cell.get("source", ""))
        if kind == "markdown":
            if markdown:
                print(rule, file=stream)
                print(source.rstrip("\n"), file=stream)
            continue
        if kind != "code":
            continue
        count = cell.get("execution_count")
        label = f"In [{count if count is not None else ' '}]:"
        print(rule, file=stream)
        lines = source.rstrip("\n").split("\n") if source else [""]
        pad = " " * (len(label) + 1)
        print(f"{label} {lines[0]}", file=stream)
        for line in lines[1:]:
            print(f"{pad}{line}" if line else "", file=stream)
        outputs = cell.get("outputs", [])
        if outputs:
            print(file=stream)
        for out in outputs:
            if out.get("output_type") == "error":
                errors += 1
            print(render_output(out, count), file=stream)
    print(rule, file=stream)
    print(f"{sum(1 for c in nb.get('cells', []) if c.get('cell_type') == 'code')} code cells, "
          f"{errors} error output(s)", file=stream)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="an executed .ipynb file")
    parser.add_argument("--markdown", action="store_true", help="print markdown cells too")
    args = parser.parse_args(argv)
    try:
        return show(args.notebook, markdown=args.markdown)
    except FileNotFoundError:
        print(f"show_notebook: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        print(f"show_notebook: {args.notebook} is not a notebook: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
