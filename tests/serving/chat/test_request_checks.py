"""Fast checks of the request-side rules, without a server: the answer bound, values no engine
can take, filters, keys however the header is spelled, the rate limiter's buckets, and how an
engine's refusal and the server's own failures read to a client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ragtune.retrieval.errors import (
    CollectionNotFoundError,
    InvalidFilterError,
    StoreUnavailableError,
)
from ragtune.retrieval.filters import SearchFilter
from ragtune.serving.auth import bearer_token, check_key
from ragtune.serving.chat.protocol import ChatCompletionRequest, SearchScope
from ragtune.serving.engine.client import _error_from_body
from ragtune.serving.errors import (
    AdapterSlotsBusyError,
    AuthError,
    EngineNotRunningError,
    EngineRequestError,
    EngineTimeoutError,
    InvalidRequestError,
    ModelNotFoundError,
)
from ragtune.serving.http_errors import response_for
from ragtune.serving.ratelimit import RateLimiter
from ragtune.serving.settings import ApiSettings


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def parsed(raw: str) -> ChatCompletionRequest:
    """A body as the server parses it (Python's json accepts NaN and lone surrogates)."""
    return ChatCompletionRequest.model_validate(json.loads(raw))


@pytest.mark.parametrize(
    ("fields", "bound"),
    [
        ({}, None),
        ({"max_tokens": 8}, 8),
        ({"max_completion_tokens": 60}, 60),
        ({"max_tokens": 12, "max_completion_tokens": 12}, 12),
    ],
)
def test_the_answer_bound_is_one_number(fields: dict[str, Any], bound: int | None) -> None:
    assert request(**fields).answer_bound() == bound


def test_two_different_bounds_are_refused() -> None:
    # The engine honours max_completion_tokens: a cap checked on max_tokens would not hold.
    with pytest.raises(InvalidRequestError, match="differ") as caught:
        request(max_tokens=8, max_completion_tokens=60).answer_bound()
    assert caught.value.param == "max_completion_tokens"


def test_a_boolean_is_not_a_token_count() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        request(max_tokens=True)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
         "messages.0.content"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "\\udfff"}',
         "stop"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
         '"stop": ["a", "\\ud83d"]}', "stop.1"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": {"y": "\\ud800"}}',
         "x.y"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": NaN}', "top_k"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
         '"repetition_penalty": Infinity}', "repetition_penalty"),
        ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
         '"logit_bias": {"50": -Infinity}}', "logit_bias.50"),
    ],
)  # fmt: skip
def test_values_no_engine_can_take_are_named(raw: str, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parsed(raw).check_values()
    assert caught.value.param == param


def test_ordinary_values_pass() -> None:
    request(stop=["\n\n"], logit_bias={"50": -100}, top_k=5, temperature=0.5).check_values()
    request(messages=[{"role": "user", "content": "emoji \U0001f600 ok"}]).check_values()


@pytest.mark.parametrize(
    "filters",
    [
        {"$or": "x"},
        {"$and": "y"},
        {"a=b": "c"},
        {"": "x"},
        {"team name": "x"},
        {"source\n": "[" * 16_000},  # read as `source`, past the bound on its length
        {"source": ""},
        {"team": "  "},
        {f"k{i}": "v" for i in range(2000)},
    ],
)
def test_filters_are_metadata_names_only(filters: dict[str, str]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        request(ragtune={"filters": filters}).check_values()
    assert caught.value.param == "ragtune.filters"


def test_ordinary_filters_pass() -> None:
    request(ragtune={"filters": {"source": "faq/*.md", "team": "a=b"}}).check_values()


def test_the_search_filter_refuses_store_operators_itself() -> None:
    with pytest.raises(InvalidFilterError):
        SearchFilter.from_mapping({"$or": "x"})
    with pytest.raises(InvalidFilterError):
        SearchFilter.from_mapping({"a=b": "c"})
    assert SearchFilter.from_mapping({"team": "a=b"}).meta == (("team", "a=b"),)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"collection": ""}, "ragtune.collection"),
        ({"collection": " "}, "ragtune.collection"),
        ({"collections": ["", "default"]}, "ragtune.collections"),
        ({"collections": ["handbook", "\n"]}, "ragtune.collections"),
    ],
)
def test_an_empty_collection_is_no_name_for_the_default(
    options: dict[str, Any], param: str
) -> None:
    options_given = request(ragtune=options).ragtune
    assert options_given is not None
    with pytest.raises(InvalidRequestError) as caught:
        options_given.searched()
    assert caught.value.param == param
    with pytest.raises(InvalidRequestError) as caught:
        request(ragtune=options, tools=[{"type": "file_search", "vector_store_ids": ["default"]}])
    assert caught.value.param == param


