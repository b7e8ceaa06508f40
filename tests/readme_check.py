#!/usr/bin/env python3
"""Fails when README.md drifts from the code: its C++ does not compile, its reference
signatures do not match the headers, or its commands name what does not exist.

Conventions for README authors (compiler errors point at README.md lines). A marker
is an HTML comment on the line right before the opening fence.

```cpp blocks are compiled with -fsyntax-only -pedantic-errors against include/:
  - a block with `int main(` is a complete program, compiled alone: C++17, or C++20
    with Boost when it uses pqscope::asio. One that is the verbatim text of a file a
    ```sh compile command of the README compiles is checked by running that command;
  - a block whose first line of code starts a declaration (#include, struct, class,
    template, namespace, using, enum) is placed at global scope, so
    `template <> struct pqscope::value_traits<T>` works;
  - any other block is a fragment: the body of a function of its own in which
    `pqscope::connection& conn` is in scope, with the declarations of CONTEXT below
    (deposit, transfer, audit). A fragment that uses pqscope::asio or co_await is the
    body of a boost::asio::awaitable<void> coroutine with `pqscope::asio::connection&
    conn` instead;
  - `<!-- readme-check: signatures -->`: each line is a reference signature (below) of
    a free function of namespace pqscope (the names in FREE_FUNCTIONS);
  - `<!-- readme-check: skip (why) -->`: not compiled. For pseudo-code only; prefer a
    fragment that compiles.

Reference tables: the first column of a table whose header cell is empty or `member`,
under a heading that names the class first, in backticks (### `result`), the table
headed `pqscope::asio::` (the asio connection), and tables headed with another asio
class (`pqscope::asio::copy_writer`). Each backticked item must be one of these forms:
  `RET name(args) [const]`   the call has type RET (called on a const object with
                             `const`), and the class declares it returning RET as
                             spelled (std::size_t and std::uint64_t are one type on LP64)
  `name(args)`               the call compiles
  `[explicit] Class(args)`, `Class{args}`   constructible; implicit exactly when
                             `explicit` is absent (`Class var{args}`: either)
  `name(args)` → `void(std::exception_ptr, T)`   (asio) the completion signature
  `obj.name(args)`, `obj[i]`, `for (row r : result)`, `lease`: ...   through an object
                             of the class OBJECTS names
  `TYPE member` / `member`   (member tables) the member's type; the table must list
                             every data member of the struct
`arg = {}` and `[arg,]` may be left out. Arguments are types (`const transaction_options&`,
`std::string conninfo`) or placeholder names (PLACEHOLDERS: sql, params..., i, name, fn,
token, ...); a new placeholder, class or free function is added to the tables below.
An item in another form fails the check: rewrite it, or move it to the second column.

Also checked: the error hierarchy (the block that starts `error (std::runtime_error)`)
against the exception classes of the headers; every `scripts/dev.sh CMD [--option]`
anywhere in the README against scripts/dev.sh's dispatcher, and the Development listing
of its commands against all of them; every compiler command in a ```sh block (the
include path from pg_config, -lpq; run with -fsyntax-only when its source file exists);
every repository path in backticks exists.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

# Declarations every fragment may use (the README's running example).
CONTEXT = """\
void deposit(pqscope::connection& c, int id, long cents);
void transfer(pqscope::connection& c, int from, int to, long cents);
void audit(pqscope::connection& c, const std::string& what);
"""

# Stand-ins for the placeholder types and argument names of the reference.
TYPES = {"D": "pqscope::libpq_driver", "Driver": "pqscope::libpq_driver", "T": "long", "R": "long",
         "Struct": "readme_check::listed_row",
         "A": "int", "B": "long", "io_context": "boost::asio::io_context"}
PLACEHOLDERS = {
    "sql": '"SELECT $1, $2"', "params...": "1, std::string()", "i": "std::size_t{0}", "j": "std::size_t{0}",
    "name": '"name"', "value": '"value"', "fn": "readme_check::any_fn{}", "conninfo": "std::string()",
    "c": "std::declval<pqscope::connection&>()", "conn": "std::declval<connection&>()",
    "o": "pqscope::transaction_options{}", "options": "pqscope::transaction_options{}",
    "ms": "std::chrono::milliseconds{1}", "values...": "1, std::string()",
    "channel": '"jobs"', "timeout": "std::chrono::milliseconds{1}", "by_position": "pqscope::by_position",
    "seen": "std::declval<pqscope::wal_position&>()",
}
ASIO_PLACEHOLDERS = dict(PLACEHOLDERS, **{
    "executor": "std::declval<boost::asio::any_io_executor>()", "token": "readme_check::signature_token{}",
    "query": 'pqscope::asio::query{"SELECT $1", 1}', "fn": "readme_check::any_coroutine{}",
    "conn": "std::declval<pqscope::asio::connection&>()",
})
# Names the reference uses as classes (`Name(args)`, `Name{args}`: a constructor) and as
# free functions (`name(args)`: not a member of the table's class).
CLASSES = {"database", "connection", "pool", "transaction", "result", "query", "lease", "copy_writer", "copy_reader",
           "params", "numeric", "uuid", "replica_set"}
FREE_FUNCTIONS = {"atomic", "transactional", "async_atomic", "values_list"}
# Objects named in reference items (`row[j]`, `tx.async_commit(token)`): their class.
OBJECTS = {"result": "result", "row": "row", "field": "field", "tx": "transaction", "lease": "lease"}

HELPERS = """\
namespace readme_check {
template <class> constexpr bool valid = true;
// true when T can be copy-list-initialized from A... (no explicit constructor is chosen)
template <class T, class... A>
auto implicit_test(int) -> decltype(void(std::declval<void (*)(T)>()({std::declval<A>()...})), std::true_type{});
template <class T, class... A> std::false_type implicit_test(...);
template <class T, class... A> constexpr bool implicitly_constructible = decltype(implicit_test<T, A...>(0))::value;
// A callable taking the connection or nothing.
struct any_fn {
  template <class... A> long operator()(A&&...) const { return 0; }
};
// A struct listed for row.to<T>().
struct listed_row {
  long id = 0;
};
PQSCOPE_FIELDS(listed_row, id)
}  // namespace readme_check
"""
ASIO_HELPERS = """\
namespace readme_check {
// A completion token whose result is a pointer to the completion signature.
struct signature_token {};
struct any_coroutine {
  template <class... A> boost::asio::awaitable<long> operator()(A&&...) const { co_return 0; }
};
}  // namespace readme_check
template <class Sig>
struct boost::asio::async_result<readme_check::signature_token, Sig> {
  using return_type = Sig*;
  template <class Initiation, class... Args>
  static Sig* initiate(Initiation&&, readme_check::signature_token, Args&&...) { return nullptr; }
};
"""

IDENT = r"[A-Za-z_]\w*"


class Failure(Exception):
    pass


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- README parsing --------------------------------------------------------------------

def parse_blocks(lines):
    """Fenced blocks: (info, first content line number, content lines, marker or None)."""
    blocks, i = [], 0
    while i < len(lines):
        # A block may be indented (inside a list item): its lines lose that indent.
        m = re.match(r"^( *)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, info, start = m.group(1), m.group(2), i + 1
        marker = None
        prev = lines[i - 1].strip() if i > 0 else ""
        mm = re.match(r"<!--\s*readme-check:\s*(.*?)\s*-->$", prev)
        if mm:
            marker = mm.group(1)
        j = start
        while j < len(lines) and lines[j].rstrip() != indent + "```":
            j += 1
        if j == len(lines):
            raise Failure(f"README.md:{i + 1}: unterminated code block")
        body = [l[len(indent):] if l.startswith(indent) else l.lstrip(" ") for l in lines[start:j]]
        blocks.append((info, start + 1, body, marker))
        i = j + 1
    return blocks


def outside_blocks(lines):
    """(line number, text) of the lines outside fenced blocks."""
    out, inside = [], False
    for n, line in enumerate(lines, 1):
        if line.lstrip(" ").startswith("```"):
            inside = not inside
            continue
        if not inside:
            out.append((n, line))
    return out


def line_directive(n):
    return f'#line {n} "README.md"\n'


# ---- ```cpp blocks -----------------------------------------------------------------------

DECLARATION = re.compile(r"^(#include|struct |class |template\s*<|namespace |using |enum |union )")


def first_code_line(content):
    for line in content:
        s = line.strip()
        if s and not s.startswith("//"):
            return s
    return ""


def is_asio(content):
    text = "\n".join(content)
    return "pqscope::asio" in text or "co_await" in text or "pqscope/asio.hpp" in text


# ---- reference signatures ------------------------------------------------------------------

def split_args(s):
    """Splits on top-level commas."""
    args, depth, cur, quoted = [], 0, "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            pass
        elif ch in "(<{[":
            depth += 1
        elif ch in ")>}]":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        args.append(cur.strip())
    return args


def subst_types(t):
    return re.sub(IDENT, lambda m: TYPES.get(m.group(0), m.group(0)), t)


def arg_expr(arg, placeholders):
    """(expression, optional) for one argument of a reference item."""
    optional = False
    m = re.match(r"^\[(.*),\]$", arg)  # `[options,]`
    if m:
        arg, optional = m.group(1).strip(), True
    m = re.match(r"^(.*?)\s*=\s*\{\}$", arg)
    if m:
        arg, optional = m.group(1), True
    if arg in placeholders:
        return placeholders[arg], optional
    if re.match(r'^".*"$|^\d+$', arg):
        return arg, optional
    # a type, possibly followed by a parameter name
    m = re.match(rf"^(.*[\w>&*])\s+({IDENT})$", arg)
    t = m.group(1) if m and m.group(1) not in ("const", "unsigned") else arg
    if not re.match(r"^[\w:<>,&*\s]+$", t):
        raise Failure(f"cannot read the argument `{arg}`")
    if re.match(rf"^{IDENT}$", t) and t[0].islower() and "::" not in t and t not in (
            "connection_options", "transaction_options", "pool_options", "replica_set_options", "database",
            "connection", "result"):
        raise Failure(f"unknown placeholder `{arg}`: add it to PLACEHOLDERS in tests/readme_check.py")
    return f"std::declval<{subst_types(t)}>()", optional


def arg_sets(args, placeholders):
    """Every argument list the item allows: all arguments, and without the optional ones."""
    exprs = [(e, opt) for a in args for expr, opt in [arg_expr(a, placeholders)] for e in split_args(expr)]
    full = [e for e, _ in exprs]
    sets = [full]
    if any(opt for _, opt in exprs):
        sets.append([e for e, opt in exprs if not opt])
    return sets


ITEM_CALL = re.compile(
    rf"^(?P<explicit>explicit\s+)?(?:(?P<ret>[\w:<>&*,\s]+?)\s+)??"
    rf"(?:(?P<obj>{IDENT})\.)?(?P<name>{IDENT}(?:<[^()]*>)?)\((?P<args>.*)\)(?P<const>\s+const)?$")


def reference_checks(item, cls, placeholders, n, completion=None, previous_args=None):
    """C++ lines checking one backticked item, or None if its form is not one we read."""
    text = item.strip()
    text = re.sub(r"^co_await\s+", "", text)
    text = re.sub(rf"^auto\s+{IDENT}\s*=\s*", "", text)
    text = text.rstrip(";").strip()
    msg = c_string(f"README.md:{n}: `{item}` does not match the code")
    out = []

    # `Type var{args}`: a constructor
    m = re.match(rf"^({IDENT})(\s+{IDENT})?\{{(.*)\}}$", text)
    direct = bool(m and m.group(2))  # `Type var{args}`: explicit or not, it compiles
    if m:
        text = f"{m.group(1)}({m.group(3)})"
    # `for (row r : result)`
    m = re.match(rf"^for \((\w+) {IDENT} : ({IDENT})\)$", text)
    if m and m.group(2) in OBJECTS:
        return [f"static_assert(std::is_same_v<decltype(*std::declval<{OBJECTS[m.group(2)]}&>().begin()), "
                f"{m.group(1)}>, {msg});"], None, None
    # `obj[i]`
    m = re.match(rf"^({IDENT})\[(.*)\]$", text)
    if m and m.group(1) in OBJECTS:
        idx = placeholders.get(m.group(2), m.group(2))
        return [f"static_assert(readme_check::valid<decltype(std::declval<{OBJECTS[m.group(1)]}&>()[{idx}])>, {msg});"], None, None
    if text in ("*", "->"):
        expr = f"*std::declval<{cls}&>()" if text == "*" else f"std::declval<{cls}&>().operator->()"
        return [f"static_assert(readme_check::valid<decltype({expr})>, {msg});"], None, None
    m = ITEM_CALL.match(text)
    if not m:
        return None
    name, ret, obj = m.group("name"), m.group("ret"), m.group("obj")
    args = split_args(re.sub(r"\[(\w+),\]\s*", r"[\1,], ", m.group("args")))
    if args and args[-1] == "...":  # `connection(io_context&, ...)`: the rest as in the previous item
        args = args[:-1] + (previous_args or [])[len(args) - 1:]
    base = name.split("<")[0]
    name = subst_types(name).replace(", ...", "")
    if obj:
        if obj not in OBJECTS:
            return None
        cls = OBJECTS[obj]
    if not obj and not ret and (base in CLASSES or base == cls):  # constructor
        cls = base
        for s in arg_sets(args, placeholders):
            types = ", ".join([cls] + [f"decltype({e})" for e in s])
            out.append(f"static_assert(std::is_constructible_v<{types}>, {msg});")
            if direct:
                continue
            implicit = "!" if m.group("explicit") else ""
            out.append(f"static_assert({implicit}readme_check::implicitly_constructible<{types}>, "
                       + c_string(f"README.md:{n}: `{item}`: " + ("explicit" if implicit else "not explicit")
                                  + " in the code") + ");")
        return out, args, None
    if base in FREE_FUNCTIONS and not obj:
        cls = None
    if cls is None and m.group("const"):
        return None
    for s in arg_sets(args, placeholders):
        call = f"{name}({', '.join(s)})"
        if cls is not None:
            call = f"std::declval<{'const ' if m.group('const') else ''}{cls}&>().{call}"
        if completion is not None:
            out.append(f"static_assert(std::is_same_v<decltype({call}), std::add_pointer_t<{subst_types(completion)}>>, {msg});")
        elif ret:
            out.append(f"static_assert(std::is_same_v<decltype({call}), {subst_types(ret)}>, {msg});")
        else:
            out.append(f"static_assert(readme_check::valid<decltype({call})>, {msg});")
    return out, args, ((cls, base, ret.strip()) if ret and cls and completion is None else None)


def table_rows(lines, start):
    """Rows (line number, first cell) of the table whose header is at lines[start]."""
    rows, i = [], start + 2
    while i < len(lines) and lines[i].startswith("|"):
        cells = re.findall(r"\|((?:[^|`]|`[^`]*`)*)", lines[i])
        rows.append((i + 1, cells[0].strip(), [c.strip() for c in cells]))
        i += 1
    return rows


def struct_members(headers, name):
    """The data members of `struct name` in the headers, or None."""
    for text in headers.values():
        m = re.search(rf"^struct {name} \{{\n(.*?)^\}};", text, re.S | re.M)
        if m:
            members = []
            for line in m.group(1).splitlines():
                d = re.match(r"^  (?!//|using |static |template|\w+\()([\w:<>(),&\s*]+?)\s+(\w+)\s*(?:=[^;]*|\{[^;]*\})?;",
                             line)
                if d:
                    members.append(d.group(2))
            return members
    return None


def class_body(headers, cls, asio):
    """The text of the class's definition in the headers (asio: under asio/), or None."""
    cls = cls.split("::")[-1]
    name = "basic_connection" if cls == "connection" and not asio else cls
    for path, text in headers.items():
        if asio != (os.sep + "asio" + os.sep in path):
            continue
        m = re.search(rf"^(?:class|struct) {name}\b[^;{{]*\{{\n(.*?)^\}};", text, re.S | re.M)
        if m:
            return m.group(1)
    return None


