"""Searching runs: one query language for the sidebar, the REST API, ``celltrain runs`` and
``%train list``, turned into a SQL condition so paging and counting search every run.

A query is words separated by spaces (quote a word that holds spaces); a run matches when it
matches every word:

    birds            the text, any case, in the run's id, experiment, "experiment #number",
                     a param's or tag's name, or a param's or tag's value
    lr=0.01          a param or tag named lr equal to 0.01 (numbers compare as numbers:
                     lr=1e-2 matches too; true/false match booleans; else the text)
    lr!=0.01         ... not equal (or no such param or tag)
    lr<0.1  lr>=3    a param or tag named lr that is a number, compared
"""
from __future__ import annotations

import math
import re
import shlex

MAX_QUERY = 1000
_TERM = re.compile(r"^([^=<>!]+?)\s*(!=|<=|>=|=|<|>)\s*(.*)$", re.S)
# A run's params and tags as (key, value, type) rows: SQLite's json_each over both (for keys
# that no JSON path can name).
_FIELDS = ("(SELECT key, value, type FROM json_each(r.params) "
           "UNION ALL SELECT key, value, type FROM json_each(r.tags))")


class SearchError(ValueError):
    """A query that cannot be read; the message names the word and the fix."""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _comparison(key: str, op: str, raw: str) -> tuple[str, list]:
    """SQL true when the run has a param or tag ``key`` whose value is ``op`` ``raw``: each
    read with json_type/json_extract at the key's path (a key that no JSON path can name, one
    holding a quote or backslash, is looked for among json_each's rows instead)."""
    number = _number(raw)
    if op in ("<", "<=", ">", ">="):
        if number is None:
            raise SearchError(f"{key}{op}{raw}: {op} compares numbers, and {raw!r} is not one "
                              f"(write {key}{op}0.1, or {key}={raw} to match the text)")
        match, values = f"({{v}} {op} ? AND {{t}} IN ('integer', 'real'))", [number]
    elif raw.lower() in ("true", "false"):
        match, values = "({t} = ? OR ({t} = 'text' AND lower({v}) = ?))", [raw.lower()] * 2
    elif number is not None:
        match = "(({v} = ? AND {t} IN ('integer', 'real')) OR ({v} = ? AND {t} = 'text'))"
        values = [number, raw]
    else:
        match, values = "({v} = ? AND {t} = 'text')", [raw]
    if '"' in key or "\\" in key:
        sql, args = _fill(match, "type", "value", None, values)
        sql, args = f"EXISTS (SELECT 1 FROM {_FIELDS} WHERE key = ? AND {sql})", [key, *args]
    else:
        path = f'$."{key}"'
        parts = [_fill(match, f"json_type(r.{c}, ?)", f"json_extract(r.{c}, ?)", path, values)
                 for c in ("params", "tags")]
        sql, args = f"({parts[0][0]} OR {parts[1][0]})", parts[0][1] + parts[1][1]
    return (f"NOT COALESCE({sql}, 0)" if op == "!=" else sql), args


def _fill(template: str, t: str, v: str, path: str | None, values: list) -> tuple[str, list]:
    """``template`` with {t} and {v} replaced by ``t`` and ``v`` (each taking ``path`` as its
    argument when it has a ``?``), and its arguments in order."""
    args, given = [], iter(values)
    for token in re.findall(r"\{t\}|\{v\}|\?", template):
        if token == "?":
            args.append(next(given))
        elif path is not None:
            args.append(path)
    return template.replace("{t}", t).replace("{v}", v), args


def _text(word: str) -> tuple[str, list]:
    """SQL true when ``word`` is in the run's name, id, or a param's or tag's name or value.
    A word of plain ASCII is first looked for in the stored JSON text (where it must then be,
    verbatim), so only the runs holding it are taken apart with json_each."""
    like = _like(word)
    found = ("EXISTS (SELECT 1 FROM json_each(r.{c}) WHERE key LIKE ? ESCAPE '\\' OR "
             "(type NOT IN ('object', 'array') AND CAST(value AS TEXT) LIKE ? ESCAPE '\\'))")
    if word.isascii() and word.isprintable() and '"' not in word and "\\" not in word:
        fields = " OR ".join(f"(r.{c} LIKE ? ESCAPE '\\' AND {found.format(c=c)})"
                             for c in ("params", "tags"))
    else:
        fields = " OR ".join(found.format(c=c) for c in ("params", "tags"))
    sql = ("(r.id LIKE ? ESCAPE '\\' OR e.name LIKE ? ESCAPE '\\' "
           f"OR (e.name || ' #' || r.number) LIKE ? ESCAPE '\\' OR {fields})")
    return sql, [like] * sql.count("?")


def parse(query: str | None) -> list[tuple[str, list]]:
    """The query's words as (SQL condition, its arguments); [] for an empty query."""
    if query is None or not query.strip():
        return []
    if len(query) > MAX_QUERY:
        raise SearchError(f"a search of {len(query)} characters is too long: at most "
                          f"{MAX_QUERY}")
    try:
        words = shlex.split(query)
    except ValueError as e:
        raise SearchError(f"cannot read the search {query!r}: {e} (close the quote)") from None
    out = []
    for word in words:
        term = _TERM.match(word)
        if term and term.group(1).strip():
            out.append(_comparison(term.group(1).strip(), term.group(2), term.group(3).strip()))
        elif word.strip():
            if word[0] in "=<>!":
                raise SearchError(f"{word!r} compares nothing: write NAME{word}, e.g. lr=0.01")
            out.append(_text(word))
    return out


def where(query: str | None) -> tuple[list[str], list]:
    """The query as SQL conditions (to AND together) with their positional arguments."""
    conditions, args = [], []
    for sql, sql_args in parse(query):
        conditions.append(sql)
        args.extend(sql_args)
    return conditions, args
