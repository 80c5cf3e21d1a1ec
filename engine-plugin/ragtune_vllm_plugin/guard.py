"""ASGI middleware for ragtune's engine: the API key on every route but /health.

vLLM's own key check (--api-key, VLLM_API_KEY) covers only paths under /v1, /v2, /inference and
/cohere: /invocations runs chat completions without it (vllm-project/vllm#58144), and /tokenize,
/pooling, /score, /metrics, /load... answer anyone. ragtune starts its engine with
`--middleware ragtune_vllm_plugin.guard.RequireApiKey`, which asks for the same key (read from
VLLM_API_KEY) everywhere, so an engine on loopback answers only whoever holds the key. /health
stays open: it says only that the engine is up, and probes ask it without a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})
_REFUSAL = json.dumps(
    {
        "error": {
            "message": "this engine requires its API key as a Bearer token",
            "type": "Unauthorized",
            "param": None,
            "code": 401,
        }
    }
).encode()


class RequireApiKey:
    """Refuse (401) every HTTP request and WebSocket without `Authorization: Bearer <key>`,
    except on OPEN_PATHS. Without a key in VLLM_API_KEY it lets everything through, as vLLM
    does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        self._digest = hashlib.sha256(key.encode()).digest() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._digest is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path in OPEN_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})

    def _authorized(self, scope: Scope) -> bool:
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, token = bytes(values[0]).partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        digest = hashlib.sha256(token.strip()).digest()
        return hmac.compare_digest(digest, self._digest or b"")
