"""Filters by source, section and --meta pairs, the same for both retrievers."""

from __future__ import annotations

import pytest

from ragtune.retrieval.errors import InvalidFilterError
from ragtune.retrieval.filters import (
    MAX_API_PATTERN,
    SearchFilter,
    section_matches,
    source_matches,
)

ROWS = [
    {"source": "/docs/faq/general.rst", "section": "General Information", "team": "core"},
    {"source": "/docs/faq/library.rst", "section": "Threads > Locks", "team": "core"},
    {"source": "/docs/tutorial/io.rst", "section": "Reading and Writing Files", "team": "edu"},
    {"source": "/other/faq.md", "section": "Threads", "team": "edu"},
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("faq", [0, 1]),  # a folder at any depth, not the file /other/faq.md
        ("faq/", [0, 1]),
        ("/docs/faq", [0, 1]),
        ("/faq", []),  # absolute: from the root only
        ("faq/*.rst", [0, 1]),
        ("*.md", [3]),
        ("tutorial/io.rst", [2]),
        ("faq.md", [3]),
    ],
)
def test_source_prefix_and_glob(pattern: str, expected: list[int]) -> None:
    assert [n for n, r in enumerate(ROWS) if source_matches(r["source"], pattern)] == expected


def test_a_path_with_glob_characters_matches_itself() -> None:
    # As `docs list` prints it: the brackets are part of the name, not a character class.
    path = "/docs/my file [v2].md"
    assert source_matches(path, path)
    assert source_matches(path, "my file [v2].md")
    assert source_matches("/docs [old]/a.md", "docs [old]/")
    assert not source_matches("/docs/my file x.md", path)
    assert source_matches("/docs/my file v.md", path)  # still a glob too
    assert SearchFilter.parse([f"source={path}"]).chroma_where([{"source": path}]) == {
        "source": {"$in": [path]}
    }


def test_section_matches_the_section_and_below() -> None:
    assert section_matches("Threads > Locks", "threads")
    assert section_matches("Threads", "Threads")
    assert not section_matches("Threadsafe", "Threads")
    assert section_matches("Reading and Writing Files", "reading*")


def test_parse_and_match() -> None:
    f = SearchFilter.parse(["source=faq", "team=core", "section=Threads"])
    assert f == SearchFilter("faq", "Threads", (("team", "core"),))
    assert [n for n, r in enumerate(ROWS) if f.matches(r)] == [1]
    assert f.mask(ROWS).tolist() == [False, True, False, False]
    with pytest.raises(InvalidFilterError, match="key=value"):
        SearchFilter.parse(["source"])
    for key in ("$or", "#document", "chroma:document"):  # the store's operators and own keys
        with pytest.raises(InvalidFilterError, match="is not a metadata name"):
            SearchFilter.parse([f"{key}=x"])


def test_chroma_where_selects_the_same_rows() -> None:
    f = SearchFilter.parse(["source=faq", "team=core"])
    assert f.chroma_where(ROWS) == {
        "$and": [
            {"source": {"$in": ["/docs/faq/general.rst", "/docs/faq/library.rst"]}},
            {"team": "core"},
        ]
    }
    assert SearchFilter.parse(["source=nowhere"]).chroma_where(ROWS) is None
    assert SearchFilter().chroma_where(ROWS) == {}


def test_a_filter_from_the_api_matches_the_names_answers_show_not_server_paths() -> None:
    """A client sees a document's path below the folder ingested (or an upload's file name);
    matching the server's paths would let it find the server's folders one glob at a time."""
    rows = [
        {"source": "/srv/data/files/file-1/refunds.md", "display_source": "refunds.md"},
        {"source": "/srv/docs/faq/general.rst", "display_source": "docs/faq/general.rst"},
        {"source": "/srv/old/notes.md"},  # ingested before display names were stored
    ]
    for pattern, expected in [
        ("/srv*", []),
        ("/srv/data/files/file-1/refunds.md", []),
        ("file-1", []),
        ("refunds.md", [0]),
        ("faq/", [1]),
        ("docs/faq/*.rst", [1]),
        ("*.md", [0, 2]),
    ]:
        shown = SearchFilter.from_mapping({"source": pattern})
        assert [n for n, r in enumerate(rows) if shown.matches(r)] == expected, pattern
        where = shown.chroma_where(rows)
        paths = [rows[n]["source"] for n in expected]
        assert where == ({"source": {"$in": sorted(paths)}} if paths else None), pattern
    assert SearchFilter.parse(["source=/srv/data"]).matches(rows[0])  # the CLI's: paths


def test_a_filter_from_the_api_with_an_empty_value_says_so() -> None:
    for value in ("", "  "):
        with pytest.raises(InvalidFilterError, match="'team' has an empty value"):
            SearchFilter.from_mapping({"team": value})


def test_a_pattern_from_the_api_is_bounded() -> None:
    """Reading a glob takes time quadratic in its length: 16,000 `[` took 15 s of CPU."""
    for key in ("source", "section"):
        SearchFilter.from_mapping({key: "[" * MAX_API_PATTERN})
        for spelled in (key, f"{key}\n", f" {key}"):  # each read as `key`
            with pytest.raises(InvalidFilterError, match=f"at most {MAX_API_PATTERN}"):
                SearchFilter.from_mapping({spelled: "[" * 16_000})
    SearchFilter.from_mapping({"team": "x" * 16_000})  # a value compared whole, not a pattern
    SearchFilter.parse([f"source={'[' * 600}"])  # the CLI's own: the user's machine
