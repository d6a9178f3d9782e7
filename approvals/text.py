"""Text that agents write and approvers read: binding messages and client names.

One rule for both, so that whatever a person reads in a prompt or on the request page came through the same gate:
letters of any script, marks that combine with them, digits, punctuation, currency, maths and modifier signs, and
the plain space. No controls (a newline would start a line that looks like the server's own), no format characters
(bidi overrides make text read differently than it is), no other whitespace, and no pictographs (emoji render
differently on every device, or not at all). A client name also may not claim to be this server.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from approvals import agents

_DISPLAY_CATEGORIES = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd", "Nl", "No",
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sc", "Sm", "Sk",
}  # fmt: skip
# Common "other symbols" that are text, not pictographs.
_DISPLAY_SYMBOLS = set("°©®™№℃℉")

CLIENT_NAME_MAX = 64
# The name approvers know this server by; a client calling itself that would speak in the server's voice.
SERVER_NAMES = ("countersign",)
# Cheap confusable folding for the reserved names: Cyrillic and Greek letters that look like Latin ones, and digits
# that stand in for letters. Not a full UTS 39 skeleton, which would need a table this check does not justify.
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "с": "c", "е": "e", "і": "i", "ј": "j", "о": "o", "р": "p", "ѕ": "s", "х": "x", "у": "y",
        "ο": "o", "ν": "v", "τ": "t", "ι": "i", "κ": "k", "ѵ": "v", "ц": "u", "п": "n",
        "0": "o", "1": "i", "3": "e", "5": "s", "7": "t", "|": "l",
        # Latin small capitals and IPA letters, Armenian, and more Cyrillic and Greek that read as Latin ones.
        "ı": "i", "ɩ": "i", "ɪ": "i", "ɡ": "g", "ɢ": "g", "ᴄ": "c", "ᴏ": "o", "ᴜ": "u", "ɴ": "n", "ᴛ": "t",
        "ᴇ": "e", "ʀ": "r", "ꜱ": "s", "ᴠ": "v", "ᴅ": "d", "ꜰ": "f", "օ": "o", "ս": "u", "ո": "n", "ց": "g",
        "т": "t", "г": "r", "ԁ": "d", "һ": "h", "υ": "u", "ρ": "p",
    }
)  # fmt: skip
# The page's own wording about a client: a name saying "verified" would read, beside the unverified mark, as the
# server vouching for it (approvals.text.UNVERIFIED_MARK, the verified website mark).
PAGE_WORDS = ("verified",)


def disallowed_character(text: str) -> str | None:
    """The first character outside the display rule (see the module), or None."""
    for char in text:
        category = unicodedata.category(char)
        allowed = char == " " or char in _DISPLAY_SYMBOLS or category in _DISPLAY_CATEGORIES
        # Emoji skin-tone modifiers are Sk too, but outside the Basic Multilingual Plane.
        if not allowed or (ord(char) > 0xFFFF and category == "Sk"):
            return char
    return None


# "Zalgo" text: a run of combining marks on one letter spills over the lines above and below, covering what the page
# says there. Three is enough for every real script (Vietnamese stacks two, some Indic clusters three).
MAX_COMBINING_MARKS = 3


def stacks_marks(text: str) -> bool:
    """Whether `text` has more than MAX_COMBINING_MARKS combining marks in a row."""
    marks = 0
    for char in text:
        marks = marks + 1 if unicodedata.category(char).startswith("M") else 0
        if marks > MAX_COMBINING_MARKS:
            return True
    return False


def _folded(text: str) -> str:
    """NFKC, casefolded, look-alikes mapped to Latin, and everything but letters dropped ("C-o u n t e r s i g n")."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_CONFUSABLES)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if char.isalpha() and not unicodedata.combining(char))


def validate_client_name(value: str) -> None:
    """The model field validator of a client's name (Application.name): registration, the admin and
    create_agent_client all save through it. Messages are printable ASCII (they become error_description)."""
    if not value or not value.strip():
        raise ValidationError("The client name is empty.", code="empty")
    if value != value.strip():
        raise ValidationError("The client name may not start or end with a space.", code="spaces")
    if len(value) > CLIENT_NAME_MAX:
        raise ValidationError(f"The client name is longer than {CLIENT_NAME_MAX} characters.", code="too_long")
    char = disallowed_character(value)
    if char is not None:
        raise ValidationError(
            f"The client name may contain letters, digits, spaces and punctuation only (found U+{ord(char):04X}).",
            code="character",
        )
    if stacks_marks(value):
        raise ValidationError(
            f"The client name stacks more than {MAX_COMBINING_MARKS} combining marks on one letter.", code="marks"
        )
    folded = _folded(value)
    if any(name in folded for name in SERVER_NAMES):
        raise ValidationError(
            "The client name may not contain the name of this server: approvers must not take it for the server.",
            code="server_name",
        )
    if any(word in folded for word in PAGE_WORDS):
        raise ValidationError(
            "The client name may not say it is verified: approvers must not take that for the server's word.",
            code="page_wording",
        )


UNVERIFIED_MARK = "(unverified)"


def client_unverified(client: Any, profile: agents.AgentProfile | None = None) -> bool:
    """A client that registered itself (RFC 7591) and that no administrator has verified (approvals.agents): its
    name is only its own claim, and approvers are told so."""
    from oauth2_provider.models import AbstractApplication

    if getattr(client, "registration_source", None) != AbstractApplication.RegistrationSource.DCR:
        return False
    return not (profile or agents.profile(client)).website_verified


def agent_label(client: Any, profile: agents.AgentProfile | None = None) -> str:
    """The agent as every prompt names it (approvals.channels.base.Prompt): its name, or client_id, with the
    unverified mark first, so that shortening a long name (the SMS) never cuts the mark off."""
    name = client.name or client.client_id
    return f"{UNVERIFIED_MARK} {name}" if client_unverified(client, profile) else name


def readable_iso_datetime(value: Any) -> str:
    """`2026-12-03T10:00:00+01:00` → `Thu 3 Dec 2026, 10:00 (UTC+01:00)`: the time as the agent stated it, with its
    offset, since the person's own time zone is not known here. Anything else is shown unchanged."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M}"
    offset = moment.strftime("%z")
    if not offset:
        return text
    zone = "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{text} ({zone})"
