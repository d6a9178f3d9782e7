"""The audit export from the admin (authz.review.export): a date range of audit events as CSV or JSON lines,
streamed, formula-safe, for those who may view audit events."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.http import StreamingHttpResponse
from django.test import Client

from approvals.models import ApprovalRequest, AuditEvent
from authz.review import export
from tests import factories

pytestmark = pytest.mark.django_db

LIST = "/admin/approvals/auditevent/"
EXPORT = "/admin/approvals/auditevent/export/"
Kind = AuditEvent.Kind
DAY = datetime(2026, 12, 5, tzinfo=UTC)  # the server's time zone is UTC (settings.TIME_ZONE)


def signed_in(user: Any) -> Client:
    http = Client()
    http.force_login(user)
    return http


def event(approval_request: ApprovalRequest, kind: str, at: datetime, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(request=approval_request, kind=kind, at=at, detail=detail)


def body(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def viewer():
    return factories.make_staff("vera", "viewer")


@pytest.fixture
def days(agent, approver):
    """Events on 4, 5 (at its first and last second) and 6 December."""
    approval_request = factories.make_approval_request(approver, agent)
    AuditEvent.objects.all().delete()
    return {
        "before": event(approval_request, Kind.CREATED, DAY - timedelta(seconds=1)),
        "first": event(approval_request, Kind.PROMPTED, DAY, channel="sms", destinations=["sms:+14155550123"]),
        "last": event(approval_request, Kind.APPROVED, DAY + timedelta(days=1, seconds=-1)),
        "after": event(approval_request, Kind.CONSUMED, DAY + timedelta(days=1)),
    }


def test_the_list_links_to_the_export(admin_client):
    response = admin_client.get(LIST)
    assert response.status_code == 200
    assert f'href="{EXPORT}"' in response.content.decode()


def test_the_form(admin_client):
    response = admin_client.get(EXPORT)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'type="date"' in html and 'name="start"' in html and 'name="end"' in html
    assert 'value="csv"' in html and 'value="jsonl"' in html
    assert "<script" not in html.split("</head>")[1]


def test_csv_of_a_day(admin_client, days, agent):
    response = admin_client.get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="audit-events-2026-12-05-to-2026-12-05.csv"'
    assert "no-store" in response["Cache-Control"]
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [int(row["id"]) for row in rows] == [days["first"].pk, days["last"].pk]
    first = rows[0]
    assert list(first) == ["id", "at", "kind", "request", "agent", "agent_name", "approver", "actor", "detail"]
    assert first["kind"] == "prompted" and first["agent"] == agent.client_id and first["agent_name"] == "Travel agent"
    assert first["approver"] == "alice" and first["actor"] == ""
    assert datetime.fromisoformat(first["at"]) == DAY
    assert json.loads(first["detail"]) == {"channel": "sms", "destinations": ["sms:+14155550123"]}


def test_jsonl_of_a_range_is_what_the_api_says(admin_client, days, viewer):
    response = admin_client.get(EXPORT, {"start": "2026-12-04", "end": "2026-12-05", "format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    lines = body(response).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["id"] for row in rows] == [days["before"].pk, days["first"].pk, days["last"].pk]
    api = signed_in(viewer).get("/api/review/audit-events/", {"until": "2026-12-06"}).json()["results"]
    assert rows == api


def test_large_exports_stream_in_batches(admin_client, agent, approver, monkeypatch):
    approval_request = factories.make_approval_request(approver, agent)
    AuditEvent.objects.all().delete()
    # Equal timestamps across batch boundaries: the keyset walk must neither repeat nor skip them.
    made = [event(approval_request, Kind.PROMPTED, DAY + timedelta(seconds=n // 3)).pk for n in range(25)]
    monkeypatch.setattr(export, "BATCH_SIZE", 4)
    response = admin_client.get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "jsonl"})
    assert isinstance(response, StreamingHttpResponse)
    chunks = [chunk.decode() for chunk in response.streaming_content]
    assert len(chunks) == 7  # one per batch of 4
    assert [json.loads(line)["id"] for line in "".join(chunks).splitlines()] == made


def test_csv_cells_never_start_a_formula(admin_client, make_agent, approver):
    hostile = make_agent(name='=HYPERLINK("https://evil.example")')
    approval_request = factories.make_approval_request(approver, hostile)
    AuditEvent.objects.all().delete()
    event(approval_request, Kind.PROMPT_FAILED, DAY, errors=["x"])
    approver.user.username = "@cmd"
    approver.user.save()
    response = admin_client.get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "csv"})
    (row,) = list(csv.DictReader(io.StringIO(body(response))))
    assert row["agent_name"] == '\'=HYPERLINK("https://evil.example")'
    assert row["approver"] == "'@cmd"
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"])
def test_the_csv_cell_rule(value):
    assert export.csv_cell(value) == "'" + value
    assert export.csv_cell("plain =") == "plain ="
    assert export.csv_cell(None) == ""
    assert export.csv_cell({"b": 1, "a": "x"}) == '{"a": "x", "b": 1}'


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"start": "2026-12-06", "end": "2026-12-05", "format": "csv"}, "before the start"),
        ({"start": "yesterday", "end": "2026-12-05", "format": "csv"}, "Enter a valid date"),
        ({"start": "2026-12-05", "end": "9999-12-31", "format": "csv"}, "between 1970 and 9998"),
        ({"start": "2026-12-05", "end": "2026-12-05", "format": "xlsx"}, "Select a valid choice"),
        ({"start": "2026-12-05"}, "This field is required"),
    ],
)
def test_bad_ranges_show_the_form_again(admin_client, params, error):
    response = admin_client.get(EXPORT, params)
    assert response.status_code == 200
    assert not isinstance(response, StreamingHttpResponse)
    assert error in response.content.decode()


@pytest.mark.parametrize(("groups", "status"), [(("viewer",), 200), (("operator",), 200), ((), 403)])
def test_who_may_export(days, groups, status):
    user = factories.make_staff("sam", *groups)
    response = signed_in(user).get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "csv"})
    assert response.status_code == status


def test_people_who_are_not_staff_are_sent_to_sign_in(client, approver, days):
    approver.user.groups.add(Group.objects.get(name="viewer"))
    for http in (client, signed_in(approver.user)):
        response = http.get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "csv"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_an_export_is_logged_with_who_took_it(admin_client, days, caplog):
    with caplog.at_level("INFO", logger="authz.review.export"):
        body(admin_client.get(EXPORT, {"start": "2026-12-05", "end": "2026-12-05", "format": "csv"}))
    assert "Audit events exported by admin: 2026-12-05 to 2026-12-05 as csv" in caplog.text
