"""Fuzzing every endpoint (issue 14, "Keep them closed"): malformed and boundary input never gets a 5xx, and nothing is
left half-written.

Each test draws requests with hypothesis (parameters of the endpoint and others, hostile values: NUL, non-ASCII,
bidi controls, very long strings, broken JSON, unparsable URLs; valid credentials most of the time so that the
checks behind authentication run too) and sends them through Django's test client on PostgreSQL. After every request
the database must hold no approval request without its audit trail and no client without its CIBA settings; each
example's writes are then rolled back, so examples do not depend on each other.

`make test` runs a short fixed set (derandomized, the same examples every run); `make fuzz` runs a long random one
(COUNTERSIGN_FUZZ_EXAMPLES examples per endpoint). A failure prints the request that got the 5xx.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from oauth2_provider.models import get_application_model
from twilio.request_validator import RequestValidator
from urllib3.util import parse_url

from approvals import links
from approvals.conf import approvals_settings
from approvals.models import ApprovalRequest, AuditEvent, Delivery
from authz.clients.registration import initial_access_token_create
from tests import factories, prompting
from tests.conftest import CIBA, FORM, Agent

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.redis]

# Hypothesis keeps caches (Unicode tables, constants of the code under test) on disk: under var/, like all test output.
set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / "var" / "hypothesis")

LONG_RUN = int(os.environ.get("COUNTERSIGN_FUZZ_EXAMPLES", "0"))
FUZZ = hypothesis_settings(
    max_examples=LONG_RUN or 40,
    # The short run is the same every time (CI stays stable); the long one explores.
    derandomize=not LONG_RUN,
    deadline=None,
    database=None,  # nothing written into the checkout
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
AUTOMATED_SECRET = "fuzz-automated-" + "s" * 32
TWILIO_TOKEN = "fuzz-twilio-auth-token"

# --- values -----------------------------------------------------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "%00",
        "\r\n",
        "\u202e\u2066",  # bidi controls
        "\ufeff",
        "é",
        "😀",
        "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
        "x" * 5000,
        "-1",
        "0",
        "4294967296",
        "1e309",
        "NaN",
        "null",
        "true",
        "[]",
        "{}",
        '{"a":',
        "[1,",
        '[{"type": []}]',
        '[{"type": {"a": 1}}]',
        "http://[",
        "https://[::1",
        "https://payments.example/",
        "https://user:pw@host:99999/",
        "openid",
        "openid profile email phone offline_access introspection",
        "alice",
        "+14155550123",
        "eyJhbGciOiJub25lIn0.e30.",
        "eyJ.eyJ.",
        "a.b.c",
        "urn:openid:params:grant-type:ciba",
        "urn:ietf:params:oauth:token-type:access_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
)
TEXT = st.one_of(HOSTILE, st.text(max_size=80), st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=300))
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
# Header values travel as latin-1 in WSGI: every byte, none beyond.
LATIN1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200)


def form(names: list[str], base: dict[str, str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Form parameters: the endpoint's names (and others) with hostile values, over a valid request or not, with
    repeats or with the fuzzed values replacing the valid ones."""
    pair = st.tuples(st.sampled_from(names) | st.text(max_size=12), TEXT)
    extra = st.lists(pair, max_size=6)
    return st.one_of(
        extra,
        extra.map(lambda pairs: [*base.items(), *pairs]),
        extra.map(lambda pairs: list({**base, **dict(pairs)}.items())),
    )


def encode(pairs: list[tuple[str, str]]) -> str:
    return urlencode([(name, value.encode("utf-8", "surrogatepass")) for name, value in pairs])


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def authorization(valid: str) -> st.SearchStrategy[str | None]:
    """The valid Authorization header most of the time; otherwise none, garbage, or Basic/Bearer of hostile bytes."""
    return st.one_of(
        st.just(valid),
        st.just(valid),
        st.none(),
        LATIN1,
        LATIN1.map(lambda raw: "Basic " + raw),
        st.binary(max_size=80).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
        LATIN1.map(lambda raw: "Basic " + base64.b64encode(raw.encode("latin-1")).decode()),
        LATIN1.map(lambda raw: "Bearer " + raw),
    )


