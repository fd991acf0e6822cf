#!/usr/bin/env python3
"""Checks the folder layers of src/ against the table in src/layers.txt.

Every `#include "folder/..."` in src/ is a folder-level edge. The table gives,
for each folder, the lower folders it may use; a folder may include those and,
through them, everything they may include (the closure). An include outside
that set is an error, printed as one line naming the file, the include and the
rule. The script also reports loops in the real include graph (there can be
none when the table holds, since the table only names rows above) and checks
the table itself: every folder of src/ has a row, rows only name folders of
rows above them.

    scripts/check_layers.py            check; prints nothing but errors (exit 1 on any)
    scripts/check_layers.py --edges    also print the folder-level edges with include counts
    scripts/check_layers.py --table    print the table with each folder's closure
    scripts/check_layers.py --self-test  check that a wrong include and a loop are caught
    scripts/check_layers.py --src DIR --layers FILE   another tree or table

The build runs it before compiling any podkv library (CMake target
podkv_check_layers) and ctest runs it as LayerCheck.
"""

import argparse
import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
SOURCE_SUFFIXES = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")


def read_table(path):
    """Rows of the layer table: [(folder, [uses...], line number)], in file order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, uses = line.partition(":")
            if not sep or not re.fullmatch(r"[a-z_0-9]+", name.strip()):
                raise SystemExit(f"{path}:{number}: expected 'folder: lower folders ...', got '{line}'")
            rows.append((name.strip(), uses.split(), number))
    return rows


def check_table(rows, path):
    """Errors in the table itself: unknown or later folders named, rows given twice."""
    errors, seen = [], set()
    for name, uses, number in rows:
        if name in seen:
            errors.append(f"{path}:{number}: '{name}' has a second row")
        for use in uses:
            if use == name:
                errors.append(f"{path}:{number}: '{name}' names itself")
            elif use not in seen:
                errors.append(f"{path}:{number}: '{name}' uses '{use}', which has no row above it (rows go lowest first)")
        seen.add(name)
    return errors


def closures(rows):
    """folder -> every folder it may include (its uses, their uses, ...)."""
    allowed = {}
    for name, uses, _ in rows:  # rows above are done first
        reach = set()
        for use in uses:
            reach.add(use)
            reach |= allowed.get(use, set())
        allowed[name] = reach
    return allowed


def scan(src):
    """[(file, line number, include, from folder, to folder)] for every include of another src/ folder."""
    folders = {d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))}
    edges = []
    for folder in sorted(folders):
        for root, _, files in os.walk(os.path.join(src, folder)):
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                path = os.path.join(root, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m or "/" not in m.group(1):
                            continue
                        target = m.group(1).split("/", 1)[0]
                        if target in folders and target != folder:
                            edges.append((path, number, m.group(1), folder, target))
    return folders, edges


def find_loops(graph):
    """Strongly connected components with more than one folder (Tarjan)."""
    index, low, on_stack, stack, loops = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                loops.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return loops


def check(src, table_path, show_edges=False, show_table=False, out=sys.stdout):
    """Prints errors (one line each) and returns their number."""
    rows = read_table(table_path)
    errors = check_table(rows, table_path)
    allowed = closures(rows)
    uses = {name: u for name, u, _ in rows}
    folders, edges = scan(src)
    for folder in sorted(folders - set(allowed)):
        errors.append(f"{os.path.join(src, folder)}/: no row for '{folder}' in {table_path}: add one (which folders may it use?)")
    graph, counts = {}, {}
    for path, number, include, folder, target in edges:
        graph.setdefault(folder, set()).add(target)
        counts[(folder, target)] = counts.get((folder, target), 0) + 1
        if folder in allowed and target not in allowed[folder]:
            rule = " ".join(uses[folder]) or "nothing"
            errors.append(f'{path}:{number}: #include "{include}": {folder}/ may not include {target}/ '
                          f"(layer rule in {table_path}: '{folder}: {rule}')")
    for loop in find_loops(graph):
        inside = [f"{a}->{b}" for a in loop for b in sorted(graph[a]) if b in loop]
        errors.append(f"folder loop: {', '.join(loop)} reach each other through {' '.join(inside)}")
    if show_table:
        for name, u, _ in rows:
            present = "" if name in folders else "   (no folder yet)"
            print(f"{name:12} uses {' '.join(u) or '-':30} may include: {' '.join(sorted(allowed[name])) or '-'}{present}",
                  file=out)
    if show_edges:
        for (folder, target), n in sorted(counts.items()):
            print(f"{folder:12} -> {target:12} {n:3} includes", file=out)
        print(f"{len(counts)} folder-level edges, {len(find_loops(graph))} loops, {len(errors)} errors", file=out)
    for e in errors:
        print("error: " + e, file=out)
    return len(errors)


def self_test():
    """A table with two layers; a lower folder that includes the upper one must be caught, as must the loop."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        for folder in ("low", "high"):
            os.makedirs(os.path.join(src, folder))
        table = os.path.join(src, "layers.txt")
        with open(table, "w") as f:
            f.write("low:\nhigh: low\n")
        with open(os.path.join(src, "high", "h.h"), "w") as f:
            f.write('#include "low/l.h"\n')
        with open(os.path.join(src, "low", "l.cpp"), "w") as f:
            f.write('#include "low/l.h"\n')

        class Lines(list):
            def write(self, s):
                self.append(s)

        ok = Lines()
        if check(src, table, out=ok) != 0:
            print("self-test: a clean tree was refused:\n" + "".join(ok), file=sys.stderr)
            return 1
        with open(os.path.join(src, "low", "l.cpp"), "a") as f:
            f.write('#include "high/h.h"\n')
        got = Lines()
        n = check(src, table, out=got)
        text = "".join(got)
        wanted = ['l.cpp:2: #include "high/h.h": low/ may not include high/', "folder loop: high, low"]
        missing = [w for w in wanted if w not in text]
        if n != 2 or missing:
            print(f"self-test: expected 2 errors with {wanted}, got {n}:\n{text}", file=sys.stderr)
            return 1
    print("self-test: a wrong include and a folder loop are both reported")
    return 0


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=os.path.join(root, "src"), help="the source folder (src/)")
    parser.add_argument("--layers", help="the layer table (SRC/layers.txt)")
    parser.add_argument("--edges", action="store_true", help="print the folder-level edges")
    parser.add_argument("--table", dest="show_table", action="store_true",
                        help="print the table with each folder's closure")
    parser.add_argument("--self-test", action="store_true", help="check that a wrong include is caught")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    src = os.path.relpath(args.src) if not os.path.relpath(args.src).startswith("..") else args.src
    table = args.layers or os.path.join(src, "layers.txt")
    return 1 if check(src, table, args.edges, args.show_table) else 0


if __name__ == "__main__":
    sys.exit(main())
