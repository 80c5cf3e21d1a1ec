"""Real clients against `ragtune serve` running as its own process: the official `openai`
package and LangChain's ChatOpenAI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI
from openai import APIStatusError, OpenAI

from ragtune.serving.engine.models import DEFAULT_MODEL_NAME
from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env, copy_of

pytestmark = pytest.mark.engine
KEY = "client-key"
QUESTION = "How do I read a file line by line in Python?"


@pytest.fixture(scope="module")
def server(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """`ragtune serve` attached to the session's engine, on the ingested small corpus."""
    data_dir = copy_of(ingested[0], tmp_path_factory, "serve")
    with ragtune_serve(
        data_dir,
        free_port(),
        **attach_env(engine, models_dir),
        RAGTUNE_API_KEYS=KEY,
    ) as url:
        yield url


def test_openai_client_whole_streamed_and_models(server: str) -> None:
    client = OpenAI(base_url=f"{server}/v1", api_key=KEY)
    completion = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
    )
    answer = completion.choices[0].message.content
    assert answer
    extension = (completion.model_extra or {})["ragtune"]
    assert extension["route"] == "rag"
    assert extension["sources"]

    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert (chunks[0].model_extra or {})["ragtune"]["route"] == "rag"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer

    models = {m.id: m for m in client.models.list()}
    assert DEFAULT_MODEL_NAME in models


def test_openai_client_sees_errors_as_openai_errors(server: str) -> None:
    client = OpenAI(base_url=f"{server}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(APIStatusError) as caught:
        client.chat.completions.create(
            model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert "invalid API key" in json.dumps(caught.value.body)


def test_langchain_chat_openai_invoke_and_stream(server: str) -> None:
    llm = ChatOpenAI(
        base_url=f"{server}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        model=DEFAULT_MODEL_NAME,
        temperature=0,
        max_tokens=24,  # type: ignore[call-arg]
    )
    message = llm.invoke(QUESTION)
    assert isinstance(message.content, str)
    assert message.content
    streamed = "".join(str(chunk.content) for chunk in llm.stream(QUESTION))
    assert streamed == message.content
