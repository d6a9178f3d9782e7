"""Rich Authorization Requests (RFC 9396) in CIBA: authorization_details checked at bc-authorize against the
registered types, shown to the approver, bound to the tokens (token response, refresh, introspection)."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import RequestFactory
from django.utils.html import strip_tags
from oauth2_provider.models import get_access_token_model

from approvals.models import ApprovalRequest
from approvals.templatetags.approver_ui import displayed_details, iso_datetime
from authz.admin import AuthorizationDetailTypeForm, CibaClientForm
from authz.ciba import notify as push
from authz.errors import InvalidAuthorizationDetails
from authz.models import AuthorizationDetailType, CibaClient, TokenDetails
from authz.tokens import details as rar
from tests import factories
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

TOKEN = "/oauth/token/"

PAYMENT = {
    "type": "payment_initiation",
    "actions": ["initiate", "status"],
    "locations": ["https://pay.example.com/payments"],
    "instructedAmount": {"currency": "EUR", "amount": "123.50"},
    "creditorName": "Merchant A",
    "creditorAccount": {"iban": "DE02100100109307118603", "bic": "PBNKDEFFXXX"},
    "remittanceInformationUnstructured": "Ref Number Merchant",
}

CALENDAR = {
    "type": "calendar_event",
    "actions": ["create"],
    "title": "Dentist",
    "start": "2026-12-03T10:00:00+01:00",
    "end": "2026-12-03T10:30:00+01:00",
    "attendees": ["alice@example.com"],
    "calendar": "Personal",
}


EXAMPLES = importlib.import_module("authz.migrations.0005_example_authorization_detail_types")
BOUNDS = importlib.import_module("authz.migrations.0007_bound_example_detail_strings")
RESTRICTED = importlib.import_module("authz.migrations.0010_display_templates_as_data")


def install_example_types() -> None:
    """The data migrations' types (0005, bounded by 0007). Transactional tests (browser, concurrency) flush every
    table, migration rows included, so tests that need them install them again (idempotent: get_or_create)."""
    EXAMPLES.add_examples(apps, None)
    BOUNDS.bound_example_strings(apps, None)
    RESTRICTED.restrict_example_templates(apps, None)


@pytest.fixture(autouse=True)
def example_types(db) -> None:
    install_example_types()


def ask(agent, details: Any, **params: str):
    raw = details if isinstance(details, str) else json.dumps(details)
    return agent.bc_authorize(scope="openid", login_hint="alice", authorization_details=raw, **params)


def stored(response) -> ApprovalRequest:
    assert response.status_code == 200, response.content
    return ApprovalRequest.objects.get(auth_req_id=response.json()["auth_req_id"])


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    detail = json.loads(json.dumps(base))
    for key, value in changes.items():
        if value is None:
            detail.pop(key, None)
        else:
            detail[key] = value
    return detail


# --- accepted ---------------------------------------------------------------------------------------------------------


def test_the_example_types_pass_the_admin_checks():
    types = {t.type: t for t in AuthorizationDetailType.objects.all()}
    assert {"payment_initiation", "calendar_event"} <= set(types)
    for kind in types.values():
        assert kind.enabled and kind.name
        assert rar.schema_errors(kind.schema, type_name=kind.type) == []
        assert rar.template_errors(kind.display_template) == []


def test_payment_and_calendar_details_are_accepted_and_stored(agent, approver):
    approval_request = stored(ask(agent, [PAYMENT, CALENDAR]))

    assert approval_request.authorization_details == [PAYMENT, CALENDAR]


@pytest.mark.parametrize(
    "detail",
    [
        with_(PAYMENT, actions=None, locations=None, creditorAccount=None, remittanceInformationUnstructured=None),
        with_(PAYMENT, instructedAmount={"currency": "JPY", "amount": "5000"}),
        with_(PAYMENT, instructedAmount={"currency": "EUR", "amount": "0.01"}),
        with_(CALENDAR, actions=["delete"], identifier="evt-42", attendees=None, calendar=None),
        with_(CALENDAR, start="2026-12-03T09:00:00Z", end="2026-12-03T09:30:00.5Z"),
    ],
)
def test_each_valid_shape_is_accepted(agent, approver, detail):
    assert stored(ask(agent, [detail])).authorization_details == [detail]


def test_without_authorization_details_nothing_is_stored(agent, approver):
    approval_request = stored(agent.bc_authorize(scope="openid", login_hint="alice"))

    assert approval_request.authorization_details == []


def test_an_already_decoded_list_is_accepted(agent):
    # A signed request object's claims arrive decoded (authz.ciba.request gets a list, not a JSON string).
    ciba = CibaClient.objects.get(application=agent.application)

    assert rar.parse_authorization_details([PAYMENT], ciba=ciba) == [PAYMENT]
    with pytest.raises(InvalidAuthorizationDetails):
        rar.parse_authorization_details([with_(PAYMENT, creditorName=None)], ciba=ciba)
    with pytest.raises(InvalidAuthorizationDetails):
        rar.parse_authorization_details({"type": "payment_initiation"}, ciba=ciba)  # type: ignore[arg-type]
    with pytest.raises(InvalidAuthorizationDetails):
        rar.parse_authorization_details([PAYMENT] * (rar.MAX_DETAILS + 1), ciba=ciba)


def test_ciba_still_requires_openid(agent, approver):
    response = agent.bc_authorize(scope="profile", login_hint="alice", authorization_details=json.dumps([PAYMENT]))

    assert_oauth_error(response, 400, "invalid_scope")


# --- refused: invalid_authorization_details (RFC 9396 §5) -------------------------------------------------------------

REJECTED = {
    "not JSON": "[{",
    "empty string": "",
    "NaN": '[{"type": "payment_initiation", "x": NaN}]',
    "an object, not an array": json.dumps(PAYMENT),
    "an array of strings": json.dumps(["payment_initiation"]),
    "no type": json.dumps([with_(PAYMENT, type=None)]),
    "type not a string": json.dumps([with_(PAYMENT, type=7)]),
    "unknown type": json.dumps([with_(PAYMENT, type="wire_transfer")]),
    "missing amount": json.dumps([with_(PAYMENT, instructedAmount={"currency": "EUR"})]),
    "amount as a number": json.dumps([with_(PAYMENT, instructedAmount={"currency": "EUR", "amount": 123.5})]),
    "negative amount": json.dumps([with_(PAYMENT, instructedAmount={"currency": "EUR", "amount": "-5.00"})]),
    "zero amount": json.dumps([with_(PAYMENT, instructedAmount={"currency": "EUR", "amount": "0.00"})]),
    "lower-case currency": json.dumps([with_(PAYMENT, instructedAmount={"currency": "eur", "amount": "1.00"})]),
    "four-letter currency": json.dumps([with_(PAYMENT, instructedAmount={"currency": "EURO", "amount": "1.00"})]),
    "missing creditor": json.dumps([with_(PAYMENT, creditorName=None)]),
    "bad IBAN": json.dumps([with_(PAYMENT, creditorAccount={"iban": "not an iban"})]),
    "a field the type does not define": json.dumps([with_(PAYMENT, recurring=True)]),
    "actions not strings": json.dumps([with_(PAYMENT, actions=[1])]),
    "locations not an array": json.dumps([with_(PAYMENT, locations="https://pay.example.com")]),
    "datatypes not strings": json.dumps([with_(PAYMENT, datatypes=[{"a": 1}])]),
    "privileges not an array": json.dumps([with_(PAYMENT, privileges="admin")]),
    "identifier not a string": json.dumps([with_(CALENDAR, identifier=42)]),
    "a bidi override": json.dumps([with_(PAYMENT, creditorName="Merchant \u202eA")]),
    "a line break": json.dumps([with_(PAYMENT, remittanceInformationUnstructured="line\nbreak")]),
    "impossible date": json.dumps([with_(CALENDAR, start="2026-02-30T10:00:00Z")]),
    "date without offset": json.dumps([with_(CALENDAR, start="2026-12-03T10:00:00")]),
    "attendee not an email": json.dumps([with_(CALENDAR, attendees=["bob"])]),
    "delete without identifier": json.dumps([with_(CALENDAR, actions=["delete"])]),
    "two actions at once": json.dumps([with_(CALENDAR, actions=["create", "create"])]),
    "too many objects": json.dumps([PAYMENT] * (rar.MAX_DETAILS + 1)),
    "too large": json.dumps([with_(PAYMENT, creditorName="x" * (rar.MAX_JSON_BYTES + 1))]),
    "nested too deeply": json.dumps([with_(PAYMENT, creditorAccount=json.loads("[" * 20 + "]" * 20))]),
    "one good, one bad": json.dumps([PAYMENT, with_(CALENDAR, title="")]),
}


@pytest.mark.parametrize("raw", list(REJECTED.values()), ids=list(REJECTED))
def test_invalid_authorization_details_are_refused(agent, approver, raw):
    response = ask(agent, raw)

    assert_oauth_error(response, 400, "invalid_authorization_details")
    assert not ApprovalRequest.objects.exists()


def test_the_error_names_the_offending_object_and_field(agent, approver):
    body = assert_oauth_error(
        ask(agent, [PAYMENT, with_(PAYMENT, instructedAmount={"currency": "EUR", "amount": "12,50"})]),
        400,
        "invalid_authorization_details",
    )

    assert "authorization_details[1]" in body["error_description"]
    assert "instructedAmount/amount" in body["error_description"]


def test_a_disabled_type_is_refused(agent, approver):
    AuthorizationDetailType.objects.filter(type="calendar_event").update(enabled=False)

    assert_oauth_error(ask(agent, [CALENDAR]), 400, "invalid_authorization_details")
    assert stored(ask(agent, [PAYMENT])).authorization_details == [PAYMENT]


def test_a_client_restricted_to_some_types_may_use_only_those(make_agent, approver):
    agent = make_agent(name="Payments only", authorization_details_types=["payment_initiation"])

    assert stored(ask(agent, [PAYMENT])).authorization_details == [PAYMENT]
    body = assert_oauth_error(ask(agent, [CALENDAR]), 400, "invalid_authorization_details")
    assert "may not use type 'calendar_event'" in body["error_description"]


def test_a_type_whose_stored_schema_is_broken_fails_as_a_client_error(agent, approver):
    AuthorizationDetailType.objects.create(
        type="broken", name="Broken", schema={"$ref": "https://schemas.example.com/nowhere.json"}
    )

    assert_oauth_error(ask(agent, [{"type": "broken"}]), 400, "invalid_authorization_details")


# --- the admin --------------------------------------------------------------------------------------------------------


def type_form(**changes: Any) -> AuthorizationDetailTypeForm:
    data = {
        "type": "parcel_delivery",
        "name": "Parcel",
        "description": "",
        "schema": json.dumps({"type": "object", "required": ["type"], "properties": {"type": {"const": "parcel"}}}),
        "display_template": "<p>Deliver to {{ detail.address }}</p>",
        "enabled": "on",
        **changes,
    }
    return AuthorizationDetailTypeForm(data=data)


def test_admin_saves_a_valid_type():
    form = type_form()

    assert form.is_valid(), form.errors
    form.save()
    assert AuthorizationDetailType.objects.get(type="parcel_delivery").enabled


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", json.dumps({"type": "objekt"})),
        ("schema", json.dumps({"properties": {"a": {"minLength": -1}}})),
        ("schema", json.dumps({"pattern": "(unclosed"})),
        ("schema", json.dumps({"$ref": "https://schemas.example.com/remote.json"})),
        ("schema", json.dumps([1, 2])),
        ("schema", "{not json"),
        ("display_template", "{% if detail.amount %}no end"),
        ("display_template", "{{ detail|no_such_filter }}"),
        ("display_template", "{% load no_such_library %}"),
        ("type", "has spaces"),
    ],
)
def test_admin_refuses_an_invalid_schema_template_or_name(field, value):
    form = type_form(**{field: value})

    assert not form.is_valid()
    assert field in form.errors


def test_the_type_admin_is_registered_and_lists_types(admin_client):
    assert isinstance(admin.site._registry[AuthorizationDetailType], admin.ModelAdmin)
    page = admin_client.get("/admin/authz/authorizationdetailtype/")

    assert page.status_code == 200
    assert "payment_initiation" in page.content.decode()
    kind = AuthorizationDetailType.objects.get(type="payment_initiation")
    change = admin_client.get(f"/admin/authz/authorizationdetailtype/{kind.pk}/change/")
    assert change.status_code == 200
    bad = admin_client.post(
        "/admin/authz/authorizationdetailtype/add/",
        {"type": "x", "name": "X", "schema": '{"type": 1}', "display_template": "{% if %}", "enabled": "on"},
    )
    assert bad.status_code == 200 and not AuthorizationDetailType.objects.filter(type="x").exists()
    assert "Not a valid JSON Schema" in bad.content.decode() and "does not compile" in bad.content.decode()


def test_the_client_admin_edits_the_allowed_types(admin_client, agent):
    page = admin_client.get(f"/admin/oauth2_provider/application/{agent.application.pk}/change/")

    assert page.status_code == 200
    assert 'name="ciba-0-authorization_details_types"' in page.content.decode()


def test_the_client_admin_checks_the_allowed_types():
    good = CibaClientForm(data={"authorization_details_types": '["payment_initiation"]'})
    unknown = CibaClientForm(data={"authorization_details_types": '["nope"]'})
    shape = CibaClientForm(data={"authorization_details_types": '{"a": 1}'})

    assert good.is_valid(), good.errors
    assert not unknown.is_valid() and "authorization_details_types" in unknown.errors
    assert not shape.is_valid() and "authorization_details_types" in shape.errors


def test_the_request_admin_shows_the_details_read_only(admin_client, agent, approver):
    approval_request = stored(ask(agent, [PAYMENT]))

    page = admin_client.get(f"/admin/approvals/approvalrequest/{approval_request.pk}/change/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "Authorization details" in html
    assert "&quot;creditorName&quot;: &quot;Merchant A&quot;" in html
    assert 'name="authorization_details"' not in html


# --- tokens -----------------------------------------------------------------------------------------------------------


def token_row(value: str):
    checksum = hashlib.sha256(value.encode()).hexdigest()
    return get_access_token_model().objects.get(token_checksum=checksum)


def test_tokens_carry_the_approved_details_through_refresh_and_introspection(agent, approver, obtain_tokens):
    details = json.dumps([PAYMENT])

    token = obtain_tokens(agent, approver.user, authorization_details=details)

    # RFC 9396 §7: the token response says what the token is for.
    assert token["authorization_details"] == [PAYMENT]
    assert TokenDetails.objects.get(access_token=token_row(token["access_token"])).authorization_details == [PAYMENT]
    introspected = agent.post("/oauth/introspect/", {"token": token["access_token"]}).json()
    assert introspected["active"] is True and introspected["authorization_details"] == [PAYMENT]

    refreshed = agent.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})

    assert refreshed.status_code == 200, refreshed.content
    body = refreshed.json()
    assert body["access_token"] != token["access_token"]
    assert body["authorization_details"] == [PAYMENT]
    assert agent.post("/oauth/introspect/", {"token": token["access_token"]}).json() == {"active": False}
    introspected = agent.post("/oauth/introspect/", {"token": body["access_token"]}).json()
    assert introspected["active"] is True and introspected["authorization_details"] == [PAYMENT]

    # And again: a refresh of the refreshed token keeps them too.
    again = agent.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
    assert again.status_code == 200, again.content
    assert again.json()["authorization_details"] == [PAYMENT]


def test_tokens_without_details_say_nothing_of_them(agent, approver, obtain_tokens):
    token = obtain_tokens(agent, approver.user)

    assert "authorization_details" not in token
    introspected = agent.post("/oauth/introspect/", {"token": token["access_token"]}).json()
    assert introspected["active"] is True and "authorization_details" not in introspected
    refreshed = agent.post(TOKEN, {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert refreshed.status_code == 200 and "authorization_details" not in refreshed.json()


def test_push_token_responses_carry_the_details(make_agent, approver):
    agent = make_agent(
        name="Push agent",
        backchannel_token_delivery_mode="push",
        backchannel_client_notification_endpoint="https://agent.example.com/cb",
    )
    ack = ask(agent, [CALENDAR], client_notification_token="push-token-1")
    approval_request = factories.decide(stored(ack).auth_req_id)

    body = push.issue_push_tokens(approval_request)

    assert body["auth_req_id"] == approval_request.auth_req_id
    assert body["authorization_details"] == [CALENDAR]
    assert TokenDetails.objects.get(access_token=token_row(body["access_token"])).authorization_details == [CALENDAR]


# --- discovery --------------------------------------------------------------------------------------------------------


def test_discovery_lists_the_enabled_types(client):
    AuthorizationDetailType.objects.create(type="retired", name="Retired", enabled=False)

    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        supported = client.get(path).json()["authorization_details_types_supported"]
        assert "payment_initiation" in supported and "calendar_event" in supported
        assert "retired" not in supported


# --- the approval page ------------------------------------------------------------------------------------------------


def page_text(html: str) -> str:
    return " ".join(strip_tags(html).split())


def test_the_approval_page_shows_the_payment_summary(agent, approver, approver_client):
    approval_request = stored(ask(agent, [PAYMENT, CALENDAR]))

    html = approver_client.get(f"/approvals/{approval_request.pk}/").content.decode()

    text = page_text(html)
    # Each of the agent's values in its own delimited element (approvals.display), never in the page's quotes.
    assert "Pay EUR 123.50 to Merchant A, reference Ref Number Merchant" in text
    assert '<span class="data-value">Merchant A</span>' in html
    assert '<dt>IBAN</dt><dd><span class="data-value">DE02100100109307118603</span></dd>' in html
    assert (
        '<dt>The agent may</dt><dd><span class="data-value">initiate</span>, '
        '<span class="data-value">status</span></dd>' in html
    )
    assert "Create the event Dentist in the calendar Personal" in text
    assert (
        '<dd><span class="data-value">Thu 3 Dec 2026, 10:00 (UTC+01:00)</span> to '
        '<span class="data-value">Thu 3 Dec 2026, 10:30 (UTC+01:00)</span></dd>'
    ) in html
    assert "<h3>Payment</h3>" in html and "<h3>Calendar</h3>" in html
    assert "<style" not in html and "style=" not in html  # the page's CSP allows no inline style


def test_hostile_values_are_escaped_in_display_templates(agent, approver, approver_client):
    hostile = with_(PAYMENT, creditorName="<script>alert(1)</script>", remittanceInformationUnstructured='"><img>')
    approval_request = stored(ask(agent, [hostile]))

    html = approver_client.get(f"/approvals/{approval_request.pk}/").content.decode()

    assert "<script>alert(1)</script>" not in html and "<img>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img&gt;" in html


def test_types_without_a_template_disabled_or_deleted_fall_back_to_rows():
    AuthorizationDetailType.objects.create(type="plain", name="Plain thing", schema={"type": "object"})
    AuthorizationDetailType.objects.create(
        type="off", name="Off", schema={}, display_template="<p>SHOULD NOT SHOW</p>", enabled=False
    )
    AuthorizationDetailType.objects.create(
        type="failing", name="Failing", schema={}, display_template="{% include 'missing.html' %}"
    )
    details = [
        {"type": "plain", "note": "<b>x</b>"},
        {"type": "off", "note": "y"},
        {"type": "gone", "note": "z"},
        {"type": "failing", "note": "w"},
    ]

    shown = displayed_details(details)

    assert [item.html for item in shown] == ["", "", "", ""]
    assert [item.heading for item in shown] == ["Plain thing", "Off", "Gone", "Failing"]
    from django.template.loader import render_to_string

    html = render_to_string(
        "approvals/detail.html",
        {
            "approval_request": {"binding_message": "", "created_at": None, "pk": 1},
            "status": "pending",
            "is_pending": False,
            "scopes": [],
            "agent_name": "Agent",
            "authorization_details": shown,
        },
    )
    assert "SHOULD NOT SHOW" not in html
    assert html.count("<dt>Note</dt>") == 4 and "&lt;b&gt;x&lt;/b&gt;" in html


def test_a_display_template_sees_only_the_detail_and_its_type(rf: RequestFactory):
    AuthorizationDetailType.objects.create(
        type="probe",
        name="Probe",
        schema={},
        display_template="[{{ detail.a }}|{{ type.type }}|{{ user }}|{{ request }}|{{ csrf_token }}]",
    )

    (shown,) = displayed_details([{"type": "probe", "a": "1"}])

    assert re.fullmatch(r'\[<span class="data-value">1</span>\|probe\|\|\|\]', str(shown.html))


def test_iso_datetime_keeps_the_stated_offset():
    assert iso_datetime("2026-12-03T10:00:00Z") == "Thu 3 Dec 2026, 10:00 (UTC)"
    assert iso_datetime("2026-07-01T08:05:00-04:00") == "Wed 1 Jul 2026, 08:05 (UTC-04:00)"
    assert iso_datetime("not a date") == "not a date"
