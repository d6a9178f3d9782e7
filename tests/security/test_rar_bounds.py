"""Input sizes are bounded before patterns run (issue 14 item 13): an ~8 KB calendar attendee cost 0.15 to 0.25 s
of CPU in the email pattern, because jsonschema evaluates `pattern` even when `maxLength` already failed.
authz.tokens.details refuses any string (or object key) longer than rar.MAX_STRING_CHARS before jsonschema runs,
whatever the type's schema says; and the shipped example schemas give every string a maxLength (migration 0007)."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps

from authz.errors import InvalidAuthorizationDetails
from authz.models import AuthorizationDetailType, CibaClient
from authz.tokens import details as rar
from tests.authz.tokens.test_rar import CALENDAR, PAYMENT, install_example_types, with_
from tests.factories import assert_oauth_error

pytestmark = pytest.mark.django_db

BOUNDS = importlib.import_module("authz.migrations.0007_bound_example_detail_strings")
EXAMPLES = importlib.import_module("authz.migrations.0005_example_authorization_detail_types")
# The worst case found for the calendar's attendee pattern ^[^@\s]+@[^@\s]+\.[^@\s]+$: dots that never end well.
SLOW_ATTENDEE = "a@" + ".a" * 3990 + " "


def ask(agent, details: list[dict[str, Any]]):
    return agent.bc_authorize(scope="openid", login_hint="alice", authorization_details=json.dumps(details))


def test_a_long_attendee_is_refused_before_the_email_pattern_runs(agent, approver):
    install_example_types()
    ciba = CibaClient.objects.get(application=agent.application)
    raw = json.dumps([with_(CALENDAR, attendees=[SLOW_ATTENDEE])])

    started = time.process_time()
    with pytest.raises(InvalidAuthorizationDetails) as caught:
        rar.parse_authorization_details(raw, ciba=ciba)
    spent = time.process_time() - started

    assert f"longer than {rar.MAX_STRING_CHARS} characters" in caught.value.description
    assert spent < 0.05, f"{spent:.3f} s of CPU"  # about 0.15 s before the bound; well under a millisecond after


def test_over_http_it_is_invalid_authorization_details(agent, approver):
    install_example_types()
    response = ask(agent, [with_(CALENDAR, attendees=[SLOW_ATTENDEE])])

    body = assert_oauth_error(response, 400, "invalid_authorization_details")
    assert "authorization_details[0]" in body["error_description"]


@pytest.fixture
def lax_type() -> Iterator[AuthorizationDetailType]:
    """An admin-written type whose schema bounds nothing and matches with a pattern (the bound must not depend on the
    schema)."""
    yield AuthorizationDetailType.objects.create(
        type="note",
        name="Note",
        schema={
            "type": "object",
            "properties": {"type": {"const": "note"}, "text": {"type": "string", "pattern": "^(a|b)*$"}},
            "patternProperties": {"^x": {"type": "string"}},
        },
    )


def test_a_long_string_is_refused_even_where_the_schema_would_accept_it(agent, approver, lax_type):
    at_bound = {"type": "note", "text": "a" * rar.MAX_STRING_CHARS}
    assert ask(agent, [at_bound]).status_code == 200

    response = ask(agent, [{"type": "note", "text": "a" * (rar.MAX_STRING_CHARS + 1)}])

    body = assert_oauth_error(response, 400, "invalid_authorization_details")
    assert f"longer than {rar.MAX_STRING_CHARS} characters" in body["error_description"]


def test_a_long_object_key_is_refused_too(agent, approver, lax_type):
    response = ask(agent, [{"type": "note", "x" * (rar.MAX_STRING_CHARS + 1): "a"}])

    assert_oauth_error(response, 400, "invalid_authorization_details")


def test_a_long_string_deep_inside_is_refused(agent, approver, lax_type):
    assert ask(agent, [{"type": "note", "list": [{"y": ["b" * rar.MAX_STRING_CHARS]}]}]).status_code == 200

    response = ask(agent, [{"type": "note", "list": [{"y": ["b" * (rar.MAX_STRING_CHARS + 1)]}]}])

    assert_oauth_error(response, 400, "invalid_authorization_details")


def _string_schemas(schema: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that constrains strings (type string, a pattern or a format), with its path."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" or "pattern" in schema or "format" in schema:
            yield where or "/", schema
        for key, value in schema.items():
            yield from _string_schemas(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for n, value in enumerate(schema):
            yield from _string_schemas(value, f"{where}/{n}")


@pytest.fixture
def shipped_types() -> dict[str, AuthorizationDetailType]:
    """The example types as migrations 0005 and 0007 leave them (transactional tests elsewhere flush the rows)."""
    install_example_types()
    return {
        t.type: t for t in AuthorizationDetailType.objects.filter(type__in=["payment_initiation", "calendar_event"])
    }


def test_every_string_in_the_shipped_schemas_has_a_max_length_within_the_bound(shipped_types):
    assert set(shipped_types) == {"payment_initiation", "calendar_event"}
    for kind in shipped_types.values():
        for where, schema in _string_schemas(kind.schema):
            assert 0 < schema.get("maxLength", 0) <= rar.MAX_STRING_CHARS, (kind.type, where, schema)


def test_the_shipped_examples_still_pass(agent, approver, shipped_types):
    assert ask(agent, [PAYMENT]).status_code == 200
    assert ask(agent, [CALENDAR]).status_code == 200


def test_the_migration_leaves_an_admins_own_schema_alone(db):
    EXAMPLES.add_examples(apps, None)
    own = {"type": "object", "properties": {"type": {"const": "calendar_event"}}}
    AuthorizationDetailType.objects.filter(type="calendar_event").update(schema=own)

    BOUNDS.bound_example_strings(apps, None)

    assert AuthorizationDetailType.objects.get(type="calendar_event").schema == own
    payment = AuthorizationDetailType.objects.get(type="payment_initiation").schema
    assert payment["properties"]["instructedAmount"]["properties"]["currency"]["maxLength"] == 3


def test_the_migration_reverses_to_the_schemas_of_0005(db):
    EXAMPLES.add_examples(apps, None)
    BOUNDS.bound_example_strings(apps, None)

    BOUNDS.unbound_example_strings(apps, None)

    for example in EXAMPLES.EXAMPLES:
        assert AuthorizationDetailType.objects.get(type=example["type"]).schema == example["schema"]
