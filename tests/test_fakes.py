"""The loopback fakes, driven by the real ``twilio`` and ``pywebpush`` libraries.

No project code and no ``django_db`` marker: pytest-django blocks database access here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid, b64urlencode
from pywebpush import WebPushException, webpush
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.fakes.push_service import FakePushService
from tests.fakes.twilio import FakeTwilio, LoopbackTwilioHttpClient

FROM = "+15017122661"
TO = "+15558675310"


@pytest.fixture
def sms() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def twilio_client(fake: FakeTwilio, auth_token: str | None = None, **http_kwargs: float) -> Client:
    http = LoopbackTwilioHttpClient(fake.base_url, **http_kwargs)
    return Client(fake.account_sid, auth_token or fake.auth_token, http_client=http)


def vapid_keys() -> tuple[str, str]:
    """(raw b64url private key, b64url uncompressed public key), the forms a deployment keeps in env vars."""
    vapid = Vapid()
    vapid.generate_keys()
    private = b64urlencode(vapid.private_key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64urlencode(vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    return private, public


class TestFakeTwilio:
    def test_real_client_sends_sms_that_is_recorded(self, sms: FakeTwilio) -> None:
        client = twilio_client(sms)

        first = client.messages.create(to=TO, from_=FROM, body="Code 123456")
        second = client.messages.create(to=TO, messaging_service_sid="MG" + "b" * 32, body="Again")

        assert first.sid.startswith("SM") and len(first.sid) == 34 and first.sid != second.sid
        assert (first.status, first.to, first.from_, first.body) == ("queued", TO, FROM, "Code 123456")
        assert first.account_sid == sms.account_sid and first.num_segments == "1"
        assert first.date_created is not None and first.date_created.tzinfo is not None
        assert second.messaging_service_sid == "MG" + "b" * 32 and second.from_ is None
        received = sms.wait_for_messages(2, timeout=2)
        assert received[0].form == {"To": TO, "From": FROM, "Body": "Code 123456"}
        assert received[0].account_sid == sms.account_sid
        assert received[0].path == f"/2010-04-01/Accounts/{sms.account_sid}/Messages.json"
        assert received[0].authorization.startswith("Basic ")
        assert [a.mode for a in sms.attempts] == ["ok", "ok"] and sms.rejected == []

    def test_invalid_number_raises_twilio_rest_exception(self, sms: FakeTwilio) -> None:
        sms.respond_with("invalid_number")
        client = twilio_client(sms)

        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to="+1555", from_=FROM, body="x")

        assert (info.value.status, info.value.code) == (400, 21211)
        assert "not a valid phone number" in info.value.msg
        assert [(a.mode, a.status) for a in sms.attempts] == [("invalid_number", 400)] and sms.messages == []
        # Modes are used once: the next request is "ok" again.
        assert client.messages.create(to=TO, from_=FROM, body="x").status == "queued"

    @pytest.mark.parametrize(
        ("mode", "status", "code"),
        [("unsubscribed", 400, 21610), ("server_error", 500, 20500), ("rate_limited", 429, 20429)],
    )
    def test_error_modes(self, sms: FakeTwilio, mode: str, status: int, code: int) -> None:
        sms.respond_with(mode)

        with pytest.raises(TwilioRestException) as info:
            twilio_client(sms).messages.create(to=TO, from_=FROM, body="x")

        assert (info.value.status, info.value.code) == (status, code)

    def test_wrong_auth_token_is_rejected_not_recorded(self, sms: FakeTwilio) -> None:
        with pytest.raises(TwilioRestException) as info:
            twilio_client(sms, auth_token="wrong").messages.create(to=TO, from_=FROM, body="x")

        assert (info.value.status, info.value.code) == (401, 20003)
        assert sms.messages == [] and sms.attempts == []
        assert [(r.status, r.code) for r in sms.rejected] == [(401, 20003)]

    def test_hang_times_out_and_close_is_fast(self) -> None:
        fake = FakeTwilio(hang_seconds=30)
        try:
            fake.respond_with("hang")
            client = twilio_client(fake, timeout=0.5)
            started = time.monotonic()
            # twilio does not wrap transport errors: the requests exception comes through as is.
            with pytest.raises(requests.exceptions.ReadTimeout):
                client.messages.create(to=TO, from_=FROM, body="x")
            assert time.monotonic() - started < 2
            assert [a.mode for a in fake.wait_for_attempts(1, timeout=1)] == ["hang"]
        finally:
            started = time.monotonic()
            fake.close()
            assert time.monotonic() - started < 1
        assert fake.messages == []

    def test_late_answer_after_hang_seconds_still_sends(self) -> None:
        with FakeTwilio(hang_seconds=0.2) as fake:
            fake.respond_with("hang")
            message = twilio_client(fake, timeout=5).messages.create(to=TO, from_=FROM, body="x")
            assert message.status == "queued" and len(fake.messages) == 1

    def test_segments_follow_gsm7_and_ucs2_limits(self, sms: FakeTwilio) -> None:
        client = twilio_client(sms)
        counts = [
            client.messages.create(to=TO, from_=FROM, body=b).num_segments for b in ("a" * 161, "é" * 160, "ж" * 71)
        ]
        assert counts == ["2", "1", "2"]

    def test_wait_for_messages_reports_what_arrived(self, sms: FakeTwilio) -> None:
        with pytest.raises(AssertionError, match="expected 1 SMS within 0.05s, got 0"):
            sms.wait_for_messages(1, timeout=0.05)


class TestFakePushService:
    def test_real_webpush_arrives_decrypted_with_verified_claims(self) -> None:
        private, public = vapid_keys()
        with FakePushService(expected_vapid_public_key=public) as push:
            sub = push.subscribe("phone-1")
            assert sub.info["endpoint"] == f"{push.base_url}/push/phone-1"

            response = webpush(
                sub.info,
                data=json.dumps({"auth_req_id": "x1", "binding": "4821"}),
                vapid_private_key=private,
                vapid_claims={"sub": "mailto:ops@example.com"},
                ttl=60,
                timeout=5,
                headers={"Urgency": "high", "Topic": "approval"},
            )

            assert response.status_code == 201 and response.headers["Location"]
            [received] = push.wait_for_pushes(1, timeout=2)
            assert received.json() == {"auth_req_id": "x1", "binding": "4821"}
            assert received.endpoint == sub.endpoint and received.path == "/push/phone-1"
            assert received.vapid_public_key == public
            assert received.vapid_claims["aud"] == push.base_url
            assert received.vapid_claims["sub"] == "mailto:ops@example.com"
            assert received.headers == {
                "TTL": "60",
                "Urgency": "high",
                "Topic": "approval",
                "Content-Encoding": "aes128gcm",
            }
            assert push.rejected == []

    def test_gone_raises_webpush_exception_with_410(self) -> None:
        private, _ = vapid_keys()
        with FakePushService() as push:
            push.respond_with("gone")
            sub = push.subscribe()

            with pytest.raises(WebPushException) as info:
                webpush(sub.info, data="{}", vapid_private_key=private, vapid_claims={"sub": "mailto:ops@example.com"})

            assert info.value.response.status_code == 410
            assert [(a.mode, a.status) for a in push.attempts] == [("gone", 410)] and push.pushes == []

    @pytest.mark.parametrize(("mode", "status"), [("not_found", 404), ("server_error", 500), ("rate_limited", 429)])
    def test_error_modes_then_ok(self, mode: str, status: int) -> None:
        private, _ = vapid_keys()
        with FakePushService() as push:
            push.respond_with(mode)
            sub = push.subscribe()
            # py_vapid accepts an https sub only without a path ("https://example.com/contact" raises VapidException).
            claims = {"sub": "https://example.com"}

            with pytest.raises(WebPushException) as info:
                webpush(sub.info, data="{}", vapid_private_key=private, vapid_claims=dict(claims), timeout=5)
            assert info.value.response.status_code == status
            assert info.value.retry_after == ("1" if mode == "rate_limited" else None)

            webpush(sub.info, data="{}", vapid_private_key=private, vapid_claims=dict(claims), timeout=5)
            assert [a.mode for a in push.attempts] == [mode, "ok"] and len(push.pushes) == 1

    def test_jwt_signed_with_another_key_is_rejected(self) -> None:
        _, expected_public = vapid_keys()
        other_private, _ = vapid_keys()
        with FakePushService(expected_vapid_public_key=expected_public) as push:
            sub = push.subscribe()

            with pytest.raises(WebPushException) as info:
                webpush(
                    sub.info,
                    data="{}",
                    vapid_private_key=other_private,
                    vapid_claims={"sub": "mailto:ops@example.com"},
                    timeout=5,
                )

            assert info.value.response.status_code == 401
            [rejected] = push.rejected
            assert "is not the expected" in rejected.reason
            assert push.attempts == [] and push.pushes == []

    def test_unknown_endpoint_is_404(self) -> None:
        private, _ = vapid_keys()
        with FakePushService() as push:
            sub = push.subscribe()
            info = {**sub.info, "endpoint": f"{push.base_url}/push/nobody"}

            with pytest.raises(WebPushException) as exc:
                webpush(info, data="{}", vapid_private_key=private, vapid_claims={"sub": "mailto:a@example.com"})

            assert exc.value.response.status_code == 404
            assert [r.status for r in push.rejected] == [404]

    def test_wrong_audience_is_rejected(self) -> None:
        private, _ = vapid_keys()
        with FakePushService() as push:
            sub = push.subscribe()
            claims = {"sub": "mailto:ops@example.com", "aud": "http://127.0.0.1:1"}

            with pytest.raises(WebPushException) as info:
                webpush(sub.info, data="{}", vapid_private_key=private, vapid_claims=claims, timeout=5)

            assert info.value.response.status_code == 401
            assert "InvalidAudienceError" in push.rejected[0].reason

    def test_hang_times_out_and_close_is_fast(self) -> None:
        private, _ = vapid_keys()
        push = FakePushService(hang_seconds=30)
        try:
            push.respond_with("hang")
            sub = push.subscribe()
            with pytest.raises(requests.exceptions.ReadTimeout):
                webpush(
                    sub.info,
                    data="{}",
                    vapid_private_key=private,
                    vapid_claims={"sub": "mailto:a@example.com"},
                    timeout=0.5,
                )
            assert [a.mode for a in push.wait_for_attempts(1, timeout=1)] == ["hang"]
        finally:
            started = time.monotonic()
            push.close()
            assert time.monotonic() - started < 1
