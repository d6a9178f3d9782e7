from __future__ import annotations

import phonenumbers


def normalize_e164(value: str) -> str | None:
    """The E.164 form of a number given in international format (+ and country code), or None.

    Numbers are checked for a known country code and a possible length, not for an allocated range: the fictional
    +1 555 01xx numbers that documentation and tests use must work, and the SMS provider reports unreachable ones.
    """
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    if not value.strip().startswith("+") or not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
