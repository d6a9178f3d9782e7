"""Adversarial review of the issue 15 fixes: what got past them.

Client names: the reserved-name check folded only a few Cyrillic and Greek look-alikes, so a dotless i, Latin small
capitals, Armenian letters or a Cyrillic te still spelt "Countersign" to the eye; and a name could carry the page's
own wording ("ACME (verified)"), which beside the unverified mark reads as the server vouching for it.
Display templates: the keys of the agent's object were not wrapped as data (below).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from approvals.text import validate_client_name

LOOK_ALIKE_SERVER_NAMES = [
    "Countersıgn",  # U+0131 dotless i
    "ᴄᴏᴜɴᴛᴇʀꜱɪɢɴ",  # Latin small capitals
    "Cօuntersign",  # Armenian oh
    "Coսntersign",  # Armenian seh
    "Countersiɡn",  # U+0261 script g
    "Сounтersign",  # Cyrillic te
]
PAGE_WORDING = ["ACME (verified)", "Verified ACME", "ACME vеrified"]


@pytest.mark.parametrize("name", LOOK_ALIKE_SERVER_NAMES)
def test_look_alikes_of_the_server_name_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_client_name(name)
    assert caught.value.code == "server_name"


@pytest.mark.parametrize("name", PAGE_WORDING)
def test_names_that_claim_verification_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_client_name(name)
    assert caught.value.code == "page_wording"


@pytest.mark.parametrize("name", ["ACME Payments", "Café Noir", "Ledger sync", "Веб-клиент"])
def test_ordinary_names_still_pass(name: str) -> None:
    validate_client_name(name)


# Display templates: as_data wrapped the agent's values but not its object's keys, so a template listing the fields
# (`{% for name, value in detail.items %}`) showed agent-chosen keys unboxed and unflagged, as if they were the
# administrator's own labels.
def test_keys_of_the_agents_object_render_as_data() -> None:
    from types import SimpleNamespace

    from approvals.display import render_display_template

    html = render_display_template(
        "{% for name, value in detail.items %}<dt>{{ name }}</dt><dd>{{ value }}</dd>{% endfor %}",
        detail={"АСМЕ": "ok", "Amount": {"Total”, reference “INV-7": 1}},
        kind=SimpleNamespace(name="Payment", type="payment"),
    )
    assert '<dt><span class="data-value data-flagged"' in html
    assert "<dt>АСМЕ</dt>" not in html
    assert "<dt>Amount</dt>" not in html
