"""The approver's phone pages: the live inbox JSON, Web Push enrolment, service worker, manifest, icons, and the
templates' compatibility with a strict Content-Security-Policy (no inline script, style or event handlers)."""

from __future__ import annotations

import json
import re
import struct
import zlib
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from approvals import services
from tests import factories, prompting

pytestmark = pytest.mark.django_db

make_request = partial(factories.make_approval_request, scope="openid profile")
TEMPLATES_DIR = Path(settings.BASE_DIR) / "templates"


@pytest.fixture
def bob(db):
    return factories.make_approver("bob", email="bob@example.com")


# --- pending.json -----------------------------------------------------------------------------------------------------


def test_pending_json_lists_only_own_pending_requests_newest_first(agent, approver, approver_client, bob):
    oldest = make_request(approver, agent, created_ago=120, binding_message="oldest")
    newest = make_request(approver, agent, created_ago=10, binding_message="newest")
    middle = make_request(approver, agent, created_ago=60)
    make_request(bob, agent, binding_message="for bob")
    decided = make_request(approver, agent, binding_message="decided")
    services.approval_request_decide(approval_request_id=decided.pk, user=approver.user, approve=True)
    make_request(approver, agent, created_ago=400, binding_message="expired")  # 300 s lifetime

    response = approver_client.get("/approvals/pending.json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Cache-Control"] == "no-store"
    requests = response.json()["requests"]
    assert [r["id"] for r in requests] == [str(newest.pk), str(middle.pk), str(oldest.pk)]
    first = requests[0]
    assert set(first) == {"id", "agent", "binding_message", "scopes", "expires_at", "url"}
    assert first["agent"] == "Travel agent"
    assert first["binding_message"] == "newest"
    assert first["scopes"] == ["Confirm who you are", "See your name and username"]
    assert first["url"] == f"/approvals/{newest.pk}/"
    assert timezone.datetime.fromisoformat(first["expires_at"]) == newest.expires_at
    assert requests[1]["binding_message"] == ""
    assert newest.auth_req_id not in response.content.decode()


def test_pending_json_is_empty_without_requests(approver_client):
    assert approver_client.get("/approvals/pending.json").json() == {"requests": [], "count": 0, "page": 1, "pages": 1}


def test_pending_json_needs_sign_in(client):
    response = client.get("/approvals/pending.json")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_pending_json_refuses_post(approver_client):
    assert approver_client.post("/approvals/pending.json").status_code == 405


# --- the inbox and the request page -----------------------------------------------------------------------------------


def test_inbox_loads_its_script_and_links_to_enrolment(agent, approver, approver_client):
    make_request(approver, agent, binding_message="Pay 12")
    html = approver_client.get("/approvals/").content.decode()
    assert re.search(r'<script src="/static/approvals/inbox\.js" defer></script>', html)
    assert 'data-pending-url="/approvals/pending.json"' in html
    assert 'href="/approvals/devices/enrol/"' in html
    assert "See your name and username" in html  # scope descriptions, as pending.json gives them
    assert 'id="requests-empty" hidden' in html


def test_request_page_countdown_and_buttons(agent, approver, approver_client):
    approval_request = make_request(approver, agent, binding_message="Book LH 400")
    html = approver_client.get(f"/approvals/{approval_request.pk}/").content.decode()
    assert '<script src="/static/approvals/detail.js" defer></script>' in html
    assert f'data-expires-at="{approval_request.expires_at.isoformat()}"' in html
    assert 'data-expired-text="This request has expired"' in html
    assert "Check that the agent shows this same message" in html
    assert f'action="/approvals/{approval_request.pk}/decide/"' in html
    assert re.search(r'value="deny"[^>]*formnovalidate', html)