def check_spelling(headers, spelling, asio, where, errors):
    """The return type as the class declares it: `std::size_t` and `std::uint64_t` are
    one type on LP64, so the static_assert alone cannot tell them apart."""
    cls, name, ret = spelling
    body = class_body(headers, cls, asio)
    if body is None:
        return
    spelled = set()
    for m in re.finditer(rf"^\s*(?:template\s*<[^>]*>\s*)?([^;{{}}()/]*?)\b{name}\s*\(", body, re.M):
        t = re.sub(r"\[\[\w+\]\]|\b(?:static|inline|constexpr|virtual|explicit|friend)\b", "", m.group(1))
        t = " ".join(t.split())
        if t:
            spelled.add(t)
    norm = " ".join(subst_types(ret).split())
    if spelled and "auto" not in spelled and ret not in spelled and norm not in spelled:
        errors.append(f"{where}: the code declares {name}() as returning {' or '.join(sorted(spelled))}")


def generate_reference(lines, headers, errors):
    """(C++17 checks, C++20 asio checks) from the reference tables."""
    plain, asio = [], []
    heading_class = None
    for i, line in enumerate(lines):
        h = re.match(r"^#{2,4} (.*)", line)
        if h:
            c = re.match(rf"^`({IDENT})`", h.group(1))
            heading_class = c.group(1) if c else None
            continue
        if not line.startswith("|") or i + 1 >= len(lines) or not re.match(r"^\|\s*-", lines[i + 1]):
            continue
        if i > 0 and lines[i - 1].startswith("|"):
            continue
        header = re.findall(r"\|([^|]*)", line)[0].strip()
        asio_class = re.fullmatch(r"`pqscope::asio::(\w+)`", header)
        if header == "`pqscope::asio::`":
            out, placeholders, cls = asio, ASIO_PLACEHOLDERS, "connection"
        elif asio_class:  # a table of another asio class: `pqscope::asio::copy_writer`
            out, placeholders, cls = asio, ASIO_PLACEHOLDERS, "pqscope::asio::" + asio_class.group(1)
        elif header in ("", "member") and heading_class:
            out, placeholders, cls = plain, PLACEHOLDERS, heading_class
        else:
            continue
        listed = []
        for n, cell, _ in table_rows(lines, i):
            if header == "member":
                for item in re.findall(r"`([^`]+)`", cell):
                    m = re.match(rf"^(?:(.+?)\s+)?({IDENT})$", item)
                    if not m:
                        raise Failure(f"README.md:{n}: cannot read the member `{item}`")
                    listed.append(m.group(2))
                    msg = c_string(f"README.md:{n}: `{item}` does not match the code")
                    out.append(line_directive(n) + (
                        f"static_assert(std::is_same_v<decltype({cls}::{m.group(2)}), {m.group(1)}>, {msg});"
                        if m.group(1) else f"static_assert(readme_check::valid<decltype({cls}::{m.group(2)})>, {msg});"))
                continue
            row_class, previous = cls, None
            for item, completion, colon in re.findall(r"`([^`]+)`(?:\s*→\s*`([^`]+)`)?(:?)", cell):
                if colon and item in OBJECTS:  # `lease`: get(), ...
                    row_class = OBJECTS[item]
                    continue
                try:
                    r = reference_checks(item, row_class, placeholders, n, completion or None, previous)
                except Failure as e:
                    raise Failure(f"README.md:{n}: `{item}`: {e}")
                if r is None:
                    errors.append(f"README.md:{n}: `{item}` is in no form tests/readme_check.py reads "
                                  "(see the top of the script)")
                    continue
                checks, previous, spelling = r
                out.append(line_directive(n) + " ".join(checks))
                if spelling:
                    check_spelling(headers, spelling, header.startswith("`pqscope::asio::"),
                                   f"README.md:{n}: `{item}`", errors)
        if header == "member":
            members = struct_members(headers, cls)
            if members is None:
                raise Failure(f"README.md:{i + 1}: no `struct {cls}` in include/pqscope")
            missing = [m for m in members if m not in listed]
            extra = [m for m in listed if m not in members]
            if missing or extra:
                errors.append(f"README.md:{i + 1}: the `{cls}` table does not list the struct's members: "
                              f"missing {missing}, not in the code {extra}")
    return plain, asio


