"""Token buckets per caller: a steady rate with a burst allowance, and how long to wait when it is spent."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class RateLimiter:
    """``per_second`` requests a second per key on average, up to ``burst`` at once; ``per_second=0`` is no limit.

    Kept in this process's memory: each API process limits on its own (a deployment of N API processes allows N
    times the rate). The number of keys held is bounded; the least recently seen are forgotten first, which can only
    ever let a forgotten caller start again with a full bucket.
    """

    def __init__(self, per_second: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def wait_needed(self, key: str, *, now: float | None = None) -> float:
        """0 if ``key`` may go ahead now (and its token is taken), else the seconds until it may."""
        if self.per_second <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self.per_second
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