def test_request_page_without_binding_message_has_no_reminder(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    html = approver_client.get(f"/approvals/{approval_request.pk}/").content.decode()
    assert "Check that the agent shows this same message" not in html


def test_request_page_shows_only_a_verified_website(make_agent, approver, approver_client):
    verified = make_agent(name="Verified", website="https://www.example.com/about", website_verified=True)
    unverified = make_agent(name="Unverified", website="https://evil.example.net/", website_verified=False)
    shown = approver_client.get(f"/approvals/{make_request(approver, verified).pk}/").content.decode()
    hidden = approver_client.get(f"/approvals/{make_request(approver, unverified).pk}/").content.decode()
    assert "www.example.com" in shown and "verified" in shown
    assert "evil.example.net" not in hidden


def test_decided_request_shows_the_result_block(agent, approver, approver_client):
    approval_request = make_request(approver, agent)
    response = approver_client.post(f"/approvals/{approval_request.pk}/decide/", {"decision": "approve"}, follow=True)
    html = response.content.decode()
    assert 'class="state state-approved"' in html
    assert "You approved this request." in html
    assert "detail.js" not in html and 'name="decision"' not in html


def test_authorization_details_fallback_rendering():
    from django.template.loader import render_to_string

    details = [
        {
            "type": "payment_initiation",
            "items": ["a", "b"],  # a key named like a dict method must still be shown as data
            "instructedAmount": {"currency": "EUR", "amount": "123.50"},
            "creditor_name": "Merchant <A>",
            "recurring": False,
        }
    ]
    html = render_to_string(
        "approvals/detail.html",
        {
            "approval_request": {"binding_message": "", "created_at": timezone.now(), "pk": 1},
            "status": "pending",
            "is_pending": False,
            "scopes": [],
            "agent_name": "Agent",
            "authorization_details": details,
        },
    )
    assert "Payment initiation" in html
    # The agent's values each in their own delimited element (approvals.display), the separators the page's.
    assert "<dt>Items</dt>" in html and '<span class="data-value">a</span>, <span class="data-value">b</span>' in html
    assert "<dt>Creditor name</dt>" in html and '<span class="data-value">Merchant &lt;A&gt;</span>' in html
    assert "&quot;currency&quot;: &quot;EUR&quot;" in html  # nested values as JSON text, escaped
    assert "<dt>Recurring</dt>" in html and "<dd>no</dd>" in html


# --- Web Push enrolment -----------------------------------------------------------------------------------------------


def test_enrol_page(approver_client):
    response = approver_client.get("/approvals/devices/enrol/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<script src="/static/approvals/enrol.js" defer></script>' in html
    token = re.search(r'data-csrf-token="([^"]+)"', html)
    assert token and len(token.group(1)) >= 32
    assert 'data-devices-url="/approvals/devices/"' in html
    assert 'data-vapid-url="/approvals/devices/vapid-public-key/"' in html
    assert 'data-service-worker-url="/sw.js"' in html
    assert "Get approval requests on this phone" in html
    # The test settings prompt through locmem only: the page says at once that there is nothing to enrol.
    assert 'data-webpush-enabled="false"' in html
    assert '<p class="message error" id="enrol-status" role="status">Push notifications are not enabled' in html
    assert 'id="enrol-button"' not in html


def test_enrol_page_with_web_push_on(settings, approver_client):
    keys = prompting.vapid_keys()
    prompting.configure(
        settings, [prompting.LOCMEM, prompting.WEBPUSH], WEBPUSH=prompting.webpush_config(settings, keys)
    )
    html = approver_client.get("/approvals/devices/enrol/").content.decode()
    assert 'data-webpush-enabled="true"' in html
    assert 'id="enrol-button"' in html and 'id="devices"' in html
    # The message still travels in a data attribute, for a channel turned off after the page was rendered.
    assert 'data-msg-not-enabled="Push notifications are not enabled on this server."' in html
    assert approver_client.get("/approvals/devices/").json() == {"devices": []}


def test_enrol_csrf_token_is_accepted_by_the_devices_endpoint(approver):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver.user)
    html = browser.get("/approvals/devices/enrol/").content.decode()
    token = re.search(r'data-csrf-token="([^"]+)"', html).group(1)
    without = browser.post("/approvals/devices/", "{}", content_type="application/json")
    with_token = browser.post("/approvals/devices/", "{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert without.status_code == 403
    assert with_token.status_code in (400, 404)  # past CSRF: an invalid subscription, or Web Push not configured


def test_enrol_page_needs_sign_in(client):
    response = client.get("/approvals/devices/enrol/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


# --- service worker, manifest, icons ----------------------------------------------------------------------------------


def test_service_worker_is_served_from_the_root(client):
    response = client.get("/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/javascript"
    assert response["Service-Worker-Allowed"] == "/"
    assert "no-cache" in response["Cache-Control"]
    body = response.content.decode()
    assert 'addEventListener("push"' in body and 'addEventListener("notificationclick"' in body
    assert 'addEventListener("fetch"' not in body  # nothing is cached or served by the worker


def test_manifest(client):
    response = client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/manifest+json"
    manifest = json.loads(response.content)
    assert manifest["name"] == "Countersign"
    assert manifest["short_name"]
    assert manifest["start_url"] == "/approvals/"
    assert manifest["display"] == "standalone"
    assert manifest["theme_color"].startswith("#") and manifest["background_color"].startswith("#")
    sizes = {icon["sizes"]: icon["src"] for icon in manifest["icons"]}
    assert sizes == {"192x192": "/static/approvals/icon-192.png", "512x512": "/static/approvals/icon-512.png"}
    assert all(icon["type"] == "image/png" for icon in manifest["icons"])


def test_base_template_links_the_manifest(client):
    html = client.get("/accounts/login/").content.decode()
    assert '<link rel="manifest" href="/manifest.webmanifest">' in html
    assert '<meta name="theme-color"' in html


def _png_size(data: bytes) -> tuple[int, int]:
    """Parse a PNG fully enough to trust it: signature, chunk CRCs, IHDR, and IDAT inflating to the right size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, idat = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    assert depth == 8
    assert len(zlib.decompress(idat)) == height * (1 + width * channels)
    return width, height


@pytest.mark.parametrize("size", [192, 512])
def test_icons_are_pngs_of_their_size(client, size):
    path = finders.find(f"approvals/icon-{size}.png")
    assert path, "icon not found by the static files finders"
    assert _png_size(Path(path).read_bytes()) == (size, size)


# --- Content-Security-Policy compatibility ----------------------------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"""<[a-z][^>]*\sstyle\s*=""", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"""<[a-z][^>]*\son[a-z]+\s*=""", re.IGNORECASE)
STYLE_ELEMENT = re.compile(r"<style\b", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)
EXTERNAL_RESOURCE = re.compile(r"""<(script|link|img)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", re.IGNORECASE)


def _csp_violations(html: str) -> list[str]:
    problems = []
    for name, pattern in [
        ("inline <script>", INLINE_SCRIPT),
        ("style attribute", STYLE_ATTRIBUTE),
        ("event handler attribute", EVENT_HANDLER),
        ("<style> element", STYLE_ELEMENT),
        ("javascript: URL", JAVASCRIPT_URL),
        ("external resource", EXTERNAL_RESOURCE),
    ]:
        problems.extend(f"{name}: {match.group(0)[:80]}" for match in pattern.finditer(html))
    return problems


def test_csp_scanner_catches_violations():
    assert _csp_violations('<script>alert(1)</script><p style="x" onclick="y">')
    assert not _csp_violations('<script src="/static/a.js" defer></script><p data-on-x="1" class="one">')


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(TEMPLATES_DIR)) for p in TEMPLATES_DIR.rglob("*") if p.is_file())
)
def test_template_files_are_csp_safe(path):
    assert _csp_violations((TEMPLATES_DIR / path).read_text()) == []


def test_rendered_pages_are_csp_safe(agent, approver, approver_client):
    pending = make_request(approver, agent, binding_message="Pay 12")
    denied = make_request(approver, agent)
    services.approval_request_decide(approval_request_id=denied.pk, user=approver.user, approve=False)
    pages = [
        "/approvals/",
        f"/approvals/{pending.pk}/",
        f"/approvals/{denied.pk}/",
        "/approvals/devices/enrol/",
        "/approvals/user-code/",
    ]
    for path in pages:
        response = approver_client.get(path)
        assert response.status_code == 200, path
        assert _csp_violations(response.content.decode()) == [], path
    assert _csp_violations(Client().get("/accounts/login/").content.decode()) == []


def test_static_scripts_exist_and_use_no_html_sinks():
    for name in ("detail.js", "inbox.js", "enrol.js", "sw.js"):
        path = finders.find(f"approvals/{name}")
        assert path, name
        source = Path(path).read_text()
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "eval(" not in source, name


def test_expiry_is_not_in_the_past_for_a_fresh_request(agent, approver):
    # The countdown reads expires_at_iso; a fresh request must have time left on the server's clock.
    approval_request = make_request(approver, agent)
    assert approval_request.expires_at - timezone.now() > timedelta(seconds=200)


def test_password_is_required_only_for_approving(agent, approver):
    from approvals import links

    approval_request = make_request(approver, agent, acr_values=links.ACR_FRESH_PASSWORD)
    path = links.link_url(approval_request).removeprefix("http://testserver")
    html = Client().get(path, follow=True).content.decode()
    field = re.search(r"<input[^>]*name=\"password\"[^>]*>", html).group(0)
    assert 'type="password"' in field and 'autocomplete="current-password"' in field and "required" in field
    field_id = re.search(r'id="([^"]+)"', field).group(1)
    assert f'<label for="{field_id}">' in html
    assert f'action="/approvals/{approval_request.pk}/decide/"' in html
    assert re.search(r'value="deny"[^>]*formnovalidate', html)
    assert not re.search(r'value="approve"[^>]*formnovalidate', html)
