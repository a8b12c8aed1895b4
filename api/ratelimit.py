"""A per-client token bucket for expensive endpoints (image generation).

In memory, per worker process: `xmodal-serve --workers N` lets a client through up to N
times the rate, which is what a per-process budget of compute means anyway.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from api.problems import ApiError

MAX_CLIENTS = 10_000  # buckets kept; the least recently seen are forgotten (= full again)


class RateLimiter:
    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = max(1.0, per_minute)  # a burst of up to a minute's worth
        self.refill_per_s = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one token of `client`'s bucket, or raise a 429 saying when to retry."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_s)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        if not allowed:
            wait = math.ceil((1.0 - tokens) / self.refill_per_s)
            raise ApiError(429, "rate-limited", f"too many generation requests; retry in "
                           f"{wait} s", {"Retry-After": str(wait)})