# --- sending and checking ---------------------------------------------------------------------------------------------


class _Undo(Exception):
    pass


def assert_nothing_half_written() -> None:
    """What must hold after any request, however it ended."""
    Application = get_application_model()
    assert not Application.objects.filter(ciba__isnull=True).exists(), "a client without its CibaClient"
    Kind = AuditEvent.Kind
    Status = ApprovalRequest.Status
    assert not ApprovalRequest.objects.exclude(events__kind=Kind.CREATED).exists(), "a request never audited"
    for status, kind in (
        (Status.APPROVED, Kind.APPROVED),
        (Status.DENIED, Kind.DENIED),
        (Status.CANCELLED, Kind.CANCELLED),
        (Status.CONSUMED, Kind.CONSUMED),
    ):
        assert not ApprovalRequest.objects.filter(status=status).exclude(events__kind=kind).exists(), (
            f"a {status} request without its {kind} event"
        )
    assert not ApprovalRequest.objects.filter(status=Status.CONSUMED, consumed_at__isnull=True).exists()
    assert not ApprovalRequest.objects.filter(
        status__in=(Status.APPROVED, Status.DENIED), decided_at__isnull=True
    ).exists(), "a decision without its time"


def send(http: Client, method: str, path: str, *, body: bytes | str = b"", content_type: str = FORM, **headers: Any):
    """One request, its 5xx-freedom and the database's consistency checked, then its writes rolled back."""
    cache.clear()  # lockouts and pacing from earlier examples must not hide the code behind them
    meta = {name: value for name, value in headers.items() if value is not None}
    described = f"{method} {path!r} body={body!r:.2000} headers={meta!r:.500}"
    try:
        with transaction.atomic():
            if method in ("get", "delete", "options"):
                response = getattr(http, method)(path, **meta)
            else:
                response = getattr(http, method)(path, body, content_type=content_type, **meta)
            assert response.status_code < 500, f"{response.status_code} for {described}"
            assert_nothing_half_written()
            raise _Undo
    except _Undo:
        pass
    return response


# --- fixtures ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def http() -> Client:
    # A 500 comes back as a response to assert on, not as the view's exception.
    return Client(raise_request_exception=False)


@pytest.fixture
def scene(db: Any, settings: Any) -> dict[str, Any]:
    """An approver with a user code, an agent of every kind, and requests in every state."""
    settings.APPROVALS = {
        **settings.APPROVALS,
        "AUTOMATED_APPROVAL_SECRET": AUTOMATED_SECRET,
        "TWILIO": {**settings.APPROVALS["TWILIO"], "AUTH_TOKEN": TWILIO_TOKEN, "ACCOUNT_SID": "AC" + "0" * 32},
        "PROMPT_CHANNELS": [prompting.LOCMEM, prompting.WEBPUSH],
        "WEBPUSH": prompting.webpush_config(settings, prompting.vapid_keys()),
    }
    approver = factories.make_approver("alice", email="alice@example.com", phone="+14155550123", user_code="4242-fuzz")
    application, secret = factories.make_agent_client(
        name="Fuzz agent", client_credentials_enabled=True, token_exchange_enabled=True
    )
    agent = Agent(application.client_id, secret, Client(), application)
    pending = factories.make_approval_request(approver, agent, scope="openid profile")
    approved = factories.decide(factories.make_approval_request(approver, agent).auth_req_id)
    redeemed = factories.decide(factories.make_approval_request(approver, agent).auth_req_id)
    tokens = agent.poll(redeemed.auth_req_id).json()
    assert "access_token" in tokens, tokens
    delivery = Delivery.objects.create(
        request=pending, channel="sms", destination="sms:+14155550123", status=Delivery.Status.SENT
    )
    return {
        "approver": approver,
        "agent": agent,
        "pending": pending,
        "approved": approved,
        "tokens": tokens,
        "delivery": delivery,
        "link": links.link_url(pending).removeprefix("http://testserver"),
        "basic": basic(agent.client_id, agent.client_secret),
    }


