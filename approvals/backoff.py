"""Retry delays for prompts and client notifications."""

from __future__ import annotations

import random


def full_jitter(attempt: int, *, base: float, maximum: float) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): a random
    delay up to base * 2^(attempt-1), capped at maximum, and never below half the base."""
    ceiling = min(maximum, base * 2 ** max(attempt - 1, 0))
    return random.uniform(base / 2, max(ceiling, base / 2))  # noqa: S311 (jitter, not a secret)
