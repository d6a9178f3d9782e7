"""Issue 14, hostile input: a JWK Set whose members have the wrong JSON type or hold NUL characters is refused with
the usual answer of each path (invalid_client_metadata at registration, a form error in admin, a CommandError from
create_agent_client), never a 500. The check is authz.clients.keys.parse_jwks, which all three use."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command
from oauth2_provider.models import get_application_model

from authz.clients.registration import initial_access_token_create
from authz.models import CibaClient
from tests import factories
from tests.conftest import CIBA
from tests.security.test_registration_ceiling import admin_form

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def jwk(**overrides: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {**jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", **overrides}


HOSTILE_KEYS = {
    "kty-list": jwk(kty=["EC"]),
    "kty-object": jwk(kty={"EC": True}),
    "crv-list": jwk(crv=["P-256"]),
    "crv-object": jwk(crv={"name": "P-256"}),
    "alg-list": jwk(alg=["ES256"]),
    "use-object": jwk(use={"sig": 1}),
    "nul-in-kid": jwk(kid="k\x001"),
    "nul-in-another-member": jwk(x5u="https://agent.example/\x00"),
    "nul-in-a-member-name": {**jwk(), "ext\x00": "value"},
}


def rows() -> tuple[int, int]:
    return get_application_model().objects.count(), CibaClient.objects.count()


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_registration_refuses_a_hostile_jwks_as_invalid_client_metadata(client, key):
    token = initial_access_token_create(expires_in=60)
    before = rows()
    body = {
        "client_name": "Agent",
        "grant_types": [CIBA],
        "backchannel_token_delivery_mode": "poll",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [key]},
    }
    response = client.post(
        "/oauth/register/", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    factories.assert_oauth_error(response, 400, "invalid_client_metadata")
    assert rows() == before


@pytest.mark.parametrize("where", ["client_name", "client_uri", "scope"])
def test_registration_refuses_nul_in_any_metadata_string(client, where):
    token = initial_access_token_create(expires_in=60)
    before = rows()
    body = {"client_name": "Agent", "grant_types": [CIBA], "backchannel_token_delivery_mode": "poll"}
    body[where] = "a\x00b"
    response = client.post(
        "/oauth/register/", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    body = factories.assert_oauth_error(response, 400, "invalid_client_metadata")
    assert "NUL" in body["error_description"]
    assert rows() == before


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_admin_refuses_a_hostile_jwks_with_a_form_error(admin_client, agent, key):
    before = CibaClient.objects.values().get(application=agent.application)
    url, data = admin_form(
        admin_client, agent.client_id, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [key]}
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with its error
    errors = [inline.formset.errors for inline in response.context["inline_admin_formsets"]]
    assert any("jwks" in form_errors for formset in errors for form_errors in formset), errors
    assert CibaClient.objects.values().get(application=agent.application) == before


@pytest.mark.parametrize("key", HOSTILE_KEYS.values(), ids=HOSTILE_KEYS.keys())
def test_create_agent_client_refuses_a_hostile_jwks_file(tmp_path: Path, key):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [key]}), encoding="utf-8")
    before = rows()
    with pytest.raises(CommandError, match="--jwks"):
        call_command(
            "create_agent_client",
            "--name",
            "Agent",
            "--auth-method",
            "private_key_jwt",
            "--jwks",
            str(path),
            stdout=StringIO(),
        )
    assert rows() == before
