"""approvals_settings: the human side's APPROVALS settings with defaults, reloaded when tests override them.

The protocol's tunables (request lifetimes, poll interval, request size, callbacks) live in the other app's own
namespace; config/settings.py only maps environment variables onto either."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from approvals.channels.base import Channel

DEFAULTS: dict[str, Any] = {
    "PROMPT_CHANNELS": ["approvals.channels.console.ConsoleChannel"],
    # Wrong user codes for one person, from all clients together, before the code is locked for
    # USER_CODE_LOCKOUT_SECONDS (approvals.attempts): the code is the person's secret, guarded where it is kept.
    "USER_CODE_MAX_FAILURES": 5,
    "USER_CODE_LOCKOUT_SECONDS": 900,
    # How recent a typed password must be for the higher authentication level (approvals.links).
    "FRESH_PASSWORD_SECONDS": 300,
    # Bad prompt links naming one request, in LINK_FAILURE_WINDOW_SECONDS, before that request's link is refused
    # (approvals.attempts); never counted per address, which behind a proxy or a carrier's NAT is many people.
    "LINK_MAX_FAILURES": 20,
    "LINK_FAILURE_WINDOW_SECONDS": 600,
    # Bad prompt links server-wide in the window beyond which further bad ones are answered 429 (good links still work).
    "LINK_GLOBAL_MAX_FAILURES": 1000,
    # Wrong passwords for one person, at sign-in and at the step-up together, before both are locked for
    # PASSWORD_LOCKOUT_SECONDS; and wrong sign-ins from one client address in the same window.
    "PASSWORD_MAX_FAILURES": 5,
    "PASSWORD_LOCKOUT_SECONDS": 900,
    "SIGN_IN_MAX_FAILURES_PER_ADDRESS": 30,
    # A header a trusted reverse proxy sets to the client's address (e.g. X-Forwarded-For); empty: REMOTE_ADDR. With
    # X-Forwarded-For, TRUSTED_PROXY_COUNT says how many proxies append to it, so whatever the client sent is skipped.
    "CLIENT_IP_HEADER": "",
    "TRUSTED_PROXY_COUNT": 1,
    # Whether staff and superuser accounts may be asked by agents. Off: bc-authorize answers unknown_user_id for them,
    # so no agent can send an administrator prompts (approvals.services.approver_may_be_asked).
    "STAFF_APPROVERS": False,
    # Abuse limit: requests one client may send one approver per minute (bc-authorize answers access_denied beyond).
    "PROMPTS_PER_MINUTE": 5,
    # Requests all clients together may send one approver per minute, so that many clients cannot bomb one person.
    "PROMPTS_PER_PERSON_PER_MINUTE": 10,
    # Requests one approver may have pending at once across all clients (bc-authorize answers access_denied beyond):
    # bounds the inbox and what a crowd of clients can leave waiting for one person.
    "MAX_PENDING_PER_PERSON": 50,
    # Transient prompt failures retry with exponential backoff and full jitter, while the request is pending.
    "PROMPT_RETRY_BASE_SECONDS": 1,
    "PROMPT_RETRY_MAX_SECONDS": 60,
    # A worker's hold on prompting one request; a worker that dies releases it by letting it lapse.
    "PROMPT_CLAIM_SECONDS": 30,
    # A request still unprompted this long after its prompt was due is enqueued again by the sweeper.
    "PROMPT_SWEEP_GRACE_SECONDS": 20,
    # Days the audit trail of a finished request is kept: `manage.py purge_audit_events` deletes older ones
    # (approvals.retention). 0 keeps it forever.
    "AUDIT_RETENTION_DAYS": 365,
    # Certification runs (the OpenID conformance suite's automated_ciba_approval_url): empty turns the endpoint off.
    "AUTOMATED_APPROVAL_SECRET": "",
    # With DEBUG off the endpoint is refused by a system check unless this says the operator means it.
    "AUTOMATED_APPROVAL_IN_PRODUCTION": False,
    # Development and tests only: let client-supplied URLs use http to loopback (system check E108 with DEBUG off).
    "OUTBOUND_ALLOW_LOOPBACK_HTTP": False,
    # One deadline for a whole call to a client-supplied URL (approvals.outbound): connect, send and read the answer.
    "OUTBOUND_TIMEOUT_SECONDS": 5,
    # Largest answer read from a client-supplied URL; a larger one fails the call.
    "OUTBOUND_MAX_RESPONSE_BYTES": 65536,
    # Timeout for each call to a provider (Twilio, a push service).
    "PROMPT_TIMEOUT_SECONDS": 5,
    "TWILIO": {
        "ACCOUNT_SID": "",
        "AUTH_TOKEN": "",
        "FROM_NUMBER": "",
        "MESSAGING_SERVICE_SID": "",
        "API_BASE": "https://api.twilio.com",
        "STATUS_CALLBACKS": True,
    },
    "WEBPUSH": {
        "VAPID_PRIVATE_KEY": "",
        "VAPID_PUBLIC_KEY": "",
        "VAPID_SUBJECT": "",
        # Subscriptions are accepted only for these push services (https): a subscription names a URL our workers
        # will POST to, so an approver must not be able to aim them at the private network. A leading dot allows
        # subdomains.
        "ALLOWED_SERVICES": [
            "fcm.googleapis.com",
            "updates.push.services.mozilla.com",
            "web.push.apple.com",
            ".notify.windows.com",
        ],
        # Development and tests only: also accept http://127.0.0.1 endpoints (a local fake push service).
        "ALLOW_LOOPBACK_HTTP": False,
    },
}


class ApprovalsSettings:
    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown APPROVALS setting: {name}")
        if name not in self._cache:
            user = getattr(settings, "APPROVALS", {})
            value = user.get(name, DEFAULTS[name])
            if isinstance(DEFAULTS[name], dict):
                value = {**DEFAULTS[name], **value}  # a partial TWILIO or WEBPUSH dict keeps the other defaults
            self._cache[name] = value
        return self._cache[name]

    def channel_classes(self) -> list[type[Channel]]:
        return [import_string(path) for path in self.PROMPT_CHANNELS]

    def channel_names(self) -> list[str]:
        return [channel_class.name for channel_class in self.channel_classes()]

    def channels_for(self, names: list[str]) -> list[type[Channel]]:
        """The configured channels, in the order a client chose (names), or the server's order when it chose none."""
        configured = {channel_class.name: channel_class for channel_class in self.channel_classes()}
        chosen = [configured[name] for name in names if name in configured]
        # A client whose channels are all gone from the server's configuration (checked only when the client was
        # saved) still gets its people prompted, the server's way.
        return chosen or list(configured.values())

    def reload(self) -> None:
        self._cache.clear()


approvals_settings = ApprovalsSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "APPROVALS":
        approvals_settings.reload()


setting_changed.connect(_reload)
