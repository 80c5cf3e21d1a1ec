"""The one async, pooled HTTP client ragtune uses to talk to the engine (vLLM's OpenAI API).

Retries happen only where they are safe: when the connection was refused or timed out before
anything was sent. Everything the engine says back is mapped to ragtune's own exceptions, with
messages a user can act on.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self

import httpx

from ragtune.serving.engine.launcher import auth_headers, engine_api_key
from ragtune.serving.errors import (
    AdapterLoadError,
    ContextLengthError,
    EngineError,
    EngineModelMissingError,
    EngineNotRunningError,
    EngineRequestError,
    EngineSaturatedError,
    EngineTimeoutError,
    GenerationTimeoutError,
)
from ragtune.serving.settings import EngineSettings

_LIMIT = re.compile(r"maximum (?:context|model) length (?:is|of) (\d+)")
_REQUESTED = re.compile(r"(?:value=|requested |contains at least |length )(\d+)")
# One `'msg': '...'` (or "...") of the engine's rendering of pydantic errors.
_PYDANTIC_MSG = re.compile(r"""'msg': (?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")""")
_CONTEXT_HINTS = ("maximum context length", "maximum model length", "context length")
# vLLM's gauge of requests queued for room in the running batch (one line per model/engine).
_WAITING = re.compile(r"^vllm:num_requests_waiting(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)
IDLE_CONNECTION_S = 2.0
"""How long an idle pooled connection is reused. It must stay below the time after which the
engine closes an idle connection (uvicorn's 5 s by default, VLLM_HTTP_TIMEOUT_KEEP_ALIVE;
ragtune starts its engine with ENGINE_KEEP_ALIVE_S): at equal times the engine's close and the
next request cross on the wire, and that request fails with a bare read error."""


class EngineClient:
    """Chat completions (whole or streamed), the model list and runtime adapter loading."""

    def __init__(
        self,
        base_url: str,
        *,
        request_timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        connect_retries: int = 3,
        max_connections: int = 256,
        api_key: str | None = None,
        idle_connection_s: float = IDLE_CONNECTION_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_retries = connect_retries
        self.request_timeout_s = request_timeout_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            # On every call, adapter loading included: the engine refuses requests without it.
            headers=auth_headers(api_key),
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=idle_connection_s,
            ),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: EngineSettings, url: str | None = None) -> EngineClient:
        return cls(
            url or settings.engine_url,
            request_timeout_s=settings.request_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            connect_retries=settings.connect_retries,
            api_key=engine_api_key(settings),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- API -------------------------------------------------------------------------------
    async def health(self) -> bool:
        """True when the engine answers /health; never raises for a down engine."""
        try:
            response = await self._http.get("/health", timeout=self._http.timeout.connect)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def list_models(self) -> list[dict[str, Any]]:
        """The engine's models: the base model, then adapters (those with a `parent`)."""
        response = await self._send("GET", "/v1/models")
        data = response.json().get("data", [])
        return [entry for entry in data if isinstance(entry, dict)]

    async def chat_completion(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One chat completion, whole. `request` is an OpenAI chat completion body."""
        body = {**request, "stream": False}
        body.pop("stream_options", None)
        try:
            response = await self._send("POST", "/v1/chat/completions", json=body)
        except EngineTimeoutError as exc:
            # A whole answer shows nothing of its progress before it ends.
            raise await self._timed_out(body, tokens=None) from exc
        result: dict[str, Any] = response.json()
        return result

    async def stream_chat_completion(
        self, request: Mapping[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """One chat completion as the engine streams it: each SSE chunk, parsed. The whole
        stream takes at most `request_timeout_s` (checked as chunks arrive; a stalled one is
        ended by the read timeout)."""
        body = {**request, "stream": True}
        deadline = time.monotonic() + self.request_timeout_s
        produced = 0  # chunks carrying answer text or tool calls: about one token each
        try:
            async with self._stream("POST", "/v1/chat/completions", json=body) as response:
                try:
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            return
                        chunk = json.loads(payload)
                        if isinstance(chunk, dict) and "error" in chunk:
                            raise _error_from_body(500, chunk, body.get("model"))
                        produced += _answer_chunk(chunk)
                        if time.monotonic() > deadline:
                            raise _timeout(self.base_url)
                        yield chunk
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    raise EngineError(
                        f"the engine at {self.base_url} closed the stream before it ended "
                        f"({exc}); check that it is still running (`ragtune engine status`)"
                    ) from exc
                except httpx.TimeoutException as exc:
                    raise _timeout(self.base_url) from exc
        except EngineTimeoutError as exc:
            raise await self._timed_out(body, tokens=produced) from exc
        raise EngineError(f"the engine at {self.base_url} ended the stream without [DONE]")

    async def waiting_requests(self) -> int | None:
        """Requests the engine holds waiting for room in its running batch (vLLM's
        `vllm:num_requests_waiting` on /metrics); None when it cannot be read."""
        try:
            response = await self._http.get("/metrics", timeout=self._http.timeout.connect)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        values = [float(value) for value in _WAITING.findall(response.text)]
        finite = [value for value in values if math.isfinite(value)]
        return int(sum(finite)) if finite else None

    async def _timed_out(self, body: Mapping[str, Any], tokens: int | None) -> EngineTimeoutError:
        """What a generation that reached the time limit was: the engine saturated (requests
        waiting for room when it fired) or an answer longer than the limit allows."""
        limit = f"{self.request_timeout_s:g} s (RAGTUNE_REQUEST_TIMEOUT_S)"
        waiting = await self.waiting_requests()
        if waiting:
            return EngineSaturatedError(
                f"the engine is saturated: {waiting} request(s) were waiting for room in it "
                f"when this one reached the time limit of {limit}; try again later "
                "(operators: add engine replicas or lower RAGTUNE_DEFAULT_MAX_TOKENS)",
                waiting=waiting,
            )
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        bound = max_tokens if isinstance(max_tokens, int) else None
        if tokens is None:
            progress = "a whole answer's progress is not known before it ends (stream it to see)"
        else:
            progress = f"about {tokens} token(s) had been generated"
        asked = f"max_tokens was {bound}" if bound else "no max_tokens was in force"
        return GenerationTimeoutError(
            f"the answer was still being generated when it reached the time limit of {limit} "
            f"and was stopped: {progress}, and {asked}. Ask for fewer tokens (max_tokens), or "
            "raise RAGTUNE_REQUEST_TIMEOUT_S on the server",
            limit_s=self.request_timeout_s,
            max_tokens=bound,
            tokens=tokens,
        )

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter from a directory the engine can read, served as model `name`."""
        await self._send(
            "POST",
            "/v1/load_lora_adapter",
            json={"lora_name": name, "lora_path": path},
            adapter_op=f"load adapter {name!r} from {path}",
        )

    async def unload_adapter(self, name: str) -> None:
        await self._send(
            "POST",
            "/v1/unload_lora_adapter",
            json={"lora_name": name},
            adapter_op=f"unload adapter {name!r}",
        )

    # -- transport -------------------------------------------------------------------------
    async def _open(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        """Send, retrying only while the connection is refused: nothing reached the engine, so
        sending again cannot do anything twice."""
        for attempt in range(self.connect_retries + 1):
            try:
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.connect_retries:
                    raise _not_running(self.base_url) from exc
                await asyncio.sleep(0.2 * 2**attempt)
            except httpx.TimeoutException as exc:
                raise _timeout(self.base_url) from exc
            except httpx.HTTPError as exc:
                raise EngineError(
                    f"the request to the engine at {self.base_url} failed: {exc}"
                ) from exc
            else:
                if response.status_code == 401:
                    # ragtune's configuration, not the client's request: an operator's error.
                    await response.aclose()
                    raise _key_refused(self.base_url)
                return response
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, path: str, *, json: Any = None, adapter_op: str | None = None
    ) -> httpx.Response:
        response = await self._open(self._http.build_request(method, path, json=json), stream=False)
        if response.status_code >= 400:
            body = _json_or_text(response)
            model = json.get("model") if isinstance(json, dict) else None
            if adapter_op is not None:
                raise _adapter_error(adapter_op, response.status_code, body)
            raise _error_from_body(response.status_code, body, model)
        return response

    @asynccontextmanager
    async def _stream(self, method: str, path: str, *, json: Any) -> AsyncIterator[httpx.Response]:
        response = await self._open(self._http.build_request(method, path, json=json), stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _error_from_body(
                    response.status_code, _json_or_text(response), json.get("model")
                )
            yield response
        finally:
            await response.aclose()


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _message(body: Any) -> str:
    """The engine's error message, from vLLM's envelope (new or old) or plain text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return str(body)[:500] or "no details"


def _error_from_body(status: int, body: Any, model: Any) -> Exception:
    message = _message(body)
    lowered = message.lower()
    if status == 404 or "does not exist" in lowered:
        # Names reach the engine only after ragtune checked them: a missing one is ragtune's
        # (a lost adapter, a misnamed base model), never the client's.
        return EngineModelMissingError(
            f"the engine serves no model named {model!r} ({message}); its `GET /v1/models` "
            "lists the base model and the adapters loaded",
            model=str(model) if model is not None else None,
        )
    if status == 400 and any(hint in lowered for hint in _CONTEXT_HINTS):
        limit = _LIMIT.search(message)
        requested = _REQUESTED.search(message)
        return ContextLengthError(
            f"the prompt does not fit the model's context: {message}",
            limit=int(limit.group(1)) if limit else None,
            requested=int(requested.group(1)) if requested else None,
        )
    if 400 <= status < 500:
        param = _param(body)
        return EngineRequestError(_readable(message, param), status, param)
    return EngineError(f"the engine failed ({status}): {message}")


def _param(body: Any) -> str | None:
    """The request field the engine named, as the client spelled it (`top_k`, not vLLM's
    `body.top_k`)."""
    error = body.get("error") if isinstance(body, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    if not isinstance(param, str) or not param:
        return None
    return param.removeprefix("body.")


def _readable(message: str, param: str | None) -> str:
    """A refusal as a client can act on it: `field: what is wrong`, not the engine's dump of
    pydantic errors (types, locations, the input echoed)."""
    reasons = _PYDANTIC_MSG.findall(message)
    if reasons:
        text = "; ".join(a or b for a, b in reasons[:3])
        return f"{param}: {text}" if param else text
    return message[:500]


def _adapter_error(operation: str, status: int, body: Any) -> Exception:
    message = _message(body)
    if status == 404 and "not found" in message.lower() and "lora" not in message.lower():
        # vLLM only has these routes when started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.
        return AdapterLoadError(
            f"cannot {operation}: the engine does not allow loading adapters at run time; "
            "start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora",
            status,
        )
    if status >= 500:
        return EngineError(f"cannot {operation}: the engine failed ({status}): {message}")
    return AdapterLoadError(f"cannot {operation}: {message}", status)


def _key_refused(url: str) -> EngineError:
    return EngineError(
        f"the engine at {url} refused ragtune's API key (401): set RAGTUNE_ENGINE_API_KEY to "
        "the key it was started with (its --api-key or VLLM_API_KEY)"
    )


def _not_running(url: str) -> EngineNotRunningError:
    return EngineNotRunningError(
        f"the engine at {url} is not running: start it with `ragtune engine start` "
        "(or set RAGTUNE_VLLM_URL to a running vLLM)"
    )


def _answer_chunk(chunk: Any) -> int:
    """1 when a streamed chunk carries answer text or tool-call arguments, else 0."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return 1
    return 0


def _timeout(url: str) -> EngineTimeoutError:
    return EngineTimeoutError(
        f"the engine at {url} did not answer within RAGTUNE_REQUEST_TIMEOUT_S"
    )