def generate_signatures(start, content):
    out = []
    for k, line in enumerate(content):
        code = line.split("//")[0].strip()
        if not code:
            continue
        n = start + k
        try:
            r = reference_checks(code, None, PLACEHOLDERS, n)
        except Failure as e:
            raise Failure(f"README.md:{n}: {e}")
        if r is None:
            raise Failure(f"README.md:{n}: `{code}` is not a signature the check can read")
        out.append(line_directive(n) + " ".join(r[0]))
    return out


# ---- the error hierarchy ---------------------------------------------------------------------

def check_errors(start, content, headers):
    """static_asserts for the tree; fails unless it lists every exception class."""
    out, stack = [], []  # stack: (indent, class)
    listed = []
    for k, line in enumerate(content):
        n = start + k
        m = re.match(r"^([|` ]*[|`]- |)(\w+)", line)
        if not m:
            continue
        indent, cls = len(m.group(1)), m.group(2)
        if not stack:
            base = re.search(r"\(([\w:]+)\)", line).group(1)
        else:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            base = "pqscope::" + stack[-1][1]
        stack.append((indent, cls))
        listed.append(cls)
        out.append(line_directive(n) + f"static_assert(std::is_base_of_v<{base}, pqscope::{cls}>, "
                   + c_string(f"README.md:{n}: {cls} does not derive from {base}") + ");")
    in_code = set()
    for text in headers.values():
        in_code.update(re.findall(r"^class (\w+) : public (?:error|\w+_error|\w+_aborted)\b", text, re.M))
        in_code.update(re.findall(r"^PQSCOPE_SQL_ERROR_CLASS\((\w+),", text, re.M))
    in_code.add("error")
    missing = sorted(in_code - set(listed))
    if missing:
        raise Failure(f"README.md:{start}: the error hierarchy does not list {missing}")
    return out


