from __future__ import annotations

import phonenumbers


def normalize_e164(value: str) -> str | None:
    """The E.164 form of a phone number given in international format, or None if it is not a valid number."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
