"""The stored API keys of tenants: created, listed and revoked by operators (admin API and
`ragtune keys`), looked up by the authenticator on every request. No HTTP here.

Only a SHA-256 digest of each key is kept (the key is 256 random bits, so a plain digest is
as safe as a slow one and costs microseconds per request), in one JSON file under the data
directory, replaced whole on every change. A key created or revoked by another process (the
`ragtune keys` command) takes effect within RECHECK_S: the file is looked at (one stat) at most
that often, on the request path, and read again only when it changed. A change made through
this store (the admin API) takes effect at the next request.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragtune.retrieval.settings import check_collection_name
from ragtune.serving.errors import InvalidRequestError, KeyNotFoundError, KeyStoreError, shorten
from ragtune.serving.tenants.principal import Principal

logger = logging.getLogger("ragtune.tenants")

KEY_PREFIX = "rt_"
FORMAT_VERSION = 1
MAX_NAMES = 100
"""Collections, or adapters, one key may list."""
RECHECK_S = 1.0
"""Seconds between two looks at the keys file for another process's changes: the delay before
a key that `ragtune keys` creates or revokes is seen by a running server, and what keeps the
requests' lookups free of file-system calls between two looks."""
_KEY = re.compile(r"^rt_(?P<id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
_ADAPTER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # as the adapter registry names them
_LABEL = re.compile(r"^[^\x00-\x1f\x7f]{0,100}$")


def keys_path(data_dir: Path) -> Path:
    """Where the stored keys live."""
    return data_dir / "tenants" / "api-keys.json"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    """One tenant's key as stored: everything but the key itself."""

    id: str
    """The key's id (also its tenant's id): public, shown in lists, used to revoke."""
    name: str
    """The operator's label ("" when none was given)."""
    collections: tuple[str, ...]
    """What the key may search, in the order given: the first is searched when a request names
    no collection."""
    adapters: tuple[str, ...]
    """The adapters it may use (none: the base model and the documents only)."""
    created: str
    sha256: str
    """The key's digest, compared in constant time."""

    def principal(self) -> Principal:
        """Who a request with this key acts for: its own tenant, chat scope, its names only."""
        return Principal(
            tenant=self.id,
            admin=False,
            collections=frozenset(self.collections),
            adapters=frozenset(self.adapters),
            default_collection=self.collections[0],
        )


@dataclass(frozen=True)
class CreatedKey:
    """A key just created: `key` is the secret itself, shown to the operator this once."""

    key: str
    stored: StoredKey


class KeyStore:
    """The tenants' API keys in `path` (a JSON file written atomically; a lock file keeps two
    processes' changes apart).

    Usage:
        store = KeyStore(keys_path(data_dir))
        created = store.create(["handbook"], adapters=["titler"], name="team a")
        created.key                       # give this to the tenant; it is never shown again
        store.find(token)                 # StoredKey, or None: not one of ours
        store.list(); store.revoke(created.stored.id)
    """

    def __init__(
        self,
        path: Path,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self.clock = clock
        self._seen: tuple[int, int, int] | None = None
        """(inode, size, mtime) of the file when it was last read; None: not read yet."""
        self._checked: float | None = None
        """When (`clock`) the file was last looked at; None: look at the next lookup."""
        self._keys: dict[str, StoredKey] = {}
        self._lock = threading.Lock()
        """One reader at a time (the API reads from the event loop and from worker threads)."""

    # -- reading ---------------------------------------------------------------------------
    def list(self) -> list[StoredKey]:
        """Every stored key, oldest first. KeyStoreError when the file is damaged."""
        return list(self._current().values())

    def find(self, token: str) -> StoredKey | None:
        """The stored key `token` is, or None. A token not shaped like a stored key is None at
        once (the environment-variable keys are checked elsewhere), without reading the file.
        KeyStoreError when the file is damaged: stored keys then admit nobody."""
        match = _KEY.match(token)
        if match is None:
            return None
        stored = self._current().get(match["id"])
        # Compare even for an unknown id, so timing does not tell ids that exist.
        expected = stored.sha256 if stored is not None else "0" * 64
        same = hmac.compare_digest(_digest(token), expected)
        return stored if same and stored is not None else None

    def _current(self) -> dict[str, StoredKey]:
        """The keys as the file held them at most `recheck_s` ago. Requests look keys up on the
        event loop: between two looks at the file a lookup costs no file-system call; a look is
        one stat, and a read only when the file changed. An error (a damaged or unreadable
        file) is never remembered: the next lookup looks again."""
        with self._lock:
            now = self.clock()
            if self._checked is not None and now - self._checked < self.recheck_s:
                return self._keys
            keys = self._current_locked()
            self._checked = now
            return keys

    def _current_locked(self) -> dict[str, StoredKey]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._keys = None, {}
            return self._keys
        except OSError as exc:
            raise KeyStoreError(f"cannot read the API keys in {self.path}: {exc}") from exc
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            self._keys = self._read()
            self._seen = seen
        return self._keys

    def _forget(self) -> None:
        """Read the file afresh at the next lookup."""
        with self._lock:
            self._seen = self._checked = None

    def _read(self) -> dict[str, StoredKey]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            keys = {}
            for raw in data["keys"]:
                stored = StoredKey(
                    id=str(raw["id"]),
                    name=str(raw["name"]),
                    collections=tuple(str(c) for c in raw["collections"]),
                    adapters=tuple(str(a) for a in raw["adapters"]),
                    created=str(raw["created"]),
                    sha256=str(raw["sha256"]),
                )
                if not stored.collections or len(stored.sha256) != 64:
                    raise ValueError(f"key {stored.id!r} is incomplete")
                keys[stored.id] = stored
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyStoreError(
                f"the API keys file {self.path} is damaged ({exc}); restore it from a backup, "
                "or move it away and create the keys again (`ragtune keys create`)"
            ) from exc
        return keys

    # -- changing --------------------------------------------------------------------------
    def create(
        self, collections: Sequence[str], adapters: Sequence[str] = (), name: str = ""
    ) -> CreatedKey:
        """A new key for a tenant that sees `collections` (at least one; the first is its
        default) and `adapters` (may be none). The names need not exist yet."""
        collections = _checked(collections, "collections", _collection_problem)
        adapters = _checked(adapters, "adapters", _adapter_problem)
        if not collections:
            raise InvalidRequestError(
                "a key needs at least one collection: the documents it may search",
                param="collections",
            )
        if not _LABEL.match(name):
            raise InvalidRequestError(
                "name: at most 100 characters, no control characters", param="name"
            )
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        stored = StoredKey(
            id=key_id,
            name=name,
            collections=tuple(collections),
            adapters=tuple(adapters),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            sha256=_digest(key),
        )
        with self._changing() as keys:
            keys[key_id] = stored
        logger.info("API key %s created (%d collection(s))", key_id, len(collections))
        return CreatedKey(key, stored)

    def revoke(self, key_id: str) -> StoredKey:
        """Delete the key: from the next request on (in every process reading this file), it
        admits nobody. KeyNotFoundError when no key has that id."""
        with self._changing() as keys:
            stored = keys.pop(key_id, None)
            if stored is None:
                raise KeyNotFoundError(
                    f"no API key has the id {shorten(key_id)!r}: `ragtune keys list` shows them"
                )
        logger.info("API key %s revoked", key_id)
        return stored

    @contextmanager
    def _changing(self) -> Iterator[dict[str, StoredKey]]:
        """The keys, to change in place, under the lock; written back (atomically) when the
        block ends without an error. A damaged file is never overwritten: KeyStoreError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = self.path.with_name(self.path.name + ".lock").open("a")
        except OSError as exc:
            raise KeyStoreError(f"cannot write the API keys in {self.path}: {exc}") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._forget()  # read under the lock: another process may have just written
            try:
                keys = dict(self._current())
                yield keys
                self._write(keys)
            finally:
                self._forget()  # this process's own change counts from its next request

    def _write(self, keys: dict[str, StoredKey]) -> None:
        data: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "keys": [asdict(k) | {"collections": list(k.collections),
                                  "adapters": list(k.adapters)} for k in keys.values()],
        }  # fmt: skip
        # mkstemp makes the file readable by its owner only; os.replace swaps it in whole, so
        # a reader sees the old keys or the new ones, never half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".api-keys-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise KeyStoreError(f"cannot write the API keys in {self.path}: {exc}") from exc


def _collection_problem(name: str) -> str | None:
    try:
        check_collection_name(name)
    except ValueError as exc:
        return str(exc)
    return None


def _adapter_problem(name: str) -> str | None:
    if _ADAPTER.match(name):
        return None
    return (
        f"invalid adapter name {shorten(name)!r}: use 1-63 lowercase letters, digits, '.', '_' "
        "or '-', starting with a letter or digit"
    )


def _checked(names: Sequence[str], param: str, problem: Callable[[str], str | None]) -> list[str]:
    """`names` stripped, without blanks and repeats, in their order; InvalidRequestError
    (naming `param`) for a name no collection or adapter may have, or too many."""
    unique = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if len(unique) > MAX_NAMES:
        raise InvalidRequestError(f"{param}: at most {MAX_NAMES} names", param=param)
    for name in unique:
        found = problem(name)
        if found is not None:
            raise InvalidRequestError(f"{param}: {found}", param=param)
    return unique
