"""authz_settings: the protocol side's AUTHZ settings with their defaults, reloaded when tests override them.

The human side's tunables (prompts, lockouts, outbound HTTP) are approvals.conf's APPROVALS; config/settings.py only
maps environment variables onto either namespace.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # CIBA Core §7.3 expires_in: a request's lifetime without requested_expiry, and the cap on requested_expiry.
    "DEFAULT_EXPIRY_SECONDS": 300,
    "MAX_EXPIRY_SECONDS": 3600,
    # CIBA Core §7.3 interval: the seconds an agent waits between polls (slow_down below it, §11).
    "POLL_INTERVAL_SECONDS": 5,
    # CIBA Core §7.1: user_code is only used when both the OP and the client enable it.
    "USER_CODE_SUPPORTED": True,
    # The largest form body at bc-authorize (413 beyond) and the largest registration request.
    "MAX_REQUEST_BYTES": 64 * 1024,
    # Ping/push callbacks retry (backoff with jitter) until this long after the outcome, then are kept as undeliverable.
    "NOTIFICATION_DEADLINE_SECONDS": 600,
    "NOTIFICATION_RETRY_BASE_SECONDS": 1,
    "NOTIFICATION_RETRY_MAX_SECONDS": 60,
}


class AuthzSettings:
    # The settings' types, for the type checker; the values come from __getattr__ (annotations make no attributes).
    DEFAULT_EXPIRY_SECONDS: int
    MAX_EXPIRY_SECONDS: int
    POLL_INTERVAL_SECONDS: int
    USER_CODE_SUPPORTED: bool
    MAX_REQUEST_BYTES: int
    NOTIFICATION_DEADLINE_SECONDS: int
    NOTIFICATION_RETRY_BASE_SECONDS: int
    NOTIFICATION_RETRY_MAX_SECONDS: int

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown AUTHZ setting: {name}")
        if name not in self._cache:
            self._cache[name] = getattr(settings, "AUTHZ", {}).get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


authz_settings = AuthzSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "AUTHZ":
        authz_settings.reload()


setting_changed.connect(_reload)
