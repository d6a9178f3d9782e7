"""Template helpers for the approver's pages."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django import template
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from .. import selectors

register = template.Library()

_SCALARS = (str, int, float, bool)


@register.filter
def website_host(url: str) -> str:
    """`https://www.example.com/about` → `www.example.com`: the part of a website a person can check."""
    if not url:
        return ""
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    return host or url


@register.filter
def scope_text(scopes: list[str]) -> list[str]:
    """The plain-language descriptions of these scopes."""
    return [description for _scope, description in selectors.scope_descriptions(list(scopes))]


@register.filter
def asked_ago(created_at: Any) -> str:
    """Shows "Asked just now" for the first minute (timesince would say "0 minutes"), then "Asked 3 minutes ago"."""
    if created_at is None:
        return ""
    if (timezone.now() - created_at).total_seconds() < 60:
        return _("Asked just now")
    return _("Asked %(when)s ago") % {"when": timesince(created_at)}


def _label(key: Any) -> str:
    text = str(key).replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else str(key)


def _value(value: Any) -> tuple[str, bool]:
    """The value as text, and whether it is structured (shown preformatted)."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return (_("yes") if value else _("no")), False
    if isinstance(value, _SCALARS):
        return str(value), False
    if isinstance(value, list) and all(isinstance(item, _SCALARS) for item in value):
        return ", ".join(str(item) for item in value), False
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True), True


@register.filter
def detail_rows(detail: Any) -> list[dict[str, Any]]:
    """One RFC 9396 authorization_details entry as label/value rows (everything except `type`, the heading).

    Read through dict methods here rather than in the template, where a key such as `items` would hide the method.
    """
    if not isinstance(detail, dict):
        text, structured = _value(detail)
        return [{"label": "", "value": text, "structured": structured}]
    rows = []
    for key, value in detail.items():
        if key == "type":
            continue
        text, structured = _value(value)
        rows.append({"label": _label(key), "value": text, "structured": structured})
    return rows


@register.filter
def detail_type(detail: Any) -> str:
    if isinstance(detail, dict) and isinstance(detail.get("type"), str):
        return _label(detail["type"])
    return ""
