"""Per-enterprise rate limit: a token bucket of items, refilled continuously."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """`rate` items/s per enterprise, at most `rate * burst_s` at once."""

    rate: float
    burst_s: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # enterprise → (tokens, at)

    def take(self, key: str, n: int, now: float) -> float:
        """Take n items' worth; 0.0 if allowed, else the seconds to wait before trying again."""
        cap = self.rate * self.burst_s
        tokens, at = self._buckets.get(key, (cap, now))
        tokens = min(cap, tokens + (now - at) * self.rate)
        # A request larger than the whole bucket passes on a full one (and leaves a debt).
        need = min(n, cap)
        if need > tokens:
            self._buckets[key] = (tokens, now)
            return (need - tokens) / self.rate
        self._buckets[key] = (tokens - n, now)
        return 0.0
