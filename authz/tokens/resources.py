"""Resource indicators (RFC 8707): which values this server binds tokens to."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings


def resource_indicator_error(value: str) -> str | None:
    """Why `value` is no resource indicator this server binds tokens to, or None: RFC 8707 section 2 wants an
    absolute URI without a fragment; this server also wants http(s) with a host, no userinfo, and https except for
    loopback or in DEBUG. Used for every grant of the token endpoint (authz.views.TokenView) and for exchange."""
    try:
        parts = urlsplit(value)
        hostname, _port = parts.hostname, parts.port  # .port raises ValueError for a port out of range
    except ValueError:
        return "Each resource must be an absolute http(s) URI (RFC 8707 section 2)."
    if parts.scheme not in ("https", "http") or not hostname or parts.fragment or parts.username is not None:
        return "Each resource must be an absolute http(s) URI (RFC 8707 section 2)."
    if parts.scheme == "http" and not settings.DEBUG and hostname not in ("localhost", "127.0.0.1", "::1"):
        return "Resources must use https."
    return None
