"""How an agent's RFC 9396 authorization_details reach the approver's eyes: as data, never as the page's own words.

- Every string the agent sent is shown in its own delimited element (`<span class="data-value">`, boxed by the
  page's CSS), so a value such as `ACME”, reference “INV-7` cannot pass for the page's prose or quotation marks.
- A word that mixes scripts ("АCME": Cyrillic А, Latin CME) or is written only in letters that look Latin ("АСМЕ"
  in Cyrillic) is flagged, visibly, next to the value. What is refused outright (controls, bidi and other format
  characters, runs of combining marks, unusual whitespace) is refused at bc-authorize, before any of it is stored.
- An administrator's display template runs in a restricted engine (`display_engine`): no `{% load %}`, only the
  tags and filters of this module's library, autoescape on, no loaders; the agent's values cannot be marked safe.

Also how admin pages write a time (`admin_datetime`), to the second with its zone.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from functools import lru_cache
from typing import Any

from django import template
from django.template import Engine, Template, TemplateSyntaxError, defaultfilters, defaulttags
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from approvals import text

# The tags and filters a display template may use: enough to phrase a summary and list fields, nothing that reads
# files, other templates, settings or the request, or that turns off escaping (no load, include, extends, debug,
# autoescape, url, csrf_token, safe, safeseq, escapejs, pprint).
ALLOWED_TAGS = ("if", "for", "with", "comment", "firstof")
ALLOWED_FILTERS = ("default", "default_if_none", "join", "length", "first", "last", "yesno", "pluralize")

register = template.Library()
for _name, _compiler in {
    "if": defaulttags.do_if,
    "for": defaulttags.do_for,
    "with": defaulttags.do_with,
    "comment": defaulttags.comment,
    "firstof": defaulttags.firstof,
}.items():
    register.tag(_name, _compiler)
for _name in ALLOWED_FILTERS:
    register.filter(_name, getattr(defaultfilters, _name))

# Scripts whose letters pass for Latin ones; a word in one of them spelt only with such letters is a look-alike.
_LOOK_ALIKES = {
    "CYRILLIC": set("АВЕЅІЈКМНОРСТХУаеһіјорсѕухԁԛԝӏ"),
    "GREEK": set("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαικνορτυχ"),
}
# Japanese writes one word in Han, Hiragana and Katakana; that is one writing system, not a disguise.
_SCRIPT_GROUPS = {"CJK": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN", "HALFWIDTH": "HAN", "IDEOGRAPHIC": "HAN"}
_WORD = re.compile(r"\w+")


def _script(char: str) -> str | None:
    """The script of a letter, from its Unicode name ("CYRILLIC CAPITAL LETTER A" -> CYRILLIC); None otherwise."""
    if not unicodedata.category(char).startswith("L"):
        return None
    first = unicodedata.name(char, "").split(" ", 1)[0]
    return _SCRIPT_GROUPS.get(first, first) or None


def misleading_script(text: str) -> bool:
    """Whether a word of the text mixes scripts or is written only in letters that look like Latin ones."""
    for word in _WORD.findall(text):
        letters = [char for char in word if _script(char)]
        scripts = {_script(char) for char in letters}
        if len(scripts) > 1:
            return True
        if len(scripts) == 1:
            [script] = scripts
            if script in _LOOK_ALIKES and all(char in _LOOK_ALIKES[script] for char in letters):
                return True
    return False


class DataText(str):
    """A string the agent sent: escaped and delimited wherever a template shows it (`__html__`, which Django's
    escaping consults; `|safe` on it returns it unchanged, so it is escaped still)."""

    def __html__(self) -> str:
        if misleading_script(self):
            flag = escape(_("mixes alphabets: check each letter"))
            return (
                f'<span class="data-value data-flagged" title="{flag}">{escape(str(self))}</span>'
                f' <span class="data-flag">⚠ {flag}</span>'
            )
        return f'<span class="data-value">{escape(str(self))}</span>'


def as_data(value: Any) -> Any:
    """The agent's object with every string wrapped as DataText, keys too: a template that lists the fields
    (`detail.items`) shows them, and a DataText key still looks up like the plain string it equals."""
    if isinstance(value, str):
        return DataText(value)
    if isinstance(value, dict):
        return {as_data(key): as_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_data(item) for item in value]
    return value


def shown(text: str) -> SafeString:
    """A value of the generic rows, escaped and delimited like one in a display template."""
    return format_html("{}", DataText(text))


@register.filter
def iso_datetime(value: Any) -> Any:
    """`2026-12-03T10:00:00+01:00` -> `Thu 3 Dec 2026, 10:00 (UTC+01:00)`, still shown as the agent's data."""
    readable = text.readable_iso_datetime(value)
    return DataText(readable) if isinstance(value, DataText) else readable


def admin_datetime(value: datetime | None) -> str:
    """A time as admin pages show it (issue 18): to the second, in the server's time zone, the zone named, e.g.
    "2026-12-05 21:50:07 UTC", so that created, decided and consumed within one minute read apart. "-" for none."""
    if value is None:
        return "-"
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or timezone.get_current_timezone_name()}"


def admin_duration(seconds: float | None) -> str:
    """A span for admin pages, two units at most: "12 s", "3 min 4 s", "2 h 5 min", "3 d 4 h". "-" for none."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


class _RestrictedEngine(Engine):
    # Engine adds default_builtins (every default tag and filter) to any builtins it is given.
    default_builtins: list[str] = []


@lru_cache(maxsize=1)
def display_engine() -> Engine:
    return _RestrictedEngine(
        dirs=[],
        app_dirs=False,
        loaders=[],
        libraries={},
        builtins=["approvals.display"],
        autoescape=True,
        debug=False,
        string_if_invalid="",
    )


def compile_display_template(source: str) -> Template:
    """The template compiled by the restricted engine; TemplateSyntaxError names what is not allowed."""
    try:
        return display_engine().from_string(source)
    except TemplateSyntaxError as exc:
        message = str(exc)
        if "Invalid block tag" in message or "Invalid filter" in message:
            raise TemplateSyntaxError(
                f"{message.split('.')[0]}. Not allowed in a display template: it may use the tags "
                f"{', '.join(ALLOWED_TAGS)} and the filters {', '.join((*ALLOWED_FILTERS, 'iso_datetime'))} only."
            ) from exc
        raise


def render_display_template(source: str, *, detail: Any, kind: Any) -> SafeString:
    """The type's template rendered for one object; the context is the object (as data) and the type's name."""
    compiled = compile_display_template(source)
    return compiled.render(
        template.Context({"detail": as_data(detail), "type": {"name": kind.name, "type": kind.type}})
    )
