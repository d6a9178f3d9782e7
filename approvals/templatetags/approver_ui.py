"""Template helpers for the approver's pages."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django import template
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from approvals import agents, display, selectors, text

logger = logging.getLogger(__name__)

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
    """The value as HTML, and whether it is structured (shown preformatted). What the agent wrote is shown as
    delimited data (approvals.display); only "yes", "no" and the dash are the page's own words."""
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return (_("yes") if value else _("no")), False
    if isinstance(value, _SCALARS):
        return display.shown(str(value)), False
    if isinstance(value, list) and all(isinstance(item, _SCALARS) for item in value):
        return format_html_join(", ", "{}", ((display.DataText(item),) for item in value)), False
    return display.shown(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)), True


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


@register.filter
def iso_datetime(value: Any) -> str:
    return text.readable_iso_datetime(value)


@dataclass(frozen=True)
class DisplayedDetail:
    """One authorization_details object as the approval page shows it: its type's heading, and its type's display
    template rendered (`html`), or "" for the generic rows."""

    detail: Any
    heading: str
    html: SafeString | str = ""


def displayed_details(details: list[Any]) -> list[DisplayedDetail]:
    """Each object rendered with its type's display template in the restricted engine (approvals.display: the
    context is the object, its strings shown as delimited data, and the type's names). A type without a template,
    since disabled or deleted, or whose template fails or breaks the engine's rules, shows generic rows."""
    # The types' registry belongs to the OAuth side (approvals.agents asks it), yet the page shows what each type's
    # owner wrote.
    names = {d["type"] for d in details if isinstance(d, dict) and isinstance(d.get("type"), str)}
    types = agents.detail_types(names)
    shown = []
    for detail in details:
        type_name = detail.get("type") if isinstance(detail, dict) else None
        kind = types.get(type_name) if isinstance(type_name, str) else None
        heading = kind.name if kind is not None and kind.name else detail_type(detail)
        html: SafeString | str = ""
        if kind is not None and kind.display_template.strip():
            try:
                html = display.render_display_template(kind.display_template, detail=detail, kind=kind)
            except Exception:
                # Any failure of an admin's template falls back to the generic rows, which show everything.
                logger.exception("The display template of authorization details type %s failed", kind.type)
                html = ""
        shown.append(DisplayedDetail(detail=detail, heading=heading, html=html))
    return shown


@register.filter
def displayed(item: Any) -> DisplayedDetail:
    """The page's view of one entry: as prepared by `displayed_details`, or a raw object shown with generic rows."""
    if isinstance(item, DisplayedDetail):
        return item
    return DisplayedDetail(detail=item, heading=detail_type(item))
