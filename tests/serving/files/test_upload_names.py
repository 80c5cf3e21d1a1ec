"""Uploads with long names: the type is read from the whole name, and the name kept (at most
MAX_FILENAME characters) loses the end of its stem, never its type's suffix. A real embedded
Chroma, the fake embedder, an engine behind `httpx.MockTransport`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, OpenAI

from ragtune.serving.files.catalog import MAX_FILENAME, display_name, stored_name
from tests.support.documents import GUIDE, STORE


@pytest.mark.parametrize("suffix", [".md", ".MD", ".rst.txt", ".markdown"])
def test_a_long_name_is_accepted_and_kept_with_its_type(
    with_store: tuple[OpenAI, TestClient], tmp_path: Path, suffix: str
) -> None:
    client, _ = with_store
    name = "a" * 253 + suffix
    done = client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=(name, GUIDE))
    assert done.status == "completed"
    kept = client.files.retrieve(done.id).filename
    assert kept.endswith(suffix)
    assert len(kept) == MAX_FILENAME
    assert kept.startswith("a" * 200)
    stored = [p.name for p in (tmp_path / "data" / "files").rglob(f"*{suffix.lower()}")]
    assert len(stored) == 1


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("a" * 253 + ".xlsx", "'.xlsx'"),
        ("a" * 300, "'(no extension)'"),
        ("a." + "b" * 400, "'." + "b" * 31 + "...'"),
    ],
)
def test_a_long_name_of_another_type_is_refused_naming_its_extension(
    with_store: tuple[OpenAI, TestClient], name: str, named: str
) -> None:
    client, _ = with_store
    with pytest.raises(BadRequestError) as refused:
        client.files.create(file=(name, GUIDE), purpose="assistants")
    assert refused.value.param == "file"
    assert f"unsupported file type {named}:" in refused.value.message


def test_a_suffix_too_long_to_leave_a_stem_is_cut_like_the_rest() -> None:
    huge = "." + "b" * 400
    assert display_name("a" + huge, huge) == ("a" + huge)[:MAX_FILENAME]
    assert display_name("short.md", ".md") == "short.md"
    assert display_name("\x00\n", ".md") == "upload"
    assert stored_name("x" * 300 + ".rst.txt", ".rst.txt") == "x" * 100 + ".rst.txt"
