#!/usr/bin/env python3
"""Fails when two modules of the crate import each other, directly or through others.

Usage: python3 scripts/module-cycles.py [src]

Builds the module graph of the library from the source files: each file under src/ (but
src/bin and src/main.rs) is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`); an edge goes
from a module to every crate module its `use` declarations and paths name
(`crate::a::b::Item`, `super::x`, `self::y`; an item path resolves to the longest prefix
that is a module). Module declarations (`mod x;`) and `#[cfg(test)]` blocks are not
edges. Prints every cycle found (as strongly connected components) and exits 1, or prints
the number of modules and edges and exits 0.
"""
import re
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "src")


def module_of(path: Path) -> tuple:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


files = [p for p in root.rglob("*.rs") if p.parts[len(root.parts)] != "bin" and p.name != "main.rs"]
modules = {module_of(p): p for p in files}

USE = re.compile(r"\buse\s+([^;]+);", re.S)
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod ... { ... }` blocks (tests may import anything)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree: str) -> list:
    """`a::{b, c::{d}}` → [`a::b`, `a::c::d`]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        return [re.sub(r"\bas\b.*$", "", tree)]
    prefix, inner = m.groups()
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    return [x for it in items if it for x in expand(prefix + "::" + it)]


def resolve(here: tuple, is_mod_file: bool, path: str):
    parts = path.split("::")
    head, rest = parts[0], [p for p in parts[1:] if p and p != "*"]
    rest = [p.split("as")[0] if False else p for p in rest]
    if head == "crate":
        base = []
    elif head in ("super", "self"):
        # In a/b.rs, `self` is a::b and `super` is a; in a/b/mod.rs the same.
        base = list(here)
        while head == "super" or (rest and rest[0] == "super"):
            base = base[:-1]
            if head == "super":
                head = "done"
            else:
                rest = rest[1:]
    else:
        return None
    target = tuple(base + rest)
    while target and target not in modules:
        target = target[:-1]
    return target if target in modules else None


edges = {m: set() for m in modules}
for mod, path in modules.items():
    text = strip_tests(path.read_text())
    text = re.sub(r"//[^\n]*", "", text)
    paths = []
    for u in USE.finditer(text):
        paths += expand(u.group(1))
    paths += [m.group(1) + m.group(2) for m in PATH.finditer(text)]
    for p in paths:
        t = resolve(mod, path.name == "mod.rs", p)
        # A module's own parents are where it is declared, not what it uses: skip them.
        if t is not None and t != mod and t != mod[: len(t)]:
            edges[mod].add(t)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


for v in sorted(modules):
    if v not in index:
        visit(v)

name = lambda m: "::".join(("crate",) + m)
if sccs:
    for comp in sccs:
        members = sorted(comp)
        print("cycle among: " + ", ".join(name(m) for m in members))
        for a in members:
            for b in sorted(edges[a]):
                if b in comp:
                    print(f"  {name(a)} -> {name(b)}")
    sys.exit(1)
print(f"no import cycles: {len(modules)} modules, {sum(len(e) for e in edges.values())} edges")