# ---- shell commands ---------------------------------------------------------------------

def dev_commands(dev_sh):
    text = open(dev_sh).read()
    body = re.search(r'^case "\$cmd" in\n(.*?)^esac', text, re.S | re.M).group(1)
    cmds = set()
    for pattern in re.findall(r"^  (?! )([\w| -]+)\)", body, re.M):
        cmds.update(p.strip() for p in pattern.split("|"))
    return cmds, text


def check_shell(lines, blocks, root, errors):
    cmds, dev_text = dev_commands(os.path.join(root, "scripts", "dev.sh"))
    for n, line in enumerate(lines, 1):
        for m in re.finditer(r"scripts/dev\.sh((?:\s+[\w-]+)?)((?:\s+\[?--[\w-]+\]?)*)", line):
            cmd = m.group(1).strip()
            if not cmd:
                continue
            if cmd not in cmds:
                errors.append(f"README.md:{n}: `scripts/dev.sh {cmd}`: no such command in scripts/dev.sh "
                              f"(it has {', '.join(sorted(cmds))})")
            for opt in re.findall(r"--[\w-]+", m.group(2)):
                if opt not in dev_text:
                    errors.append(f"README.md:{n}: `scripts/dev.sh {cmd} {opt}`: scripts/dev.sh has no {opt}")
    # The Development listing names every command.
    for info, start, content, _ in blocks:
        for k, line in enumerate(content):
            m = re.match(r"^scripts/dev\.sh\s+(\S.*)$", line)
            if not m or info:
                continue
            text = m.group(1)
            for more in content[k + 1:]:
                if not more.startswith(" "):
                    break
                text += " " + more.strip()
            listed = {re.split(r"[\s\[]", e.strip())[0] for e in text.split(",") if e.strip()}
            for opt in re.findall(r"--[\w-]+", text):
                if opt not in dev_text:
                    errors.append(f"README.md:{start + k}: the listing names {opt}, which scripts/dev.sh does not have")
            for c in sorted(listed - cmds):
                errors.append(f"README.md:{start + k}: the listing names `{c}`, which scripts/dev.sh does not have")
            for c in sorted(cmds - listed - {"help", "-h", "--help"}):
                errors.append(f"README.md:{start + k}: the listing of scripts/dev.sh leaves out `{c}`")
    commands = []
    for info, start, content, _ in blocks:
        if info not in ("sh", "bash", "console", "shell"):
            continue
        for k, line in enumerate(content):
            words = line.split()
            if not words or not re.match(r"^(g\+\+|clang\+\+|c\+\+)(-\d+)?$", words[0]):
                continue
            n = start + k
            if not re.search(r'-I\s*"?\$\(pg_config --includedir\)"?', line):
                errors.append(f"README.md:{n}: the compile command lacks -I\"$(pg_config --includedir)\"")
            if "-lpq" not in words and "pkg-config" not in line:
                errors.append(f"README.md:{n}: the compile command does not link -lpq")
            sources = [w for w in words if w.endswith(".cpp")]
            if sources and all(os.path.exists(os.path.join(root, s)) for s in sources):
                src = open(os.path.join(root, sources[0])).read()
                if "pqscope/asio.hpp" in src and "-std=c++20" not in words:
                    errors.append(f"README.md:{n}: {sources[0]} needs -std=c++20")
                # Run it as written, checking only (no object file, no link).
                argv = [w for w in shlex.split(line.replace("$(pg_config --includedir)", "@PGINC@"))]
                cleaned, skip = [], False
                for w in argv:
                    if skip:
                        skip = False
                    elif w == "-o":
                        skip = True
                    elif not w.startswith("-l") and w != "-pthread":
                        cleaned.append(w)
                commands.append((n, cleaned + ["-fsyntax-only"]))
    return commands


