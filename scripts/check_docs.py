#!/usr/bin/env python3
"""Checks that README.md still describes the code: options, environment variables, paths.

README.md is the manual, and nothing else notices when it falls behind the code.
This prints one line per problem (exit 1 on any):

  1. every option that `podkv SUB --help` prints, for each subcommand of
     `podkv --help`, is named in README.md (`--long` anywhere, matched as a whole
     name; or, for an option with a short name, `-x` in that subcommand's section),
     and every subcommand has a heading that names it (### `podkv SUB`);
  2. every "PODKV_..." string literal in src/ and tools/ (the environment
     variables podkv reads) is named in README.md;
  3. every backticked path in README.md exists, relative to the repository or
     to one of the folders the README writes paths relative to (SEARCH_ROOTS).
     Placeholders (DIR/..., OUT/...), ignored generated trees (.data/, .deps/,
     build*/), gtest names (Suite/Fixture.Test), `n/a` and patterns (*, {) are
     skipped.

    scripts/check_docs.py --podkv build/podkv [--root DIR]
    scripts/check_docs.py --self-test   show that each check can fail

ctest runs it as DocsCheck (and the self-test as DocsCheckSelfTest).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

SEARCH_ROOTS = ("", "src", "src/cuda", "docs/gpu-bench/kernel-tuning", "tests/fixtures/tokenizers")
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")
# CLI11 prints an option's names at 2 spaces ("-n,--n-gen INT" or, from 2.5, "-n, --n-gen INT");
# wrapped descriptions sit deeper.
OPTION_LINE = re.compile(r"^  (-[\w-]+(?:, ?-[\w-]+)*)")
SUBCOMMANDS = re.compile(r"^subcommands:\s*$", re.IGNORECASE | re.MULTILINE)
ENV_LITERAL = re.compile(r'"(PODKV_[A-Z0-9_]+)"')
PATH_TOKEN = re.compile(r"[A-Za-z0-9_./-]+")
GTEST_NAME = re.compile(r"[A-Z][A-Za-z0-9]*/.*\.")


def named(text, name):
    """Whether `name` (an option or variable) is in text as a whole name, not as the start of a longer one."""
    return re.search(r"(?<![A-Za-z0-9_-])" + re.escape(name) + r"(?![A-Za-z0-9_-])", text) is not None


def readme_parts(path):
    """(text with fenced code blanked, {subcommand: text of the sections whose headings name it})."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    fence, headings = False, []
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence, lines[i] = not fence, ""
        elif fence:
            lines[i] = ""
        elif m := re.match(r"(#+)\s", line):
            headings.append((i, len(m.group(1)), re.findall(r"`podkv ([a-z0-9-]+)`", line)))
    sections = {}
    for n, (start, level, subs) in enumerate(headings):
        end = next((s for s, lv, _ in headings[n + 1:] if lv <= level), len(lines))
        for sub in subs:
            sections[sub] = sections.get(sub, "") + "\n".join(lines[start:end]) + "\n"
    return "\n".join(lines), sections


def help_of(podkv, *args):
    return subprocess.run([podkv, *args, "--help"], capture_output=True, text=True, check=True).stdout


def check_options(podkv, text, sections):
    top = help_of(podkv)
    heading = SUBCOMMANDS.search(top)
    if heading is None:
        return ["`podkv --help` lists no subcommands (no \"Subcommands:\" heading): cannot check the options"]
    subs = []
    for line in top[heading.end():].splitlines()[1:]:
        if not line.strip():
            break
        if re.match(r"^  [a-z]", line):  # a name at 2 spaces; a wrapped description sits deeper
            subs.append(line.split()[0])
    problems, missing = [], {}
    for sub in subs:
        if sub not in sections:
            problems.append(f"no heading names `podkv {sub}` (e.g. ### `podkv {sub}`)")
        for line in help_of(podkv, sub).splitlines():
            m = OPTION_LINE.match(line)
            names = [n.strip() for n in m.group(1).split(",")] if m else []
            if not names or "--help" in names:
                continue
            longs = [n for n in names if n.startswith("--")]
            shorts = [n for n in names if not n.startswith("--")]
            if not any(named(text, n) for n in longs) and \
               not any(named(sections.get(sub, ""), n) for n in shorts):
                missing.setdefault(",".join(names), []).append(sub)
    for names, where in missing.items():
        short = " (nor its short name in the section of the subcommand)" if not names.startswith("--") else ""
        problems.append(f"option {names} of `podkv {'`, `podkv '.join(where)}` is not documented{short}")
    return problems