def test_a_file_search_tool_becomes_the_search_it_asks_for() -> None:
    holidays = {"type": "eq", "key": "section", "value": "Holidays"}
    tool = {"type": "file_search", "vector_store_ids": ["handbook"], "filters": holidays}
    asked = request(tools=[tool], tool_choice="required")
    assert (asked.tools, asked.tool_choice, asked.engine_tools()) == (None, None, None)
    assert asked.ragtune is not None
    assert (asked.ragtune.collection, asked.ragtune.route) == ("handbook", "rag")
    assert asked.ragtune.filters == {"section": "Holidays"}
    function = {"type": "function", "function": {"name": "lookup"}}
    chosen = request(tools=[tool, function], tool_choice={"type": "file_search"})
    assert chosen.tool_choice == "none"  # the tool forced is the search, done
    with pytest.raises(InvalidRequestError) as caught:
        request(tools=[{**tool, "vector_store_ids": [""]}])
    assert caught.value.param == "tools[0].vector_store_ids"
    with pytest.raises(InvalidRequestError) as caught:
        request(tools=[function, {**tool, "max_num_results": 51}])
    assert caught.value.param == "tools[1].max_num_results"
    bounded = {**tool, "max_num_results": 3, "ranking_options": {"score_threshold": 0.4}}
    assert request(tools=[bounded]).search_scope == SearchScope({"section": "Holidays"}, 3, 0.4)
    assert request().search_scope == SearchScope()
    for other in ({**tool, "filters": None}, bounded):
        with pytest.raises(InvalidRequestError) as caught:
            request(tools=[tool, other])
        assert caught.value.param == "tools[1]"


@pytest.mark.parametrize(
    "header", ["Bearer k1", "bearer k1", "BEARER k1", "Bearer   k1  ", "  bEaReR k1"]
)
def test_every_spelling_of_the_header_matches_the_same_key(header: str) -> None:
    assert bearer_token(header) == "k1"
    assert check_key(ApiSettings(api_keys="k1,k2"), header, "chat") == "k1"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic k1", "Token k1", "k1"])
def test_headers_without_a_bearer_key(header: str | None) -> None:
    assert bearer_token(header) is None
    with pytest.raises(AuthError, match="missing"):
        check_key(ApiSettings(api_keys="k1"), header, "chat")


def test_waiting_does_not_count_and_buckets_refill() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.wait("a", now=0.0) == 0.0  # unknown key: free, nothing counted
    assert limiter.check("a", now=0.0) == 0.0
    assert limiter.check("a", now=0.0) == 0.0
    assert limiter.wait("a", now=0.0) == pytest.approx(1.0)
    assert limiter.wait("a", now=0.0) == pytest.approx(1.0)  # asking twice costs nothing
    assert limiter.check("a", now=0.0) > 0
    assert limiter.wait("a", now=1.0) == 0.0
    assert limiter.wait("b", now=0.0) == 0.0  # another key has its own bucket


def test_an_engine_refusal_reads_as_the_field_and_the_reason() -> None:
    dump = (
        "1 validation error:\n  {'type': 'int_parsing', 'loc': 'body.top_k', 'msg': 'Input "
        "should be a valid integer, unable to parse string as an integer', 'input': 'abc'}"
    )
    body = {"error": {"message": dump, "type": "Bad Request", "param": "body.top_k"}}
    error = _error_from_body(400, body, "m")
    assert isinstance(error, EngineRequestError)
    assert error.param == "top_k"
    assert (
        str(error) == "top_k: Input should be a valid integer, unable to parse string as an integer"
    )
    response = json.loads(bytes(response_for(error).body))
    assert response["error"]["param"] == "top_k"
    assert "validation error" not in response["error"]["message"]


@pytest.mark.parametrize(
    ("error", "hidden"),
    [
        (EngineNotRunningError("the engine at http://10.0.0.7:8011 is not running"), "10.0.0.7"),
        (EngineTimeoutError("the engine at http://10.0.0.7:8011 did not answer"), "10.0.0.7"),
        (AdapterSlotsBusyError("all 2 LoRA slots hold (secret-a@v1, secret-b@v3)"), "secret"),
        (StoreUnavailableError("the Chroma server at http://chroma:8000 does not answer"),
         "chroma:8000"),
        (CollectionNotFoundError("collection 'x' does not exist in /srv/data/chroma", "x"),
         "/srv"),
        (ModelNotFoundError("no model named " + "y" * 100_000, model="y" * 100_000), "y" * 100),
    ],
)  # fmt: skip
def test_clients_see_no_server_internals(error: Exception, hidden: str) -> None:
    response = response_for(error)
    message = json.loads(bytes(response.body))["error"]["message"]
    assert hidden not in message
    assert len(message) < 300
