"""Who a request acts for, and what it may see: the one type every feature filters by (no
HTTP here, so that services take it as a parameter)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: its tenant's id, whether it holds the admin scope, and what it
    may see. `collections`/`adapters` None: everything (the environment-variable keys, and
    authentication off); otherwise only the names listed. Set on `request.state.principal` by
    `require_chat` / `require_admin`; read with `serving.auth.principal(request)`."""

    tenant: str
    admin: bool = False
    collections: frozenset[str] | None = None
    adapters: frozenset[str] | None = None
    default_collection: str | None = None
    """The collection searched when a request names none; None: the server's
    (RAGTUNE_COLLECTION). A stored key's is the first of its collections."""

    def sees_collection(self, name: str) -> bool:
        return self.collections is None or name in self.collections

    def sees_adapter(self, name: str) -> bool:
        return self.adapters is None or name in self.adapters


OPERATOR = Principal(tenant="operator", admin=True)
"""The principal of the environment-variable admin keys and of an unauthenticated server: sees
and may do everything."""

SHARED_CHAT = Principal(tenant="shared")
"""The principal of the environment-variable chat keys (RAGTUNE_API_KEYS): a single-user setup,
sees every collection and adapter, but holds no admin scope."""
