"""Metadata filters for search, applied alike to the dense and the lexical retriever.

- `source=PATTERN`: a path prefix (`docs/faq`) or a glob (`docs/*.md`); relative patterns match
  at any folder boundary, absolute ones from the root. A path matches itself even when it holds
  glob characters (`a [v2].md`). A filter from an API request (`from_mapping`) matches the
  document's name as answers show it (`display_source`: its path below the folder ingested, or
  an upload's file name), never the server's path: a client could otherwise find the server's
  folders one glob at a time.
- `section=PATH`: a section and everything below it (`Installing` matches
  `Installing > Offline`), case-insensitive; globs allowed.
- `KEY=VALUE`: a pair given at ingest with `--meta`.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.errors import InvalidFilterError
from ragtune.retrieval.store import STORE_KEY_PREFIXES, display_source

_GLOB = set("*?[")
SECTION_SEPARATOR = " > "
MAX_API_PATTERN = 512
"""The longest `source` or `section` pattern an API request may give: translating a glob
takes time quadratic in its length (`fnmatch` looks for each `[`'s closing `]`), so 16,000
characters of `[` took 15 s of a server's CPU, per request; and matching a long one against
every row's value took 10 s over 20,000 rows before each distinct value was matched once."""


def _has_glob(pattern: str) -> bool:
    return bool(_GLOB & set(pattern))


@dataclass(frozen=True)
class SearchFilter:
    source: str | None = None
    section: str | None = None
    meta: tuple[tuple[str, str], ...] = field(default=())
    source_as_shown: bool = False
    """Whether `source` matches the document's name as answers show it rather than its path."""

    @classmethod
    def parse(cls, pairs: Iterable[str], source_as_shown: bool = False) -> SearchFilter:
        source = section = None
        meta: list[tuple[str, str]] = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise InvalidFilterError(
                    f"--filter expects key=value (source=PATTERN, section=PATH or a --meta "
                    f"pair), got {pair!r}"
                )
            if key == "source":
                source = value
            elif key == "section":
                section = value
            elif key.startswith(STORE_KEY_PREFIXES):
                # The store would read it as an operator (`$or`, `$and`...) or one of its own
                # keys (`#document`, `chroma:document`: the chunk's text), not a key.
                raise InvalidFilterError(
                    f"filter key {key[:64]!r} is not a metadata name (keys cannot start with "
                    f"{', '.join(STORE_KEY_PREFIXES)})"
                )
            else:
                meta.append((key, value))
        return cls(source, section, tuple(meta), source_as_shown)

    @classmethod
    def from_mapping(cls, data: Mapping[str, str]) -> SearchFilter:
        """An API request's filters: `source` matches what answers show, not server paths."""
        for key, value in data.items():
            if "=" in key:
                raise InvalidFilterError(f"filter key {key[:64]!r} contains '='")
            if not str(value).strip():
                raise InvalidFilterError(
                    f"filter {key[:64]!r} has an empty value: give the value to match, or leave "
                    "the key out"
                )
            if key.strip() in ("source", "section") and len(str(value)) > MAX_API_PATTERN:
                raise InvalidFilterError(
                    f"filter {key!r} is {len(str(value))} characters long; a pattern may have "
                    f"at most {MAX_API_PATTERN} (match a long name by its end: '*/tail')"
                )
        return cls.parse((f"{k}={v}" for k, v in data.items()), source_as_shown=True)

    def is_empty(self) -> bool:
        return self.source is None and self.section is None and not self.meta

    def matches(self, row: Mapping[str, Any]) -> bool:
        if self.source is not None and not source_matches(self._source_of(row), self.source):
            return False
        if self.section is not None and not section_matches(
            str(row.get("section", "")), self.section
        ):
            return False
        return all(str(row.get(key)) == value for key, value in self.meta)

    def mask(self, rows: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.bool_]:
        return np.fromiter((self.matches(r) for r in rows), dtype=bool, count=len(rows))

    def chroma_where(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The same filter as a Chroma `where`; path and section patterns become `$in` lists of
        the values that match among `rows` (Chroma has no prefix or glob operators).

        Returns None when nothing can match.
        """
        clauses: list[dict[str, Any]] = []
        for key, pattern, read, test in (
            ("source", self.source, self._source_of, source_matches),
            ("section", self.section, lambda r: str(r.get("section", "")), section_matches),
        ):
            if pattern is None:
                continue
            # The stored values of the rows that match (for `source`, the paths of the
            # documents whose shown names match, when the filter reads those).
            values = sorted({str(r.get(key, "")) for r in rows if test(read(r), pattern)})
            if not values:
                return None
            clauses.append({key: {"$in": values}})
        for key, value in self.meta:
            # Values are stored as given (strings); equality on the string form.
            clauses.append({key: value})
        if not clauses:
            return {}
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def _source_of(self, row: Mapping[str, Any]) -> str:
        return display_source(row) if self.source_as_shown else str(row.get("source", ""))


# A filter is tested against every row of a collection, and rows share a few documents and
# sections: each (value, pattern) is matched once, and each pattern read into a regular
# expression once.
_MATCHES_KEPT = 1 << 16


@lru_cache(maxsize=_MATCHES_KEPT)
def source_matches(source: str, pattern: str) -> bool:
    return _source_regex(pattern).match(source) is not None


@lru_cache(maxsize=256)
def _source_regex(pattern: str) -> re.Pattern[str]:
    # A path is matched as written first: a file named `my file [v2].md` (as `docs list` prints
    # it) matches itself, its brackets read literally; glob characters apply besides.
    literal = glob.escape(pattern)
    candidates = [literal, literal.rstrip("/") + "/*"]
    if _has_glob(pattern):
        candidates.append(pattern)
    if not pattern.startswith("/"):
        candidates = [c for p in candidates for c in (p, "*/" + p)]
    return re.compile("|".join(f"(?:{fnmatch.translate(c)})" for c in candidates))


@lru_cache(maxsize=_MATCHES_KEPT)
def section_matches(section: str, pattern: str) -> bool:
    section, pattern = section.casefold(), pattern.casefold().strip()
    if _has_glob(pattern):
        return fnmatchcase(section, pattern)
    return section == pattern or section.startswith(pattern + SECTION_SEPARATOR.casefold())
