#!/usr/bin/env python3
"""The module graph of src/: which file uses which, and its import circles.

Each file under src/ is a node; a file has an edge to every file whose items it names through a
`crate::`, `super::` or `self::` path, or a path from a child module it declares (`use
config::X`), in `use` (re-exports included) or inline. A circle is a set of files that reach
each other (a strongly connected component of more than one file). A module's uses of its own
children are its composition, not a dependency, and are left out; so are test modules.

It prints the circles between the crate's top-level modules (`config`, `sources`, `pipeline`,
...), then between files.

    scripts/modgraph.py            # circles, then the largest files
    scripts/modgraph.py --edges    # every edge, for a diagram
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def files():
    out = {}
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.relpath(os.path.join(d, n), ROOT)
                out[module_of(p)] = p
    return out


def module_of(path):
    parts = path[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Test modules may use anything: they are not part of the graph.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests", text)
    return text[: cut.start()] if cut else text


def expand(text):
    """Every crate path named, `use crate::a::{b, c::d}` included, as lists of segments."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(use_paths(m.group(1).replace("\n", " ")))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", body):
        paths.append(m.group(1).split("::"))
    return paths


def use_paths(tree, prefix=()):
    tree = tree.strip()
    if tree.startswith("pub "):
        tree = tree[4:]
    out = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:i])
            start = i + 1
    parts.append(tree[start:])
    if len(parts) > 1:
        for p in parts:
            out.extend(use_paths(p, prefix))
        return out
    m = re.match(r"([\w:]*?)::\{(.*)\}$", tree, flags=re.S)
    if m:
        return use_paths(m.group(2), prefix + tuple(s for s in m.group(1).split("::") if s))
    segs = [s for s in re.split(r"\s+as\s+", tree)[0].split("::") if s]
    if segs:
        out.append(list(prefix) + segs)
    return out


def resolve(path, here, mods):
    if path[0] == "crate":
        segs = list(path[1:])
    elif path[0] == "super":
        base = list(here)
        while path and path[0] == "super":
            path = path[1:]
            base = base[:-1]
        segs = base + list(path)
    elif path[0] == "self":
        segs = list(here) + list(path[1:])
    else:
        return None
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in mods:
            return tuple(segs[:n])
    return None


def graph():
    mods = files()
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        text = strip(open(os.path.join(ROOT, p), encoding="utf-8").read())
        # Paths may start at a child module declared here (`mod config;` ... `use config::X`).
        children = set(re.findall(r"\bmod\s+(\w+)\s*;", text))
        for path in expand(text):
            if path[0] in children:
                path = ["self"] + path
            elif path[0] not in ("crate", "super", "self"):
                continue
            t = resolve(path, m, mods)
            if t is None or t == m or t == ():
                continue
            # A module is made of its children: its own uses of them are not a dependency.
            if t[: len(m)] == m:
                continue
            edges[m].add(t)
    return mods, edges


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def name(m):
    return "/".join(m) or "lib"


def main():
    mods, edges = graph()
    if "--edges" in sys.argv:
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f"{name(m)} -> {name(t)}")
        return
    top = {}
    for m, targets in edges.items():
        for t in targets:
            if m[:1] != t[:1] and m[:1] and t[:1]:
                top.setdefault(m[:1], set()).add(t[:1])
        top.setdefault(m[:1], set())
    module_circles = [sorted(c) for c in sccs(top) if len(c) > 1]
    print(f"circles between modules: {len(module_circles)}")
    for c in module_circles:
        print("  " + ", ".join(name(m) for m in c))
    circles = [sorted(c) for c in sccs(edges) if len(c) > 1]
    print(f"circles between files: {len(circles)}")
    for c in sorted(circles, key=len, reverse=True):
        print(f"  {len(c)} files: " + ", ".join(name(m) for m in c))
    sizes = sorted(
        ((sum(1 for _ in open(os.path.join(ROOT, p), encoding="utf-8")), p) for p in mods.values()),
        reverse=True,
    )
    print("largest files:")
    for n, p in sizes[:8]:
        print(f"  {n:5} src/{p}")
    sys.exit(1 if (circles or module_circles) and "--check" in sys.argv else 0)


if __name__ == "__main__":
    main()
