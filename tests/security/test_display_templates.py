"""Issue 15 item 7c: an administrator's display template runs in a restricted engine (approvals.display.display_engine):
no {% load %}, no tag or filter beyond a small safe set, autoescape on, and the agent's values cannot be marked
safe. The admin form refuses anything else with a clear message, and a template stored some other way that breaks
the rules falls back to the generic rows at render time."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.display import display_engine
from approvals.templatetags.approver_ui import displayed_details
from authz.admin import AuthorizationDetailTypeForm
from authz.models import AuthorizationDetailType
from authz.tokens import details as rar

pytestmark = pytest.mark.django_db


def type_form(template: str) -> AuthorizationDetailTypeForm:
    return AuthorizationDetailTypeForm(
        data={
            "type": "delivery",
            "name": "Delivery",
            "description": "",
            "schema": '{"type": "object"}',
            "display_template": template,
            "enabled": "on",
        }
    )


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{% load static %}{% static 'x' %}", id="load"),
        pytest.param("{% load approver_ui %}{{ detail.start|iso_datetime }}", id="load-our-own-library"),
        pytest.param("{{ detail.note|safe }}", id="safe"),
        pytest.param("{% autoescape off %}{{ detail.note }}{% endautoescape %}", id="autoescape-off"),
        pytest.param("{% include 'base.html' %}", id="include"),
        pytest.param("{% extends 'base.html' %}", id="extends"),
        pytest.param("{% debug %}", id="debug"),
        pytest.param("{% csrf_token %}", id="csrf"),
        pytest.param("{% url 'admin:index' %}", id="url"),
        pytest.param("{{ detail.note|safeseq }}", id="safeseq"),
        pytest.param("{{ detail.note|pprint }}", id="pprint"),
    ],
)
def test_the_admin_refuses_tags_and_filters_outside_the_safe_set(template: str) -> None:
    form = type_form(template)

    assert not form.is_valid()
    [message] = form.errors["display_template"]
    assert "not allowed" in message or "does not compile" in message


def test_the_allowed_set_still_makes_a_useful_template() -> None:
    template = (
        '<p class="detail-summary">{% if "delete" in detail.actions %}Delete{% else %}Create{% endif %} '
        "{{ detail.title|default:'-' }} at {{ detail.start|iso_datetime }}</p>"
        "{% for who in detail.attendees %}{{ who }}{% if not forloop.last %}, {% endif %}{% endfor %}"
        '{{ detail.attendees|join:", " }} {{ detail.amount|length }} {% with t=detail.title %}{{ t }}{% endwith %}'
    )

    assert rar.template_errors(template) == []
    assert type_form(template).is_valid()


def test_a_stored_template_that_breaks_the_rules_shows_the_generic_rows() -> None:
    # Saved other than through the admin (a migration, the shell): refused again at render time.
    AuthorizationDetailType.objects.create(
        type="sneaky", name="Sneaky", schema={}, display_template="{% load static %}<p>{{ detail.note|safe }}</p>"
    )

    [shown] = displayed_details([{"type": "sneaky", "note": "<b>x</b>"}])

    assert shown.html == ""


def test_client_values_are_escaped_and_cannot_be_marked_safe_at_render_time() -> None:
    AuthorizationDetailType.objects.create(
        type="plainer", name="Plainer", schema={}, display_template="<p>{{ detail.note }} {{ detail.list|join:'' }}</p>"
    )
    detail: dict[str, Any] = {"type": "plainer", "note": "<b>x</b>", "list": ["<i>", "</i>"]}

    [shown] = displayed_details([detail])

    assert "<b>" not in shown.html and "&lt;b&gt;x&lt;/b&gt;" in shown.html
    assert "<i>" not in shown.html


def test_the_engine_has_no_loaders_and_no_libraries() -> None:
    engine = display_engine()

    assert engine.template_libraries == {}
    assert engine.autoescape is True
    assert engine.loaders == [] or engine.template_loaders == []
