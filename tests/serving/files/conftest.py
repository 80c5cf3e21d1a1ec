"""What the tests of documents over HTTP share: the app over a real embedded Chroma, the fake
embedder and a fake engine, with the `openai` client and one vector store created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from ragtune.serving.app import create_app
from tests.support.documents import STORE, fake_parts, openai_client, serving_settings


@pytest.fixture
def with_store(tmp_path: Path) -> Iterator[tuple[OpenAI, TestClient]]:
    """The `openai` client (a chat key) and the app's TestClient; the store STORE exists."""
    app = create_app(serving_settings(tmp_path / "data"), open_parts=fake_parts)
    with TestClient(app) as test_client:
        client = openai_client(test_client)
        client.vector_stores.create(name=STORE)
        yield client, test_client
