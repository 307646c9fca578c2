"""The house: no module of the project imports itself back through others.

An import circle makes a module's meaning depend on who imported first,
and the lazy imports that hide one break as soon as somebody moves them.
Every import counts, top-level or inside a function.
"""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("sriov_host", "vdsm_hooks", "jsonrpc_plugin", "engine_adapter", "sriov_lab")


def _modules() -> dict:
    out = {}
    for package in PACKAGES:
        for d, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, ".")
                    out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return out


def _imports(name: str, path: str, known: set) -> set:
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rsplit(".", 1)[0]
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update("%s.%s" % (base, a.name) for a in node.names)
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def import_graph() -> dict:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def circles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_circles_should_be_found_where_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_project_should_have_no_import_circle():
    graph = import_graph()
    assert "vdsm_hooks.hook" in graph and graph["vdsm_hooks.hook"], "the import graph is empty"
    assert circles(graph) == []
