"""API keys as Bearer tokens, in two scopes: chat, and admin (operator endpoints)."""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import Request

from serving.errors import AuthError, ForbiddenError, RateLimitedError
from serving.ratelimit import RateLimiter
from serving.settings import ApiSettings

Scope = Literal["chat", "admin"]


def _matches(token: str, keys: list[str]) -> bool:
    # Compare with every key, in constant time each, so timing says nothing about which matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def check_key(settings: ApiSettings, authorization: str | None, scope: Scope) -> None:
    if settings.allow_unauthenticated:
        return
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing API key: send the header `Authorization: Bearer <key>`")
    admin = _matches(token, settings.keys("admin"))
    if scope == "admin":
        if admin:
            return
        if _matches(token, settings.keys("chat")):
            raise ForbiddenError("this API key may chat but not use operator endpoints")
        raise AuthError("invalid API key")
    if not (admin or _matches(token, settings.keys("chat"))):
        raise AuthError("invalid API key")


async def require_chat(request: Request) -> None:
    settings: ApiSettings = request.app.state.settings.api
    authorization = request.headers.get("authorization")
    check_key(settings, authorization, "chat")
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.enabled:
        client = request.client.host if request.client else "unknown"
        wait = limiter.check(authorization or f"address:{client}")
        if wait > 0:
            request.app.state.metrics.rate_limited.inc()
            raise RateLimitedError(
                f"rate limit of {settings.rate_limit:g} requests per minute for this API key "
                f"reached; retry in {wait:.1f} s",
                wait,
            )


async def require_admin(request: Request) -> None:
    check_key(request.app.state.settings.api, request.headers.get("authorization"), "admin")
