#!/usr/bin/env python3
"""Build the single headers in single_include/pqscope/ from the headers in include/.

    scripts/amalgamate.py            write the single headers
    scripts/amalgamate.py --check    exit 1 if a file on disk differs from a fresh build
    scripts/amalgamate.py --root DIR work on another tree (DIR/include -> DIR/single_include)

Three single headers, each with the same spelling as in include/:
  pqscope/pqscope.hpp  the library (C++17, libpq only: it must not include Boost)
  pqscope/asio.hpp     the Boost.Asio front end (C++20); it includes pqscope/pqscope.hpp
                       from the same folder and inlines only its own headers
  pqscope/nlohmann_json.hpp
                       the nlohmann/json adapter, the same way

Starting from the entry header, every `#include <pqscope/...>` is replaced by
that header's text the first time it is seen (later ones become a comment), as
`#pragma once` would have it. System includes stay as they are. Only real
directives count: a line inside a comment or a raw string literal that happens
to read `#include <pqscope/...>` is copied as text.
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

ENTRY = "pqscope/pqscope.hpp"
OUTPUT = Path("single_include") / "pqscope" / "pqscope.hpp"
ASIO_ENTRY = "pqscope/asio.hpp"
ASIO_OUTPUT = Path("single_include") / "pqscope" / "asio.hpp"
JSON_ENTRY = "pqscope/nlohmann_json.hpp"
JSON_OUTPUT = Path("single_include") / "pqscope" / "nlohmann_json.hpp"
REGEN = "scripts/dev.sh amalgamate"
BOOST_INCLUDE = re.compile(r"^\s*#\s*include\s*[<\"]boost/")

PROJECT_INCLUDE = re.compile(r"^\s*#\s*include\s*<(pqscope/[^>]+)>")
PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\b")
CONDITIONAL = re.compile(r"^\s*#\s*(if|ifdef|ifndef|endif)\b(.*)")
BODIES = re.compile(r"^\s*#\s*ifdef\s+PQSCOPE_BODIES\b")
VERSION = re.compile(r"^\s*#\s*define\s+PQSCOPE_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)\b")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RAW_PREFIXES = {"R", "u8R", "uR", "UR", "LR"}
RAW_DELIM = re.compile(r'([^()\\\s"]{0,16})\(')


class AmalgamateError(Exception):
    pass


def directive_lines(text, name):
    """Yield (line, is_directive_start) for each line of text.

    is_directive_start is true when the line begins outside any comment, string
    or raw string literal and is not the continuation of a backslash-spliced
    line, i.e. when a `#` at its start would be a preprocessing directive.
    """
    lines = text.splitlines(keepends=True)
    state = "code"  # code | block | raw
    raw_end = ""
    spliced = False
    for line in lines:
        starts_clean = state == "code" and not spliced
        yield line, starts_clean
        body = line.rstrip("\r\n")
        i, n = 0, len(body)
        while i < n:
            if state == "block":
                j = body.find("*/", i)
                if j < 0:
                    i = n
                else:
                    state, i = "code", j + 2
                continue
            if state == "raw":
                j = body.find(raw_end, i)
                if j < 0:
                    i = n
                else:
                    state, i = "code", j + len(raw_end)
                continue
            c = body[i]
            if body.startswith("//", i):
                break  # the rest of the line is a comment (a trailing \ is handled below)
            if body.startswith("/*", i):
                state, i = "block", i + 2
                continue
            if c == '"' or c == "'":
                i = skip_quoted(body, i, c, name)
                continue
            if c.isdigit():
                # pp-number, so that digit separators (1'000) are not read as char literals
                i += 1
                while i < n and (body[i].isalnum() or body[i] in "_.'" or
                                 (body[i] in "+-" and body[i - 1] in "eEpP")):
                    i += 1
                continue
            m = IDENT.match(body, i)
            if m:
                i = m.end()
                if m.group() in RAW_PREFIXES and i < n and body[i] == '"':
                    d = RAW_DELIM.match(body, i + 1)
                    if not d:
                        raise AmalgamateError(f"{name}: malformed raw string literal: {body.strip()}")
                    raw_end = ")" + d.group(1) + '"'
                    state, i = "raw", d.end()
                continue
            i += 1
        # A backslash at the end splices the next line onto this one (a // comment too).
        spliced = state == "code" and body.endswith("\\")


def skip_quoted(body, i, quote, name):
    j = i + 1
    while j < len(body):
        if body[j] == "\\":
            j += 2
            continue
        if body[j] == quote:
            return j + 1
        j += 1
    if body.endswith("\\"):
        raise AmalgamateError(f"{name}: a string literal spliced across lines is not supported")
    return len(body)  # unterminated: the compiler will complain, not us


def inline_headers(include_dir, entry, provided=frozenset()):
    """The text of `entry` with the project headers it reaches inlined.

    Headers in `provided` are not inlined: the single header of the library
    already holds them. ENTRY itself stays an #include (the file beside this
    one); any other provided header becomes a comment.
    Returns (lines, headers inlined, version numbers found).
    """
    seen = set()
    versions = {}
    out = []

    def inline(rel, chain, in_bodies=False):
        path = include_dir / rel
        if not path.is_file():
            via = " (included from " + " -> ".join(chain) + ")" if chain else ""
            raise AmalgamateError(f"{path}: no such header{via}")
        text = path.read_text(encoding="utf-8")
        conditionals = []  # one entry per open #if: whether it is `#ifdef PQSCOPE_BODIES`
        for line, at_start in directive_lines(text, rel):
            if not line.endswith("\n"):
                line += "\n"
            if at_start:
                if PRAGMA_ONCE.match(line):
                    continue
                c = CONDITIONAL.match(line)
                if c:
                    if c.group(1) == "endif":
                        if conditionals:
                            conditionals.pop()
                    else:
                        conditionals.append(bool(BODIES.match(line)))
                m = PROJECT_INCLUDE.match(line)
                if m:
                    dep = m.group(1)
                    bodies = in_bodies or any(conditionals)
                    # Text inlined inside `#ifdef PQSCOPE_BODIES` is skipped by the units of a
                    # separately compiled program: a header first reached there would be
                    # missing from them. Only body files (under an impl/ folder) may be.
                    if bodies and dep not in seen and dep not in provided and "/impl/" not in dep:
                        raise AmalgamateError(
                            f"<{dep}> is first reached from the bodies of <{rel}> (inside #ifdef PQSCOPE_BODIES): "
                            "include it from a header's declarations, or separately compiled units lose it")
                    if dep in provided:
                        if dep == ENTRY and dep not in seen:
                            out.append(f"#include <{dep}>  // the single header beside this one\n")
                        else:
                            out.append(f"// #include <{dep}> (in <{ENTRY}>)\n")
                        seen.add(dep)
                    elif dep in seen:
                        out.append(f"// #include <{dep}> (inlined above)\n")
                    else:
                        seen.add(dep)  # before recursing: a cycle ends here, as with #pragma once
                        out.append(f"// #include <{dep}>\n")
                        inline(dep, chain + [rel], bodies)
                    continue
                v = VERSION.match(line)
                if v:
                    versions[v.group(1)] = v.group(2)
            out.append(line)

    seen.add(entry)
    inline(entry, [])
    return out, seen, versions


def banner(version, what):
    return [
        "#pragma once\n",
        f"// pqscope {version}, single-header edition{what}.\n",
        "//\n",
        "// Generated from include/ by scripts/amalgamate.py. DO NOT EDIT: changes here\n",
        f"// are lost. Edit the headers in include/ and regenerate with `{REGEN}`.\n",
        "\n",
    ]


def amalgamate(include_dir):
    """Both single headers: {relative output path: text}."""
    out, inlined, versions = inline_headers(include_dir, ENTRY)
    missing = [k for k in ("MAJOR", "MINOR", "PATCH") if k not in versions]
    if missing:
        raise AmalgamateError("no PQSCOPE_VERSION_" + "/".join(missing) + " #define found in the headers")
    version = ".".join(versions[k] for k in ("MAJOR", "MINOR", "PATCH"))
    for line, at_start in directive_lines("".join(out), ENTRY):
        if at_start and BOOST_INCLUDE.match(line):
            raise AmalgamateError(f"{ENTRY} must not include Boost (only {ASIO_ENTRY} may): {line.strip()}")
    results = {OUTPUT: "".join(banner(version, "") + out)}

    asio_out, _, _ = inline_headers(include_dir, ASIO_ENTRY, frozenset(inlined))
    what = ": the Boost.Asio front end (C++20); needs pqscope/pqscope.hpp beside it"
    results[ASIO_OUTPUT] = "".join(banner(version, what) + asio_out)

    json_out, _, _ = inline_headers(include_dir, JSON_ENTRY, frozenset(inlined))
    what = ": the nlohmann/json adapter; needs pqscope/pqscope.hpp beside it"
    results[JSON_OUTPUT] = "".join(banner(version, what) + json_out)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the single header is missing or stale")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="source tree to work on (default: the one holding this script)")
    args = ap.parse_args()

    root = args.root.resolve()
    try:
        fresh = amalgamate(root / "include")
    except AmalgamateError as e:
        print(f"amalgamate.py: {e}", file=sys.stderr)
        return 2

    status = 0
    for output, text in fresh.items():
        target = root / output
        if args.check:
            stale = f"{output.as_posix()} is stale: run {REGEN}"
            if not target.is_file():
                print(f"{stale} (the file does not exist)", file=sys.stderr)
                status = 1
                continue
            current = target.read_text(encoding="utf-8")
            if current != text:
                print(stale, file=sys.stderr)
                diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(),
                                                 "on disk", "from include/", lineterm="", n=1))
                for line in diff[:40]:
                    print("  " + line, file=sys.stderr)
                if len(diff) > 40:
                    print(f"  ... ({len(diff) - 40} more diff lines)", file=sys.stderr)
                status = 1
                continue
            print(f"{output.as_posix()} is up to date")
            continue

        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            print(f"{output.as_posix()} is already up to date")
            continue
        with open(target, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print(f"wrote {output.as_posix()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
