#!/usr/bin/env python3
"""Count the figures and widgets an executed notebook brought back.

    python tools/count_outputs.py target/demo/science.ipynb

Counts the ``image/png`` outputs (figures) overall and those of the engines:
a ``%px`` display is announced by a ``[output:N]`` line (engine N) just
before it, in the cell's stream (or as a display of its own). Counts the widget views
(``application/vnd.jupyter.widget-view+json``) too. Prints one summary line,
then one line per cell that has any of them; exits 1 when there are fewer
than ``--min-png`` figures, ``--min-engine-png`` engine figures or
``--min-widgets`` widget views (each 1 by default), 2 if the file is not a
notebook. Only the standard library is used (the notebook is read as JSON).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

PNG = "image/png"
WIDGET = "application/vnd.jupyter.widget-view+json"
ENGINE_LABEL_RE = re.compile(r"^\[output:(\d+)\]$", re.M)
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def joined(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def cell_counts(cell: dict) -> dict:
    """``{"png": n, "engine_png": {engine: n}, "widgets": n}`` of one code cell."""
    png = widgets = 0
    engine_png: dict[int, int] = {}
    engine = None  # the engine whose `[output:N]` label came last
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            labels = ENGINE_LABEL_RE.findall(joined(out.get("text")))
            if labels:
                engine = int(labels[-1])
            continue
        data = out.get("data", {}) if kind in ("display_data", "execute_result") else {}
        label = ENGINE_LABEL_RE.fullmatch(strip_ansi(joined(data.get("text/plain"))).strip())
        if label and set(data) == {"text/plain"}:
            # the label as a display of its own (as ipyparallel shows it)
            engine = int(label.group(1))
            continue
        if PNG in data:
            png += 1
            if engine is not None:
                engine_png[engine] = engine_png.get(engine, 0) + 1
        if WIDGET in data:
            widgets += 1
        engine = None  # a label announces the one display after it
    return {"png": png, "engine_png": engine_png, "widgets": widgets}


def count(nb: dict) -> tuple[dict, list[tuple[str, dict]]]:
    total = {"png": 0, "engine_png": 0, "engines": set(), "widgets": 0}
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        c = cell_counts(cell)
        if not (c["png"] or c["widgets"]):
            continue
        name = cell.get("id") or "?"
        cells.append((f"cell {name} (In [{cell.get('execution_count') or ' '}])", c))
        total["png"] += c["png"]
        total["engine_png"] += sum(c["engine_png"].values())
        total["engines"] |= set(c["engine_png"])
        total["widgets"] += c["widgets"]
    return total, cells


def describe(c: dict) -> str:
    parts = []
    if c["png"]:
        parts.append(f"{c['png']} {PNG}")
        if c["engine_png"]:
            parts.append("engine figures " + " ".join(f"[output:{e}]" * n for e, n in sorted(c["engine_png"].items())))
    if c["widgets"]:
        parts.append(f"{c['widgets']} widget view(s)")
    return ", ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="an executed .ipynb file")
    parser.add_argument("--min-png", type=int, default=1, metavar="N")
    parser.add_argument("--min-engine-png", type=int, default=1, metavar="N")
    parser.add_argument("--min-widgets", type=int, default=1, metavar="N")
    args = parser.parse_args(argv)
    try:
        with open(args.notebook, encoding="utf-8") as f:
            nb = json.load(f)
    except FileNotFoundError:
        print(f"count_outputs: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        print(f"count_outputs: {args.notebook} is not a notebook: {e}", file=sys.stderr)
        return 2
    total, cells = count(nb)
    engines = ", ".join(str(e) for e in sorted(total["engines"])) or "none"
    print(
        f"{args.notebook}: {total['png']} figure(s) as {PNG}, {total['engine_png']} of them "
        f"from engines (engines: {engines}); {total['widgets']} widget view(s)"
    )
    for name, c in cells:
        print(f"  {name}: {describe(c)}")
    missing = [
        what
        for what, have, need in (
            (f"figures ({PNG})", total["png"], args.min_png),
            ("engine figures ([output:N] then image/png)", total["engine_png"], args.min_engine_png),
            (f"widget views ({WIDGET})", total["widgets"], args.min_widgets),
        )
        if have < need
    ]
    if missing:
        print(f"count_outputs: too few {'; '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
