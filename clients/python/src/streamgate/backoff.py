"""``Backoff``: the capped exponential backoff every reconnecting stream uses."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import grpc

#: Codes that end a long-lived stream for a reason that a retry can fix: the
#: gateway shut down or is unreachable (UNAVAILABLE), or its Redis timed out
#: (DEADLINE_EXCEEDED: the streams themselves never carry a client deadline).
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter, in seconds.

    Jitter spreads the reconnects of many consumers after a gateway restart
    so that they do not all arrive in the same instant.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delays(self) -> Iterator[float]:
        """The successive waits: initial, initial*multiplier, ... up to maximum."""
        delay = self.initial
        while True:
            yield delay * (1 - self.jitter * random.random())
            delay = min(delay * self.multiplier, self.maximum)
