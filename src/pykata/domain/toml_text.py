"""TOML as text: render a document, find a file's top-level statements, add a top-level key
or an array entry to a file without rewriting the rest of it.

Pure: strings in, strings out. The scanner is small because it only ever reads text that
tomllib has already accepted, and callers parse what they get back before using it: a
mistake here can make an edit be refused, never let a broken file through.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def quote(text: str) -> str:
    """A TOML basic string. Control characters (and DEL) are escaped, the rest kept as is."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else quote(name)


def value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _is_table_array(v: object) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def render(table: Mapping[str, Any], path: Sequence[str] = (), item: bool = False) -> str:
    """`table` as the TOML table at `path` (an element of an array of tables with `item`):
    its own keys under a header, written when it has keys of its own or none at all (so an
    empty table survives), then its sub-tables and arrays of tables, headers spelled out.
    At the root (no path) its keys come first, under no header."""
    header = ".".join(key(p) for p in path)
    plain = "".join(f"{key(k)} = {value(v)}\n" for k, v in table.items()
                    if not isinstance(v, Mapping) and not _is_table_array(v))
    out = ""
    if item:
        out = f"[[{header}]]\n{plain}"
    elif not path:
        out = plain
    elif plain or not table:
        out = f"[{header}]\n{plain}"
    for k, v in table.items():
        if isinstance(v, Mapping):
            out += ("\n" if out else "") + render(v, (*path, k))
    for k, v in table.items():
        if _is_table_array(v):
            for x in v:
                out += ("\n" if out else "") + render(x, (*path, k), item=True)
    return out


# -- reading a file's layout -----------------------------------------------------------------

@dataclass(frozen=True)
class Statement:
    """One top-level line or statement: `kind` is blank, comment, table or keyval; `key` the
    key of a keyval (quotes of a simple quoted key removed); `start`/`end` offsets, `end`
    just past its last newline."""

    kind: str
    start: int
    end: int
    key: str = ""


def _string_end(text: str, i: int) -> int:
    """The offset just past the string that opens at `i`."""
    q = text[i]
    if text.startswith(q * 3, i):
        j = i + 3
        while j < len(text):
            if q == '"' and text[j] == "\\":
                j += 2
            elif text.startswith(q * 3, j):
                end = j + 3
                while end < min(j + 5, len(text)) and text[end] == q:
                    end += 1  # """a"""" ends with a quote inside the string
                return end
            else:
                j += 1
        return len(text)
    j = i + 1
    while j < len(text) and text[j] != q:
        j += 2 if q == '"' and text[j] == "\\" else 1
    return j + 1


def _tokens(text: str, i: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each character outside comments, a whole string counting as one."""
    while i < len(text):
        ch = text[i]
        if ch == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
        elif ch in "\"'":
            end = _string_end(text, i)
            yield i, end
            i = end
        else:
            yield i, i + 1
            i += 1


def _statement_end(text: str, i: int) -> int:
    depth = 0
    for start, _ in _tokens(text, i):
        ch = text[start]
        depth += (ch in "[{") - (ch in "]}")
        if ch == "\n" and depth == 0:
            return start + 1
    return len(text)


def _key_of(text: str, start: int, end: int) -> str:
    for pos, _ in _tokens(text[:end], start):
        if text[pos] == "=":
            raw = text[start:pos].strip()
            quoted = len(raw) > 1 and raw[0] == raw[-1] and raw[0] in "\"'"
            return raw[1:-1] if quoted else raw
    return ""


def statements(text: str) -> list[Statement]:
    """The file's top-level statements, in order (a table's keyvals count as top-level too;
    callers look only at what comes before the first table)."""
    out: list[Statement] = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        if j == len(text) or text[j] in "\r\n":
            nl = text.find("\n", j)
            end = len(text) if nl < 0 else nl + 1
            out.append(Statement("blank", i, end))
        elif text[j] == "#":
            nl = text.find("\n", j)
            end = len(text) if nl < 0 else nl + 1
            out.append(Statement("comment", i, end))
        elif text[j] == "[":
            out.append(Statement("table", i, _statement_end(text, j)))
        else:
            end = _statement_end(text, j)
            out.append(Statement("keyval", i, end, _key_of(text, j, end)))
        i = out[-1].end
    return out


def top_level(text: str) -> list[Statement]:
    """The statements before the first table header."""
    out = []
    for st in statements(text):
        if st.kind == "table":
            break
        out.append(st)
    return out


def insert_top_level(text: str, line: str) -> str:
    """`text` with `line` (`key = value` lines) added after the last top-level keyval, or
    before everything when there is none: a top-level key must come before any table."""
    keyvals = [st for st in top_level(text) if st.kind == "keyval"]
    at = keyvals[-1].end if keyvals else 0
    before = text[:at]
    newline = "\r\n" if before.endswith("\r\n") else "\n"
    if before and not before.endswith("\n"):
        before += newline
    return before + line + newline + text[at:]


def append_to_array(text: str, st: Statement, item: str) -> str:
    """`text` with the TOML value `item` appended to the array that keyval `st` assigns,
    after its last entry (comments and layout inside the array are kept)."""
    toks = list(_tokens(text[:st.end], st.start))
    opening = next((pos for pos, _ in toks if text[pos] == "["), None)
    if opening is None:
        raise ValueError("no array")
    depth, last = 0, opening + 1
    for pos, stop in toks:
        if pos < opening:
            continue
        ch = text[pos]
        depth += (ch in "[{") - (ch in "]}")
        if depth == 0:
            sep = "" if text[last - 1] in "[," else ","
            sep += "" if text[last - 1] == "[" else " "
            return text[:last] + sep + item + text[last:]
        if not ch.isspace():
            last = stop
    raise ValueError("no closing bracket")
