"""Requests per minute per API key (token buckets), answered with 429 and `Retry-After`."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests per key on average, bursts of up to `burst`; 0 turns it off.

    Keys are held by their hash (the key itself is never kept), at most `max_keys` of them
    (the longest idle is forgotten first: a full bucket costs nothing to recreate).
    """

    def __init__(self, per_minute: float, burst: int | None = None, max_keys: int = 10_000):
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst else max(1, math.ceil(per_minute / 6)))
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str, now: float | None = None) -> float:
        """0 when the request may go now (and it is counted), else seconds until it may."""
        if not self.enabled:
            return 0.0
        bucket = self._refill(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` may go again (0: now), without counting anything."""
        if not self.enabled:
            return 0.0
        name = self._name(key)
        bucket = self._buckets.get(name)
        if bucket is None:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    @staticmethod
    def _name(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def _refill(self, key: str, now: float | None) -> _Bucket:
        now = time.monotonic() if now is None else now
        name = self._name(key)
        bucket = self._buckets.pop(name, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[name] = bucket  # most recently used last
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return bucket
