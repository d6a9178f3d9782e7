"""approvals_settings: Countersign's APPROVALS settings with defaults, reloaded when tests override them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    "PROMPT_CHANNELS": ["approvals.channels.console.ConsoleChannel"],
    "DEFAULT_EXPIRY_SECONDS": 300,
    "MAX_EXPIRY_SECONDS": 3600,
    "POLL_INTERVAL_SECONDS": 5,
    # CIBA Core §7.1: user_code is only used when both the OP and the client enable it.
    "USER_CODE_SUPPORTED": True,
    "USER_CODE_MAX_FAILURES": 5,
    "USER_CODE_LOCKOUT_SECONDS": 900,
    "MAX_REQUEST_BYTES": 64 * 1024,
}


class ApprovalsSettings:
    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown APPROVALS setting: {name}")
        if name not in self._cache:
            user = getattr(settings, "APPROVALS", {})
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def channel_classes(self) -> list[type]:
        return [import_string(path) for path in self.PROMPT_CHANNELS]

    def reload(self) -> None:
        self._cache.clear()


approvals_settings = ApprovalsSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "APPROVALS":
        approvals_settings.reload()


setting_changed.connect(_reload)
