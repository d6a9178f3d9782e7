"""Issue 15 item 6: authorization_details values cannot be made to read as something else. Runs of combining marks
and unusual whitespace are refused at bc-authorize (authz.tokens.details, RFC 9396 section 5); values are shown as
data, each in its own delimited element, never run into the page's own prose or quotation marks (approvals.display);
a word that mixes scripts or is written in look-alike letters ("АСМЕ" in Cyrillic) is flagged on the page."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from approvals.display import DataText
from authz.models import AuthorizationDetailType
from authz.tokens.details import text_problem
from tests.authz.tokens.test_rar import PAYMENT, ask, install_example_types, stored, with_
from tests.factories import assert_oauth_error
from tests.security.test_fuzz import FUZZ

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def example_types(db) -> None:
    install_example_types()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("A" + "\u0301" * 120, id="120-combining-marks"),
        pytest.param("ACME" + "\u0489\u0488\u0301\u0300\u0302", id="five-stacked-marks"),
        pytest.param("ACME\u2003\u2003\u2003\u2003Ltd", id="em-space-padding"),
        pytest.param("ACME\u00a0Ltd", id="no-break-space"),
        pytest.param("ACME\u3000Ltd", id="ideographic-space"),
    ],
)
def test_combining_mark_runs_and_unusual_whitespace_are_refused(agent, approver, name: str) -> None:
    response = ask(agent, [with_(PAYMENT, creditorName=name)])

    assert_oauth_error(response, 400, "invalid_authorization_details")
    description = response.json()["error_description"]
    assert all(32 <= ord(c) < 127 and c not in '"\\' for c in description)


def test_ordinary_accents_and_scripts_are_accepted(agent, approver) -> None:
    # Vietnamese keeps two marks on one letter; NFC folds most into one character anyway.
    for name in ("Café Müller", "Công ty Phở", "Ελληνικά", "Москва", "東京 株式会社"):
        stored(ask(agent, [with_(PAYMENT, creditorName=name)]))


def details_html(client: Client, approval_request) -> str:
    html = client.get(f"/approvals/{approval_request.pk}/").content.decode()
    return html[html.index('<section class="details"') : html.index("</section>", html.index('class="details"'))]


def test_a_value_imitating_the_reference_field_stays_inside_its_own_element(agent, approver, approver_client) -> None:
    approval_request = stored(ask(agent, [with_(PAYMENT, creditorName="ACME”, reference “INV-7")]))

    html = details_html(approver_client, approval_request)

    # The whole value sits in one delimited element; the page's prose is outside it.
    assert '<span class="data-value">ACME”, reference “INV-7</span>' in html
    assert "“<span" not in html and "</span>”" not in html  # no page quotation marks around values


def test_generic_rows_show_values_as_delimited_data(agent, approver, approver_client) -> None:
    AuthorizationDetailType.objects.create(type="note", name="Note", schema={"type": "object"})
    approval_request = stored(ask(agent, [{"type": "note", "text": "ACME”, reference “INV-7"}]))

    html = details_html(approver_client, approval_request)

    assert '<dd><span class="data-value">ACME”, reference “INV-7</span></dd>' in html


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("\u0410\u0421\u041c\u0415", id="cyrillic-look-alike-word"),
        pytest.param("\u0410CME Ltd", id="latin-and-cyrillic-in-one-word"),
        pytest.param("Pay\u03c1al", id="latin-and-greek-in-one-word"),
    ],
)
def test_look_alike_and_mixed_script_words_are_flagged(agent, approver, approver_client, name: str) -> None:
    approval_request = stored(ask(agent, [with_(PAYMENT, creditorName=name)]))

    html = details_html(approver_client, approval_request)

    assert re.search(r'<span class="data-value data-flagged"[^>]*>' + re.escape(name) + "</span>", html)
    assert "data-flag" in html and "mixes alphabets" in html


def test_honest_values_in_one_script_are_not_flagged(agent, approver, approver_client) -> None:
    detail: dict[str, Any] = with_(PAYMENT, creditorName="Москва Café", remittanceInformationUnstructured="Invoice 42")
    approval_request = stored(ask(agent, [detail]))

    html = details_html(approver_client, approval_request)

    assert "data-flagged" not in html
    assert json.loads(json.dumps(detail))["creditorName"] in html


_SPAN = re.compile(
    r'<span class="data-value( data-flagged)?"( title="[^"<>]*")?>([^<>]*)</span>'
    r'( <span class="data-flag">[^<>]*</span>)?'
)


@FUZZ
@given(st.text(max_size=80) | st.text(st.characters(categories=["L", "M", "Z", "P", "S"]), max_size=40))
def test_any_accepted_text_renders_as_one_delimited_value(text: str) -> None:
    # The fuzz suite's settings (tests/security/test_fuzz.py): the same examples in `make test`, more in `make fuzz`.
    if text_problem(text):
        return
    match = _SPAN.fullmatch(DataText(text).__html__())
    assert match is not None
    inner = match.group(3)
    assert (
        inner.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
        == text
    )
