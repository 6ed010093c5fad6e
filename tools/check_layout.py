#!/usr/bin/env python3
"""Checks the layout rules of the workspace, for `make lint`:

1. No two modules of one crate use each other. A module is a source file;
   it uses another when it names it by path (`crate::a::b`, `super::x`,
   or a name the crate root re-exports from it).
2. The engine does not depend on the client, the magics, the controller
   or the Python module (`cargo tree -p rparallel-engine`).

Prints each violation and exits 1 if there is one.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE_MUST_NOT_USE = (
    "rparallel-client",
    "rparallel-magics",
    "rparallel-controller",
    "rparallel-directview",
)


def module_path(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def root_reexports(text: str) -> dict:
    """name -> module of the crate root's `pub use module::{Name, ...}`."""
    names = {}
    for m in re.finditer(r"pub use (\w+)::(?:\{([^}]*)\}|(\w+))", text):
        module, group, single = m.groups()
        for name in (group.split(",") if group else [single]):
            name = name.strip().split(" as ")[-1].strip()
            if name:
                names[name] = module
    return names


def edges_of_crate(src: pathlib.Path) -> dict:
    files = {module_path(src, f): f for f in src.rglob("*.rs")}
    root = files.get(())
    reexports = root_reexports(root.read_text()) if root else {}
    edges = {}
    for mod, file in files.items():
        if mod == ():
            continue  # the root declares and re-exports; it is the facade
        text = re.sub(r"//[^\n]*", "", file.read_text())
        text = text.split("#[cfg(test)]")[0]
        targets = set()
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            path = m.group(1).split("::")
            if tuple(path[:1]) in files:
                targets.add(longest(files, path))
            elif path[0] in reexports:
                targets.add((reexports[path[0]],))
        base = mod if file.name == "mod.rs" else mod[:-1]
        for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
            path = list(base[:-1] if file.name == "mod.rs" else base) + m.group(1).split("::")
            targets.add(longest(files, path))
        targets.discard(mod)
        targets.discard(None)
        edges[mod] = targets
    return edges


def longest(files: dict, path: list):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None


def cycles() -> list:
    found = []
    for manifest in sorted(ROOT.glob("*/Cargo.toml")):
        src = manifest.parent / "src"
        if not src.is_dir():
            continue
        edges = edges_of_crate(src)
        for a, targets in edges.items():
            for b in targets:
                if a < b and a in edges.get(b, ()):
                    name = lambda m: "::".join(m) or "crate"
                    found.append(f"{manifest.parent.name}: {name(a)} and {name(b)} use each other")
    return found


def engine_dependencies() -> list:
    tree = subprocess.run(
        ["cargo", "tree", "-p", "rparallel-engine", "-e", "normal", "--prefix", "none"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return [f"rparallel-engine depends on {c}" for c in ENGINE_MUST_NOT_USE if c in tree]


def main() -> int:
    problems = cycles() + engine_dependencies()
    for p in problems:
        print(f"layout: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