def check_env(root, text):
    """Every PODKV_* variable the code reads is in the README, and every one the README names is
    still read by the code or set by a build or test file (CMake options, scripts)."""
    found = {}
    for top in ("src", "tools"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8", errors="replace") as f:
                        for var in ENV_LITERAL.findall(f.read()):
                            found.setdefault(var, os.path.relpath(path, root))
    problems = [f"environment variable {var} (read in {path}) is not documented"
                for var, path in sorted(found.items()) if not named(text, var)]
    code = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build")) and d != "docs"]
        code += [os.path.join(folder, n) for n in files
                 if n != "README.md" and os.path.getsize(os.path.join(folder, n)) < (1 << 20)]  # no weights
    mentioned = set()
    for path in code:
        with open(path, encoding="utf-8", errors="replace") as f:
            mentioned.update(re.findall(r"PODKV_[A-Z0-9_]+", f.read()))
    for var in sorted(set(re.findall(r"PODKV_[A-Z0-9_]+", text)) - mentioned):
        line = text.count("\n", 0, text.index(var)) + 1
        problems.append(f"line {line}: {var} is named but nothing in the code reads or sets it")
    return problems


def is_placeholder(token):
    first = token.split("/", 1)[0]
    return (first.isupper() or first in (".data", ".deps") or first.startswith("build") or token == "n/a"
            or GTEST_NAME.match(token) is not None)


def check_paths(root, text):
    problems = []
    for m in re.finditer(r"`([^`]+)`", text):
        token = m.group(1)
        if ("/" not in token or not PATH_TOKEN.fullmatch(token) or token.startswith(("../", "/", "http"))
                or is_placeholder(token)):
            continue
        if not any(os.path.exists(os.path.join(root, base, token)) for base in SEARCH_ROOTS):
            line = text.count("\n", 0, m.start()) + 1
            looked = ", ".join(b or "." for b in SEARCH_ROOTS)
            problems.append(f"line {line}: `{token}` does not exist (looked in {looked})")
    return problems


def check(root, podkv):
    """The problems, one string each."""
    text, sections = readme_parts(os.path.join(root, "README.md"))
    return check_options(podkv, text, sections) + check_env(root, text) + check_paths(root, text)


FAKE_PODKV = """#!/bin/sh
if [ "$1" = --help ]; then printf 'Usage: podkv [OPTIONS] SUBCOMMAND\\n\\nSubcommands:\\n  run  run it\\n'; exit 0; fi
printf 'Options:\\n  -h,--help   Print this help\\n  -n,--count INT=1   how many\\n'
printf '  --fast      go fast\\n  --level INT:INT in [0 - 9]\\n                              --fast only\\n'
"""
# The same program as CLI11 2.5 and later print its help: capital headings, ", " between names.
FAKE_PODKV_25 = FAKE_PODKV.replace("Subcommands:", "SUBCOMMANDS:").replace("-h,--help", "-h, --help") \
    .replace("-n,--count", "-n, --count")
README = """# fake
### `podkv run`
    podkv run [-n 3] [--fast] [--level L]
Set `PODKV_SPEED`; see `scripts/x.sh`, `DIR/out.md`, `Suite/Fixture.Test`.
## Other
"""


def self_test():
    """A clean fake tree passes; each broken README (or new env var) gives the expected problem."""
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("src", "scripts"):
            os.makedirs(os.path.join(tmp, sub))
        podkv = os.path.join(tmp, "podkv")
        for path, body in ((podkv, FAKE_PODKV), (os.path.join(tmp, "scripts", "x.sh"), ""),
                           (os.path.join(tmp, "src", "a.cpp"), 'getenv("PODKV_SPEED");\n')):
            with open(path, "w") as f:
                f.write(body)
        os.chmod(podkv, 0o755)
        cases = [  # (README edit, src/b.cpp contents, expected problem text)
            ((None, None), "", None),
            (("[--fast]", "[--fast-mode]"), "", "option --fast of `podkv run` is not documented"),
            (("[-n 3]", ""), "", "option -n,--count of `podkv run` is not documented"),
            (("### `podkv run`\n    podkv run [-n 3]", "### run\n    podkv run [--count 3]"), "",
             "no heading names `podkv run`"),
            ((None, None), 'getenv("PODKV_SLOW");\n', "environment variable PODKV_SLOW (read in src/b.cpp)"),
            (("scripts/x.sh", "scripts/y.sh"), "", "line 4: `scripts/y.sh` does not exist"),
            (("Set `PODKV_SPEED`", "Set `PODKV_SPEED` or `PODKV_GONE`"), "",
             "line 4: PODKV_GONE is named but nothing in the code reads or sets it"),
        ]
        for (old, new), extra, wanted in cases:
            with open(os.path.join(tmp, "README.md"), "w") as f:
                f.write(README.replace(old, new) if old else README)
            with open(os.path.join(tmp, "src", "b.cpp"), "w") as f:
                f.write(extra)
            got = check(tmp, podkv)
            ok = got == [] if wanted is None else len(got) == 1 and wanted in got[0]
            if not ok:
                print(f"self-test: README edit {old!r} -> {new!r}: expected {wanted or 'no problem'}, got {got}",
                      file=sys.stderr)
                return 1
        # CLI11 2.5's layout: the clean README passes, a missing option is still found.
        with open(podkv, "w") as f:
            f.write(FAKE_PODKV_25)
        for readme, wanted in ((README, None), (README.replace("[-n 3]", ""), "option -n,--count")):
            with open(os.path.join(tmp, "README.md"), "w") as f:
                f.write(readme)
            got = check(tmp, podkv)
            if not (got == [] if wanted is None else len(got) == 1 and wanted in got[0]):
                print(f"self-test: CLI11 2.5 help: expected {wanted or 'no problem'}, got {got}", file=sys.stderr)
                return 1
    print("self-test: a missing option, heading, environment variable and path, and a stale variable, are each "
          "reported (CLI11 2.1 and 2.5 help)")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--podkv", help="the podkv executable (build/podkv)")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="the repository (default: this script's repository)")
    parser.add_argument("--self-test", action="store_true", help="show that each check can fail")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.podkv:
        parser.error("--podkv is required (the podkv executable)")
    problems = check(args.root, os.path.abspath(args.podkv))
    for p in problems:
        print(f"check_docs: README.md: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