@pytest.fixture
def registered(db: Any, scene: dict[str, Any]) -> Iterator[dict[str, Any]]:
    initial = initial_access_token_create(expires_in=3600)
    metadata = {"client_name": "Fuzz bot", "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll"}
    response = Client().post(
        "/oauth/register/",
        json.dumps(metadata),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {initial}",
    )
    assert response.status_code == 201, response.content
    yield {**response.json(), "initial": initial, "metadata": metadata}


# --- the endpoints ----------------------------------------------------------------------------------------------------

BC_NAMES = [
    "scope",
    "login_hint",
    "login_hint_token",
    "id_token_hint",
    "binding_message",
    "user_code",
    "requested_expiry",
    "acr_values",
    "client_notification_token",
    "authorization_details",
    "request",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
]


def test_bc_authorize(http: Client, scene: dict[str, Any]) -> None:
    base = {"scope": "openid", "login_hint": "alice", "user_code": "4242-fuzz", "binding_message": "Order 4711"}

    @FUZZ
    @given(params=form(BC_NAMES, base), auth=authorization(scene["basic"]), raw=st.none() | st.binary(max_size=300))
    def run(params: list[tuple[str, str]], auth: str | None, raw: bytes | None) -> None:
        body = raw if raw is not None else encode(params)
        send(http, "post", "/oauth/bc-authorize/", body=body, HTTP_AUTHORIZATION=auth)

    run()


TOKEN_NAMES = [
    "grant_type",
    "auth_req_id",
    "refresh_token",
    "scope",
    "resource",
    "audience",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "authorization_details",
    "device_code",
    "code",
    "redirect_uri",
    "code_verifier",
    "username",
    "password",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
]
GRANT_TYPES = [
    CIBA,
    "refresh_token",
    "client_credentials",
    TOKEN_EXCHANGE,
    "authorization_code",
    "password",
    "implicit",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
]


