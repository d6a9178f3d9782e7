"""The JSON endpoints a page uses to subscribe an approver's browser to Web Push prompts, and to list and remove it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from approvals.devices import push_subscription_save
from approvals.models import Approver, PushSubscription
from tests import prompting
from tests.fakes.push_service import FakePushService

pytestmark = pytest.mark.django_db

DEVICES = "/approvals/devices/"
VAPID_PUBLIC_KEY = "/approvals/devices/vapid-public-key/"
FCM_ENDPOINT = "https://fcm.googleapis.com/fcm/send/abc"
USER_AGENT = "Mozilla/5.0 (Android 15; Mobile; rv:140.0) Gecko/140.0 Firefox/140.0"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return prompting.vapid_keys()


@pytest.fixture
def webpush_on(settings: Any, keys: tuple[str, str]) -> tuple[str, str]:
    prompting.configure(
        settings, [prompting.LOCMEM, prompting.WEBPUSH], WEBPUSH=prompting.webpush_config(settings, keys)
    )
    return keys


@pytest.fixture
def push() -> Iterator[FakePushService]:
    with FakePushService() as fake:
        yield fake


@pytest.fixture
def person() -> Approver:
    return prompting.make_person()


@pytest.fixture
def http(person: Approver) -> Client:
    client = Client()
    client.force_login(person.user)
    return client


def post_json(http: Client, body: Any, **extra: Any) -> Any:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return http.post(DEVICES, raw, content_type="application/json", **extra)


def valid_info(endpoint: str = FCM_ENDPOINT) -> dict[str, Any]:
    return {"endpoint": endpoint, "keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": b64url(b"\x02" * 16)}}


# --- the public key ---------------------------------------------------------------------------------------------------


def test_vapid_public_key_is_served_when_webpush_is_on(webpush_on: tuple[str, str]) -> None:
    response = Client().get(VAPID_PUBLIC_KEY)

    assert response.status_code == 200
    assert response.json() == {"publicKey": webpush_on[1]}


def test_vapid_public_key_is_404_when_webpush_is_off(settings: Any, keys: tuple[str, str]) -> None:
    prompting.configure(settings, [prompting.LOCMEM], WEBPUSH=prompting.webpush_config(settings, keys))

    assert Client().get(VAPID_PUBLIC_KEY).status_code == 404


def test_devices_are_404_when_webpush_is_off(http: Client, push: FakePushService) -> None:
    assert post_json(http, push.subscribe().info).status_code == 404
    assert http.get(DEVICES).status_code == 404
    assert not PushSubscription.objects.exists()


# --- subscribing ------------------------------------------------------------------------------------------------------


def test_subscription_is_stored_for_the_logged_in_approver(
    webpush_on: Any, http: Client, person: Approver, push: FakePushService
) -> None:
    info = push.subscribe("phone").info

    response = post_json(http, info, HTTP_USER_AGENT=USER_AGENT)

    assert response.status_code == 201
    stored = PushSubscription.objects.get()
    assert (stored.approver, stored.endpoint, stored.info, stored.user_agent) == (
        person,
        info["endpoint"],
        info,
        USER_AGENT,
    )
    assert response.json() == {
        "id": stored.pk,
        "service": "127.0.0.1",
        "user_agent": USER_AGENT,
        "created_at": stored.created_at.isoformat(),
        "last_success_at": None,
        "disabled": False,
    }


def test_subscribing_needs_the_csrf_token(webpush_on: Any, person: Approver, push: FakePushService) -> None:
    http = Client(enforce_csrf_checks=True)
    http.force_login(person.user)
    info = push.subscribe().info

    refused = post_json(http, info)

    assert refused.status_code == 403
    assert not PushSubscription.objects.exists()

    http.get("/approvals/user-code/")  # any page with a form sets the cookie
    accepted = post_json(http, info, HTTP_X_CSRFTOKEN=http.cookies["csrftoken"].value)
    assert accepted.status_code == 201


def test_anonymous_visitors_are_sent_to_log_in(webpush_on: Any, push: FakePushService) -> None:
    for response in (post_json(Client(), push.subscribe().info), Client().get(DEVICES)):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=/approvals/devices/")
    assert not PushSubscription.objects.exists()


def test_endpoint_on_an_allowed_push_service_is_accepted(webpush_on: Any, http: Client) -> None:
    response = post_json(http, valid_info(FCM_ENDPOINT))

    assert response.status_code == 201, response.content
    assert response.json()["service"] == "fcm.googleapis.com"


def test_subdomain_of_an_allowed_suffix_is_accepted(webpush_on: Any, http: Client) -> None:
    response = post_json(http, valid_info("https://db5p.notify.windows.com/w/?token=abc"))

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param("http://push.example.com/push/abc", id="http-not-loopback"),
        pytest.param("http://localhost:8080/push/abc", id="http-localhost-name"),
        pytest.param("http://10.0.0.7/push/abc", id="http-private-ip"),
        pytest.param("https://push.example.com/push/abc", id="https-unknown-service"),
        pytest.param("https://127.0.0.1/push/abc", id="https-loopback-not-a-service"),
        pytest.param("https://fcm.googleapis.com.evil.example/fcm/send/abc", id="allowed-name-as-prefix"),
        pytest.param("https://evilnotify.windows.com/w/", id="suffix-without-dot"),
        pytest.param("https://user:secret@fcm.googleapis.com/fcm/send/abc", id="credentials"),
        pytest.param("https://fcm.googleapis.com@evil.example/fcm/send/abc", id="allowed-name-as-username"),
        pytest.param("ftp://fcm.googleapis.com/fcm/send/abc", id="ftp"),
        pytest.param("", id="empty"),
        pytest.param(17, id="not-a-string"),
        pytest.param("https://fcm.googleapis.com/" + "a" * 2048, id="too-long"),
    ],
)
def test_endpoint_the_workers_must_not_post_to_is_refused(webpush_on: Any, http: Client, endpoint: Any) -> None:
    response = post_json(http, valid_info(endpoint))

    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not PushSubscription.objects.exists()


def test_loopback_http_is_refused_unless_allowed(
    settings: Any, keys: tuple[str, str], http: Client, push: FakePushService
) -> None:
    webpush = prompting.webpush_config(settings, keys, ALLOW_LOOPBACK_HTTP=False)
    prompting.configure(settings, [prompting.WEBPUSH], WEBPUSH=webpush)

    response = post_json(http, push.subscribe().info)

    assert response.status_code == 400
    assert "https" in response.json()["error"]
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "keys_json",
    [
        pytest.param({"p256dh": b64url(b"\x04" + b"\x01" * 63), "auth": b64url(b"\x02" * 16)}, id="p256dh-short"),
        pytest.param({"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": b64url(b"\x02" * 15)}, id="auth-short"),
        pytest.param({"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": b64url(b"\x02" * 32)}, id="auth-long"),
        pytest.param({"p256dh": "not base64url!", "auth": b64url(b"\x02" * 16)}, id="p256dh-not-base64"),
        pytest.param(
            {"p256dh": "@@@@" + b64url(b"\x04" + b"\x01" * 64), "auth": b64url(b"\x02" * 16)}, id="p256dh-junk-chars"
        ),
        pytest.param(
            {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": "+/+/" + b64url(b"\x02" * 13)}, id="auth-std-base64"
        ),
        pytest.param({"p256dh": b64url(b"\x04" + b"\x01" * 64)}, id="auth-missing"),
        pytest.param({"p256dh": 65, "auth": b64url(b"\x02" * 16)}, id="p256dh-not-a-string"),
        pytest.param("p256dh", id="keys-not-an-object"),
        pytest.param(None, id="keys-null"),
    ],
)
def test_bad_keys_are_refused(webpush_on: Any, http: Client, keys_json: Any) -> None:
    response = post_json(http, {"endpoint": FCM_ENDPOINT, "keys": keys_json})

    assert response.status_code == 400, response.content
    assert "keys" in response.json()["error"]
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"endpoint=https://fcm.googleapis.com", id="not-json"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"https://fcm.googleapis.com/fcm/send/abc"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"[" * 4000 + b"]" * 4000, id="deeply-nested"),
    ],
)
def test_body_that_is_not_a_json_object_is_refused(webpush_on: Any, http: Client, body: bytes) -> None:
    response = post_json(http, body)

    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert not PushSubscription.objects.exists()


def test_too_large_body_is_refused(webpush_on: Any, http: Client) -> None:
    info = {**valid_info(), "padding": "x" * 9000}

    response = post_json(http, info)

    assert response.status_code == 413
    assert not PushSubscription.objects.exists()


def test_an_endpoint_held_by_another_approver_is_refused_not_moved(
    webpush_on: Any, http: Client, person: Approver, push: FakePushService
) -> None:
    """Issue 15 finding 5: knowing someone's endpoint must not let one move their prompts onto one's own keys."""
    sub = push.subscribe("shared-browser")
    bob = prompting.make_person("bob", phone="")
    old = push_subscription_save(approver=bob, subscription=sub.info, user_agent="old")
    PushSubscription.objects.filter(pk=old.pk).update(disabled_at=old.created_at, disabled_reason="HTTP 410")

    response = post_json(http, sub.info, HTTP_USER_AGENT="new")

    assert response.status_code == 400
    assert "another account" in response.json()["error"]
    [stored] = PushSubscription.objects.all()
    assert (stored.pk, stored.approver, stored.user_agent) == (old.pk, bob, "old")


def test_resubscribing_reenables_the_approvers_own_endpoint(
    webpush_on: Any, http: Client, person: Approver, push: FakePushService
) -> None:
    sub = push.subscribe("phone")
    old = push_subscription_save(approver=person, subscription=sub.info, user_agent="old")
    PushSubscription.objects.filter(pk=old.pk).update(disabled_at=old.created_at, disabled_reason="HTTP 410")

    response = post_json(http, sub.info, HTTP_USER_AGENT="new")

    assert response.status_code == 201
    [stored] = PushSubscription.objects.all()
    assert stored.pk == old.pk
    assert (stored.approver, stored.disabled_at, stored.disabled_reason, stored.user_agent) == (person, None, "", "new")


# --- listing and removing ---------------------------------------------------------------------------------------------


def test_list_shows_only_the_approvers_own_devices(
    webpush_on: Any, http: Client, person: Approver, push: FakePushService
) -> None:
    mine = push_subscription_save(approver=person, subscription=push.subscribe().info, user_agent="mine")
    push_subscription_save(
        approver=prompting.make_person("bob", phone=""), subscription=push.subscribe().info, user_agent="bob's"
    )

    response = http.get(DEVICES)

    assert response.status_code == 200
    assert [(d["id"], d["user_agent"]) for d in response.json()["devices"]] == [(mine.pk, "mine")]


def test_list_is_empty_for_a_user_without_devices(webpush_on: Any, push: FakePushService) -> None:
    user = prompting.make_person("carol", phone="").user
    http = Client()
    http.force_login(user)

    assert http.get(DEVICES).json() == {"devices": []}


def test_removing_own_device(webpush_on: Any, http: Client, person: Approver, push: FakePushService) -> None:
    mine = push_subscription_save(approver=person, subscription=push.subscribe().info)

    response = http.post(f"/approvals/devices/{mine.pk}/remove/")

    assert response.status_code == 204
    assert not PushSubscription.objects.exists()


def test_removing_another_persons_device_is_404(
    webpush_on: Any, http: Client, person: Approver, push: FakePushService
) -> None:
    theirs = push_subscription_save(approver=prompting.make_person("bob", phone=""), subscription=push.subscribe().info)

    response = http.post(f"/approvals/devices/{theirs.pk}/remove/")

    assert response.status_code == 404
    assert PushSubscription.objects.filter(pk=theirs.pk).exists()
    assert http.post("/approvals/devices/999999/remove/").status_code == 404


def test_removing_needs_post_and_login(webpush_on: Any, http: Client, person: Approver, push: FakePushService) -> None:
    mine = push_subscription_save(approver=person, subscription=push.subscribe().info)
    path = f"/approvals/devices/{mine.pk}/remove/"

    assert http.get(path).status_code == 405
    assert Client().post(path).status_code == 302
    assert PushSubscription.objects.filter(pk=mine.pk).exists()
