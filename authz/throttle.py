"""Poll pacing for the CIBA token endpoint (CIBA Core §11 slow_down), kept in the cache (Redis in production) so
that a pending poll writes nothing to the database."""

from __future__ import annotations

from django.core.cache import cache

SLOW_DOWN_STEP = 5  # RFC 8628 §3.5, which CIBA Core §11 refers to: the client adds 5 s per slow_down.


def poll_permitted(*, approval_request_id: str, interval: int, lifetime: int) -> tuple[bool, int]:
    """Record a poll. Returns (permitted, the interval now in force for this request).

    The first poll is always permitted: the clock starts at a poll, not at the acknowledgement, so a client that
    polls straight away is not punished (Abblix/Oidc.Server#281).
    """
    gate_key = f"ciba:poll:{approval_request_id}"
    interval_key = f"ciba:interval:{approval_request_id}"
    current = cache.get(interval_key) or interval
    if cache.add(gate_key, 1, timeout=current):
        return True, current
    current += SLOW_DOWN_STEP
    cache.set(interval_key, current, timeout=max(lifetime, 1))
    # Restart the clock: the client must now wait the longer interval from this poll.
    cache.set(gate_key, 1, timeout=current)
    return False, current