def test_token_endpoint_for_every_grant(http: Client, scene: dict[str, Any]) -> None:
    tokens = scene["tokens"]
    bases = {
        CIBA: {"auth_req_id": scene["approved"].auth_req_id},
        "refresh_token": {"refresh_token": tokens["refresh_token"]},
        "client_credentials": {"scope": "introspection"},
        TOKEN_EXCHANGE: {
            "subject_token": tokens["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "resource": "https://payments.example/",
        },
    }

    @FUZZ
    @given(
        grant_type=st.sampled_from(GRANT_TYPES) | TEXT,
        data=st.data(),
        auth=authorization(scene["basic"]),
    )
    def run(grant_type: str, data: st.DataObject, auth: str | None) -> None:
        params = data.draw(form(TOKEN_NAMES, {"grant_type": grant_type, **bases.get(grant_type, {})}))
        send(http, "post", "/oauth/token/", body=encode(params), HTTP_AUTHORIZATION=auth)

    run()


@pytest.mark.parametrize("path", ["/oauth/introspect/", "/oauth/revoke/"])
def test_introspection_and_revocation(http: Client, scene: dict[str, Any], path: str) -> None:
    tokens = scene["tokens"]
    token = st.sampled_from([tokens["access_token"], tokens["refresh_token"], tokens["id_token"]]) | TEXT
    bearer = f"Bearer {tokens['access_token']}"

    @FUZZ
    @given(
        token=token,
        params=form(["token", "token_type_hint", "client_id", "client_secret"], {}),
        auth=authorization(scene["basic"]) | st.just(bearer),
        method=st.sampled_from(["post", "post", "get", "put"]),
    )
    def run(token: str, params: list[tuple[str, str]], auth: str | None, method: str) -> None:
        body = encode([("token", token), *params])
        if method == "get":
            send(http, "get", f"{path}?{body}", HTTP_AUTHORIZATION=auth)
        else:
            send(http, method, path, body=body, HTTP_AUTHORIZATION=auth)

    run()


def test_userinfo(http: Client, scene: dict[str, Any]) -> None:
    access = scene["tokens"]["access_token"]

    @FUZZ
    @given(
        auth=authorization(f"Bearer {access}"),
        query=form(["access_token", "scope", "claims"], {}),
        method=st.sampled_from(["get", "post"]),
    )
    def run(auth: str | None, query: list[tuple[str, str]], method: str) -> None:
        path = f"/oauth/userinfo/?{encode(query)}"
        if method == "get":
            send(http, "get", path, HTTP_AUTHORIZATION=auth)
        else:
            send(http, "post", path, body=encode(query), HTTP_AUTHORIZATION=auth)

    run()


REGISTRATION_NAMES = [
    "client_name",
    "client_uri",
    "grant_types",
    "redirect_uris",
    "scope",
    "token_endpoint_auth_method",
    "token_endpoint_auth_signing_alg",
    "backchannel_token_delivery_mode",
    "backchannel_client_notification_endpoint",
    "backchannel_authentication_request_signing_alg",
    "backchannel_user_code_parameter",
    "jwks",
    "jwks_uri",
    "id_token_signed_response_alg",
    "authorization_details_types",
    "client_id",
    "client_secret",
]
JWK = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["RSA", "EC", "OKP", "oct"]) | JSON_VALUES,
        "crv": st.sampled_from(["P-256", "Ed25519", "X25519"]) | JSON_VALUES,
        "kid": TEXT | JSON_VALUES,
        "alg": st.sampled_from(["ES256", "RS256", "EdDSA", "none", "HS256"]) | JSON_VALUES,
        "use": st.sampled_from(["sig", "enc"]) | JSON_VALUES,
        "x": TEXT,
        "y": TEXT,
        "n": TEXT,
        "e": TEXT,
        "d": TEXT,
    },
)
# Names that try to pass for the server or hide what follows them (issue 15): bidi and zero-width characters,
# line breaks, look-alike letters, fullwidth forms and overlong ones.
CLIENT_NAMES = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "Countersign security check",
            "C\u043eunters\u0456gn",
            "\uff23\uff4f\uff55\uff4e\uff54\uff45\uff52\uff53\uff49\uff47\uff4e",
            "Line1\nCountersign: your account is locked",
            "Agent\u202egnp.exe",
            "Pay\u200bBot",
            "x" * 255,
        ]
    ),
)
METADATA = st.fixed_dictionaries(
    {},
    optional={
        **{name: JSON_VALUES for name in REGISTRATION_NAMES},
        "client_name": CLIENT_NAMES | JSON_VALUES,
        "jwks": st.fixed_dictionaries({"keys": st.lists(JWK, max_size=3)}) | JSON_VALUES,
        "grant_types": st.lists(st.sampled_from(GRANT_TYPES) | TEXT, max_size=4) | JSON_VALUES,
        "backchannel_token_delivery_mode": st.sampled_from(["poll", "ping", "push"]) | JSON_VALUES,
    },
)


