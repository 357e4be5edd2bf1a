#!/usr/bin/env python3
"""Finds import cycles among the modules of a crate (issue 22).

Usage: scripts/module-cycles.py [SRC_DIR]   (default: tracker/src)

Every file is a module (`a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`). A module uses
another when its code names it: `crate::x::y`, `crate::{x, y}` or `super::x` (resolved to
the longest module path that exists). Unit tests (`tests.rs` files, and what follows
`#[cfg(test)]` in a file) and comments are left out. Cycles are reported twice: among
every module, and among the top-level modules (a submodule counts as its top module).
Exits 1 if there is a cycle.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, path: Path) -> tuple:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def code_of(path: Path) -> str:
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    return "\n".join(lines)


def resolve(modules: set, path: tuple):
    """The longest prefix of `path` that is a module (None if none is)."""
    for n in range(len(path), -1, -1):
        if path[:n] in modules:
            return path[:n]
    return None


def references(code: str, here: tuple, top: set):
    """Module paths named in `code` of module `here` (`top`: the top-level modules, which
    the crate root names without `crate::`)."""
    found = []
    if here == ():
        for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)*)::", code):
            if m.group(1) in top:
                found.append(tuple((m.group(1) + m.group(2)).split("::")))
    for m in re.finditer(r"\bcrate::\{([^}]*)\}", code):
        for item in m.group(1).split(","):
            item = item.strip()
            if item:
                found.append(tuple(re.findall(r"\w+", item.split(" as ")[0])))
    for m in re.finditer(r"\bcrate((?:::\w+)+)", code):
        found.append(tuple(m.group(1).strip(":").split("::")))
    # `super` of a file module is its parent; of a `mod.rs` module, the parent of that.
    parent = here[:-1]
    for m in re.finditer(r"\bsuper((?:::\w+)+)", code):
        found.append(parent + tuple(m.group(1).strip(":").split("::")))
    for m in re.finditer(r"\bsuper::\{([^}]*)\}", code):
        for item in m.group(1).split(","):
            item = item.strip()
            if item:
                found.append(parent + tuple(re.findall(r"\w+", item)))
    return found


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "tracker/src")
    # main.rs is the binary, a crate of its own.
    files = [p for p in sorted(src.rglob("*.rs")) if p.name not in ("tests.rs", "main.rs")]
    modules = {module_of(src, p) for p in files}
    top = {m[0] for m in modules if m}
    graph, evidence = {}, {}
    for path in files:
        here = module_of(src, path)
        graph.setdefault(here, set())
        for named in references(code_of(path), here, top):
            target = resolve(modules, named)
            if target is None or target == here:
                continue
            graph[here].add(target)
            evidence.setdefault((here, target), "::".join(named))
    name = lambda m: "::".join(m) or "crate"
    status = 0
    for level, g in (("module", graph), ("top-level module", None)):
        if g is None:
            g = {}
            for a, targets in graph.items():
                for b in targets:
                    if a[:1] != b[:1]:
                        g.setdefault(a[:1], set()).add(b[:1])
                g.setdefault(a[:1], set())
        found = cycles(g)
        edges = sum(len(t) for t in g.values())
        print(f"{level} graph: {len(g)} modules, {edges} uses, {len(found)} cycle(s)")
        for component in found:
            status = 1
            print("  cycle among: " + ", ".join(name(m) for m in component))
            for a in component:
                for b in sorted(g.get(a, ())):
                    if b in component:
                        print(f"    {name(a)} -> {name(b)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
