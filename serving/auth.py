"""API keys as Bearer tokens, in two scopes: chat, and admin (operator endpoints); who each
key acts for (its `Principal`: the environment-variable keys see everything, a tenant's stored
key its own collections and adapters); the rate limit per key, and the throttle on failed
authentications per client address."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Literal

from fastapi import Request

from ragtune.serving.errors import AuthError, ForbiddenError, RateLimitedError
from ragtune.serving.ratelimit import RateLimiter
from ragtune.serving.settings import ApiSettings
from ragtune.serving.tenants.principal import OPERATOR, SHARED_CHAT, Principal
from ragtune.serving.tenants.service import KeyStore

__all__ = [
    "OPERATOR",
    "Authenticator",
    "Principal",
    "Scope",
    "authenticator",
    "bearer_token",
    "check_key",
    "principal",
    "require_admin",
    "require_chat",
]

Scope = Literal["chat", "admin"]


def _matches(token: str, keys: list[str]) -> bool:
    # Compare with every key, in constant time each, so timing says nothing about which matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, however the scheme is spelled and
    spaced; None when there is none."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def check_key(settings: ApiSettings, authorization: str | None, scope: Scope) -> str | None:
    """The matched key (None when authentication is off); AuthError or ForbiddenError."""
    if settings.allow_unauthenticated:
        return None
    token = bearer_token(authorization)
    if token is None:
        raise AuthError("missing API key: send the header `Authorization: Bearer <key>`")
    admin = _matches(token, settings.keys("admin"))
    if scope == "admin":
        if admin:
            return token
        if _matches(token, settings.keys("chat")):
            raise ForbiddenError("this API key may chat but not use operator endpoints")
        raise AuthError("invalid API key")
    if not (admin or _matches(token, settings.keys("chat"))):
        raise AuthError("invalid API key")
    return token


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Authenticator:
    """Who may call what: the API keys of each scope, the rate limit per key, and the throttle
    on failed authentications per client address. One per app, built by `create_app`.

    Usage (as FastAPI dependencies): `Depends(require_chat)`, `Depends(require_admin)`."""

    def __init__(
        self,
        settings: ApiSettings,
        on_refused: Callable[[], None],
        keys: KeyStore | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        """The tenants' stored keys (None: the environment-variable keys only)."""
        self.on_refused = on_refused
        """Called for each request refused with 429 (the metrics count them)."""
        self.rate_limiter = RateLimiter(settings.rate_limit, settings.rate_limit_burst or None)
        self.failures = RateLimiter(
            settings.auth_failure_limit, settings.auth_failure_burst or None
        )

    @property
    def open(self) -> bool:
        """Authentication is off (RAGTUNE_ALLOW_UNAUTHENTICATED)."""
        return self.settings.allow_unauthenticated

    def authenticate(self, request: Request, scope: Scope) -> tuple[Principal, str | None]:
        """Check the request's key for `scope`: who it acts for, and what its rate limit is
        counted on (None: the client's address). Keys that match none are counted per client
        address: past the allowance, the address gets 429 before its key is even looked at, so
        guessing keys gains nothing. (A missing key or a chat key on an operator endpoint
        guesses nothing and is not counted.)"""
        address = self._unthrottled(request)
        authorization = request.headers.get("authorization")
        try:
            return self._identify(authorization, scope)
        except AuthError:
            if bearer_token(authorization) is not None:
                self.failures.check(address)  # a key that matched none: counted
            raise

    def _unthrottled(self, request: Request) -> str:
        """The client's address as the failed-authentication throttle counts it; 429 when the
        address is past its allowance (before its key is even looked at)."""
        address = f"address:{_client_address(request)}"
        wait = self.failures.wait(address)
        if wait > 0:
            self.on_refused()
            raise RateLimitedError(
                f"too many failed authentications from this address; retry in {wait:.0f} s",
                wait,
            )
        return address

    def _identify(self, authorization: str | None, scope: Scope) -> tuple[Principal, str | None]:
        """Who the key acts for, and what its rate limit counts on: a tenant's stored key (chat
        scope only) by its id, an environment-variable key by itself."""
        if self.open:
            return OPERATOR, None
        token = bearer_token(authorization)
        stored = self.keys.find(token) if token is not None and self.keys is not None else None
        if stored is not None:
            if scope == "admin":
                raise ForbiddenError("this API key may chat but not use operator endpoints")
            return stored.principal(), f"tenant:{stored.id}"
        key = check_key(self.settings, authorization, scope)
        admin = key is not None and _matches(key, self.settings.keys("admin"))
        return (OPERATOR if admin else SHARED_CHAT), f"key:{key}" if key else None

    def admit_chat(self, request: Request) -> Principal:
        """Authenticate for chat, then apply the rate limit, keyed on the key that matched
        (however the header was spelled), or on the client's address when authentication is
        off. Who the request acts for is returned."""
        found, counted_on = self.authenticate(request, "chat")
        if not self.rate_limiter.enabled:
            return found
        wait = self.rate_limiter.check(counted_on or f"address:{_client_address(request)}")
        if wait > 0:
            self.on_refused()
            raise RateLimitedError(
                f"rate limit of {self.settings.rate_limit:g} requests per minute for this API "
                f"key reached; retry in {wait:.1f} s",
                wait,
            )
        return found

    def admit_console(self, request: Request, key: str) -> Principal:
        """The operator console's login: `key`, sent in its form body (never a header or URL),
        must be an admin key. Throttled and counted per client address exactly as a wrong
        Bearer key is, so the form is no way around the throttle."""
        address = self._unthrottled(request)
        if not key.strip():
            raise AuthError("enter an admin API key")
        try:
            found, _ = self._identify(f"Bearer {key.strip()}", "admin")
        except AuthError:
            self.failures.check(address)
            raise
        return found


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def require_chat(request: Request) -> None:
    request.state.principal = authenticator(request).admit_chat(request)


async def require_admin(request: Request) -> None:
    request.state.principal, _ = authenticator(request).authenticate(request, "admin")


def principal(request: Request) -> Principal:
    """The principal `require_chat`/`require_admin` admitted this request as. A route without
    either dependency has none: that is a bug, refused rather than served as the operator."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        raise RuntimeError(
            "principal() on a route that neither require_chat nor require_admin admits"
        )
    return found