def metadata_body(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Client metadata over a valid registration (or alone), or any JSON, or bytes that are not JSON."""
    return st.one_of(
        METADATA.map(lambda changes: json.dumps({**base, **changes}).encode()),
        METADATA.map(lambda changes: json.dumps(changes).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=300),
    )


def test_registration(http: Client, scene: dict[str, Any]) -> None:
    initial = initial_access_token_create(expires_in=3600)
    base = {"client_name": "Fuzz bot", "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll"}

    @FUZZ
    @given(
        body=metadata_body(base),
        auth=authorization(f"Bearer {initial}"),
        content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", FORM, "text/plain"]),
    )
    def run(body: bytes, auth: str | None, content_type: str) -> None:
        send(http, "post", "/oauth/register/", body=body, content_type=content_type, HTTP_AUTHORIZATION=auth)

    run()


def test_registration_management(http: Client, registered: dict[str, Any]) -> None:
    token = registered["registration_access_token"]
    own = registered["registration_client_uri"].removeprefix("http://testserver")
    base = {**registered["metadata"], "client_id": registered["client_id"]}
    path = st.one_of(st.just(own), TEXT.map(lambda segment: f"/oauth/register/{quote(segment, safe='')}/"))

    @FUZZ
    @given(
        path=path,
        method=st.sampled_from(["get", "put", "put", "delete", "post", "patch"]),
        body=metadata_body(base),
        auth=authorization(f"Bearer {token}"),
    )
    def run(path: str, method: str, body: bytes, auth: str | None) -> None:
        if method in ("get", "delete"):
            send(http, method, path, HTTP_AUTHORIZATION=auth)
        else:
            send(http, method, path, body=body, content_type="application/json", HTTP_AUTHORIZATION=auth)

    run()


def test_approver_pages(scene: dict[str, Any]) -> None:
    pending = scene["pending"]
    anonymous = Client(raise_request_exception=False)
    signed_in = Client(raise_request_exception=False)
    signed_in.force_login(scene["approver"].user)
    segment = st.one_of(st.just(str(pending.pk)), st.uuids().map(str), TEXT.map(lambda value: quote(value, safe="")))
    path = st.one_of(
        st.just(scene["link"]),
        segment.map(lambda s: f"/approvals/l/{s}/"),
        segment.map(lambda s: f"/approvals/{s}/"),
        segment.map(lambda s: f"/approvals/{s}/decide/"),
        st.sampled_from(
            [
                f"/approvals/{pending.pk}/decide/",
                "/approvals/",
                "/approvals/user-code/",
                "/approvals/pending.json",
                "/approvals/devices/enrol/",
                "/accounts/login/",
                "/accounts/logout/",
            ]
        ),
    )
    # `page` pages the inbox and pending.json (issue 15): any value must still give a page.
    params = form(["decision", "password", "user_code", "username", "next", "csrfmiddlewaretoken", "page"], {})

    @FUZZ
    @given(
        who=st.sampled_from(["anonymous", "signed_in"]),
        path=path,
        method=st.sampled_from(["get", "post"]),
        params=params,
        query=params,
    )
    def run(who: str, path: str, method: str, params: list[tuple[str, str]], query: list[tuple[str, str]]) -> None:
        http = signed_in if who == "signed_in" else anonymous
        target = f"{path}?{encode(query)}" if query else path
        if method == "get":
            send(http, "get", target)
        else:
            send(http, "post", target, body=encode(params))

    run()


def test_approver_json_endpoints(scene: dict[str, Any]) -> None:
    http = Client(raise_request_exception=False)
    http.force_login(scene["approver"].user)
    subscription = st.fixed_dictionaries(
        {},
        optional={
            "endpoint": st.sampled_from(["https://fcm.googleapis.com/fcm/send/x", "http://127.0.0.1:1/"]) | TEXT,
            "keys": st.fixed_dictionaries({}, optional={"p256dh": TEXT, "auth": TEXT}) | JSON_VALUES,
            "expirationTime": JSON_VALUES,
        },
    )
    body = st.one_of(
        subscription.map(lambda value: json.dumps(value).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=300),
    )

    @FUZZ
    @given(
        path=st.sampled_from(["/approvals/devices/", "/approvals/pending.json", "/approvals/devices/vapid-public-key/"])
        | st.integers(min_value=-1, max_value=2**63).map(lambda pk: f"/approvals/devices/{pk}/remove/"),
        method=st.sampled_from(["get", "post"]),
        body=body,
        content_type=st.sampled_from(["application/json", FORM]),
    )
    def run(path: str, method: str, body: bytes, content_type: str) -> None:
        if method == "get":
            send(http, "get", path)
        else:
            send(http, "post", path, body=body, content_type=content_type)

    run()


def test_push_endpoints_reach_only_listed_services(scene: dict[str, Any]) -> None:
    """Issue 15, push endpoint abuse: whatever URL is enrolled, another parser (urllib3's, as requests reads URLs)
    must find a listed push service on 443 in every endpoint that was accepted."""
    http = Client(raise_request_exception=False)
    http.force_login(scene["approver"].user)
    keys = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}
    hosts = st.sampled_from(
        ["fcm.googleapis.com", "wns2.notify.windows.com", "127.0.0.1", "evil.com", "[::1]", "fcm.googleapis.com.evil"]
    )
    glue = st.sampled_from(["", "\\", "\\.", "@", ":", ":443", ":8443", ".", "%2e", "#", "?", "/", "\t", "\x00"])
    endpoint = st.tuples(st.sampled_from(["https://", "http://", "HTTPS://", "https:/", ""]), hosts, glue, hosts, TEXT)

    @FUZZ
    @given(parts=endpoint)
    def run(parts: tuple[str, str, str, str, str]) -> None:
        url = "".join(parts)
        body = json.dumps({"endpoint": url, "keys": keys})
        response = send(http, "post", "/approvals/devices/", body=body, content_type="application/json")
        assert response.status_code in (201, 400), (response.status_code, url)
        if response.status_code == 201:
            parsed = parse_url(url)
            host = (parsed.host or "").lower()
            services = approvals_settings.WEBPUSH["ALLOWED_SERVICES"]
            listed = any(host == name or (name.startswith(".") and host.endswith(name)) for name in services)
            on_443 = parsed.scheme == "https" and parsed.port in (None, 443) and listed
            local = parsed.scheme == "http" and host == "127.0.0.1"  # the scene allows loopback http (development)
            assert on_443 or local, url

    run()


TWILIO_NAMES = ["MessageStatus", "SmsStatus", "ErrorCode", "MessageSid", "AccountSid", "To", "From"]


def test_twilio_status_hook(http: Client, scene: dict[str, Any]) -> None:
    own = f"/approvals/hooks/twilio/{scene['delivery'].pk}/"
    validator = RequestValidator(TWILIO_TOKEN)
    statuses = st.sampled_from(["queued", "sent", "delivered", "undelivered", "failed", "read"]) | TEXT

    @FUZZ
    @given(
        path=st.sampled_from([own, f"/approvals/hooks/twilio/{uuid.uuid4()}/"]),
        status=statuses,
        params=form(TWILIO_NAMES, {}),
        signed=st.booleans(),
        signature=LATIN1,
    )
    def run(path: str, status: str, params: list[tuple[str, str]], signed: bool, signature: str) -> None:
        pairs = [("MessageStatus", status), *params]
        if signed:
            # Signed as Twilio signs: a report that passes the check reaches the delivery update.
            signature = validator.compute_signature(f"http://testserver{path}", dict(pairs))
        send(http, "post", path, body=encode(pairs), HTTP_X_TWILIO_SIGNATURE=signature)

    run()


def test_automated_approval_endpoint(http: Client, scene: dict[str, Any]) -> None:
    auth_req_id = st.sampled_from([scene["pending"].auth_req_id, scene["approved"].auth_req_id]) | TEXT

    @FUZZ
    @given(
        token=auth_req_id,
        action=st.sampled_from(["allow", "deny"]) | TEXT,
        secret=st.just(AUTOMATED_SECRET) | TEXT,
        params=form(["token", "auth_req_id", "type", "action", "secret"], {}),
        bearer=st.booleans(),
        method=st.sampled_from(["get", "post"]),
    )
    def run(token: str, action: str, secret: str, params: list[tuple[str, str]], bearer: bool, method: str) -> None:
        pairs = [("token", token), ("type", action), *([] if bearer else [("secret", secret)]), *params]
        auth = f"Bearer {secret}" if bearer else None
        if method == "get":
            send(http, "get", f"/approvals/automated/?{encode(pairs)}", HTTP_AUTHORIZATION=auth)
        else:
            send(http, "post", "/approvals/automated/", body=encode(pairs), HTTP_AUTHORIZATION=auth)

    run()


def test_the_consistency_check_sees_a_half_written_request(scene: dict[str, Any]) -> None:
    """The invariant the suite relies on catches what it is meant to catch."""
    with transaction.atomic():
        AuditEvent.objects.filter(request=scene["pending"]).delete()
        with pytest.raises(AssertionError, match="never audited"):
            assert_nothing_half_written()
        transaction.set_rollback(True)
    assert_nothing_half_written()