def check_paths(lines, root, errors):
    for n, line in outside_blocks(lines):
        for code in re.findall(r"`([^`]+)`", line):
            for p in re.findall(r"(?<![\w/.])((?:include|examples|tests|scripts|bench|single_include)/[\w./-]*\w)", code):
                if not os.path.exists(os.path.join(root, p)):
                    errors.append(f"README.md:{n}: `{p}` does not exist")
        if line.startswith("| `") and line.split("|")[1].strip().endswith(".cpp`"):
            name = line.split("|")[1].strip().strip("`")
            if "/" not in name and not os.path.exists(os.path.join(root, "examples", name)):
                errors.append(f"README.md:{n}: examples/{name} does not exist")


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="the project's top folder")
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    ap.add_argument("--include", nargs="*", default=[], help="libpq's include folders")
    ap.add_argument("--boost-include", nargs="*", default=[], help="Boost's include folders")
    ap.add_argument("--out", required=True, help="where the generated translation units go")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()

    a.root = os.path.abspath(a.root)
    readme = os.path.join(a.root, "README.md")
    lines = open(readme, encoding="utf-8").read().split("\n")
    headers = {}
    for d, _, files in os.walk(os.path.join(a.root, "include", "pqscope")):
        for f in files:
            headers[os.path.join(d, f)] = open(os.path.join(d, f), encoding="utf-8").read()
    os.makedirs(a.out, exist_ok=True)
    errors = []

    try:
        blocks = parse_blocks(lines)
        plain_ref, asio_ref = generate_reference(lines, headers, errors)
    except Failure as e:
        print(f"readme_check: {e}", file=sys.stderr)
        return 1

    tus = {17: {"top": [], "body": []}, 20: {"top": [], "body": []}}
    programs = []  # complete examples: (line, std, content)
    counted = {"program": 0, "fragment": 0, "skipped": 0}
    tus[17]["top"].append("namespace pqscope {\n" + "\n".join(plain_ref) + "\n}  // namespace pqscope\n")
    tus[20]["top"].append("namespace pqscope::asio {\n" + "\n".join(asio_ref) + "\n}  // namespace pqscope::asio\n")
    for info, start, content, marker in blocks:
        if info == "" and content and content[0].startswith("error (std::runtime_error)"):
            try:
                tus[17]["top"].append("\n".join(check_errors(start, content, headers)) + "\n")
            except Failure as e:
                errors.append(str(e))
            continue
        if info not in ("cpp", "c++"):
            continue
        if marker and marker.startswith("skip"):
            if not re.match(r"^skip\s*\(.+\)$", marker):
                errors.append(f"README.md:{start - 2}: a skip marker says why: <!-- readme-check: skip (why) -->")
            counted["skipped"] += 1
            continue
        if marker == "signatures":
            try:
                tus[17]["top"].append("namespace pqscope {\n" + "\n".join(generate_signatures(start, content))
                                      + "\n}  // namespace pqscope\n")
            except Failure as e:
                errors.append(str(e))
            continue
        if marker:
            errors.append(f"README.md:{start - 2}: unknown marker `{marker}` (skip (why), signatures)")
            continue
        std = 20 if is_asio(content) else 17
        text = line_directive(start) + "\n".join(content) + "\n"
        if any("int main(" in l for l in content):
            programs.append((start, std, text))
            counted["program"] += 1
        elif DECLARATION.match(first_code_line(content)):
            tus[std]["top"].append(text)
            counted["fragment"] += 1
        else:
            if std == 20:
                tus[std]["body"].append(
                    f"boost::asio::awaitable<void> readme_block_{start}(pqscope::asio::connection& conn) {{\n"
                    f"  (void)conn;\n{text}  co_return;\n}}\n")
            else:
                tus[std]["body"].append(f"void readme_block_{start}(pqscope::connection& conn) {{\n"
                                        f"  (void)conn;\n{text}}}\n")
            counted["fragment"] += 1

    system = ("", "/usr/include", "/usr/local/include")  # -isystem of these breaks #include_next
    boost = [f"-isystem{d}" for d in a.boost_include if d not in system]
    includes = [f"-I{os.path.join(a.root, 'include')}"] + [f"-isystem{d}" for d in a.include if d not in system] + boost
    version = subprocess.run([a.cxx, "--version"], capture_output=True, text=True).stdout
    if "clang" not in version:
        # g++ takes code after `#line ... "README.md"` for a header's and warns about
        # the coroutine frames of the asio example
        includes.append("-Wno-subobject-linkage")
    jobs = []
    prelude17 = ("#include <pqscope/pqscope.hpp>\n\n#include <chrono>\n#include <cstdint>\n#include <string>\n"
                 "#include <string_view>\n#include <type_traits>\n#include <utility>\n\n" + HELPERS + CONTEXT)
    prelude20 = prelude17.replace("#include <pqscope/pqscope.hpp>\n",
                                  "#include <pqscope/pqscope.hpp>\n#include <pqscope/asio.hpp>\n"
                                  "#include <boost/asio/io_context.hpp>\n") + ASIO_HELPERS
    for std, parts in tus.items():
        src = (prelude17 if std == 17 else prelude20) + "\n".join(parts["top"]) + "\nnamespace readme_fragments {\n" \
            + "\n".join(parts["body"]) + "}  // namespace readme_fragments\n"
        path = os.path.join(a.out, f"readme_cxx{std}.cpp")
        open(path, "w").write(src)
        jobs.append((f"{path} (the fragments and reference checks, C++{std})",
                     [a.cxx, f"-std=c++{std}", "-fsyntax-only", "-pedantic-errors"] + includes + [path]))
    commands = check_shell(lines, blocks, a.root, errors)
    # A program the README shows as the verbatim text of a file its compile command
    # compiles is checked by running that command.
    compiled = set()
    for _, argv in commands:
        for w in argv:
            if w.endswith(".cpp") and os.path.exists(os.path.join(a.root, w)):
                compiled.add(open(os.path.join(a.root, w), encoding="utf-8").read())
    for start, std, text in programs:
        if text.split("\n", 1)[1] in compiled:
            continue
        path = os.path.join(a.out, f"readme_program_{start}.cpp")
        open(path, "w").write(text)
        jobs.append((f"README.md:{start} (a complete program, C++{std})",
                     [a.cxx, f"-std=c++{std}", "-fsyntax-only", "-pedantic-errors"] + includes + [path]))

    check_paths(lines, a.root, errors)
    try:
        pginc = subprocess.run(["pg_config", "--includedir"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pginc = a.include[0] if a.include else ""
    for n, argv in commands:
        argv = [w.replace("@PGINC@", pginc) for w in argv]
        # as written (its compiler too), checking only
        jobs.append((f"README.md:{n} (the compile command, from {a.root})", argv + boost))

    def run(job):
        what, argv = job
        p = subprocess.run(argv, cwd=a.root if "compile command" in what else a.out, capture_output=True, text=True)
        return what, argv, p

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for what, argv, p in pool.map(run, jobs):
            if p.returncode != 0:
                errors.append(f"{what} does not compile:\n  {' '.join(argv)}\n{p.stdout}{p.stderr}")
            elif a.verbose:
                print(f"ok: {what}")

    print(f"readme_check: {counted['program']} complete programs, {counted['fragment']} fragments, "
          f"{len(plain_ref) + len(asio_ref)} reference rows, {counted['skipped']} blocks skipped, "
          f"{len(commands)} compile commands run")
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        print(f"readme_check: {len(errors)} problem(s); README.md no longer matches the code", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
