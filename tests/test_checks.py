"""System checks that refuse an unsafe production configuration (authz/checks.py)."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks

from authz.checks import check_client_secret_hasher, check_production_secrets

PRODUCTION_SECRET_KEY = "k3Yq0f9W1mR7s2Lx8Vb4Nc6Hd5Jt0Pz3Ae9Gu1Io7Ky2Ws4Xr6Qm8Bn5Cv0Dl"
CLIENT_SECRET_HASHER = "authz.clients.hashers.ClientSecretHasher"


@pytest.fixture
def production(settings):
    """A good production configuration: DEBUG off, a real secret key and signing key, the fast client hasher."""
    settings.DEBUG = False
    settings.SECRET_KEY = PRODUCTION_SECRET_KEY
    # The test settings allow http to the local fakes (tests/settings.py); production does not (E108).
    settings.APPROVALS = {**settings.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": False}
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
        CLIENT_SECRET_HASHER,
    ]
    assert django_settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"]
    assert django_settings.OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"] == "countersign_sha256"
    return settings


def oauth2_provider(**overrides):
    return {**django_settings.OAUTH2_PROVIDER, **overrides}


def ids(errors) -> list[str]:
    return [error.id for error in errors]


def countersign_ids() -> list[str]:
    return sorted(message.id for message in run_checks() if message.id.startswith("countersign."))


def test_good_production_configuration_passes(production):
    assert check_production_secrets() == []
    assert check_client_secret_hasher() == []
    assert countersign_ids() == []


def test_dev_secret_key_without_debug_is_an_error(production):
    production.SECRET_KEY = production.DEV_SECRET_KEY
    errors = check_production_secrets()
    assert ids(errors) == ["countersign.E001"]
    assert errors[0].is_serious()
    assert countersign_ids() == ["countersign.E001"]


def test_any_django_insecure_key_without_debug_is_an_error(production):
    production.SECRET_KEY = "django-insecure-" + "a" * 50
    assert ids(check_production_secrets()) == ["countersign.E001"]


def test_missing_signing_key_without_debug_is_an_error(production):
    production.OAUTH2_PROVIDER = oauth2_provider(OIDC_RSA_PRIVATE_KEY="")
    errors = check_production_secrets()
    assert ids(errors) == ["countersign.E002"]
    assert countersign_ids() == ["countersign.E002"]


def test_both_production_errors_are_reported_together(production):
    production.SECRET_KEY = production.DEV_SECRET_KEY
    production.OAUTH2_PROVIDER = oauth2_provider(OIDC_RSA_PRIVATE_KEY="")
    assert ids(check_production_secrets()) == ["countersign.E001", "countersign.E002"]


def test_development_configuration_is_allowed_with_debug(production):
    production.DEBUG = True
    production.SECRET_KEY = production.DEV_SECRET_KEY
    production.OAUTH2_PROVIDER = oauth2_provider(OIDC_RSA_PRIVATE_KEY="")
    assert check_production_secrets() == []


@pytest.mark.parametrize("hasher", ["default", "pbkdf2_sha256", ""])
def test_wrong_client_secret_hasher_is_an_error(production, hasher):
    production.OAUTH2_PROVIDER = oauth2_provider(CLIENT_SECRET_HASHER=hasher)
    errors = check_client_secret_hasher()
    assert ids(errors) == ["countersign.E003"]
    assert "countersign_sha256" in errors[0].hint
    assert countersign_ids() == ["countersign.E003"]


def test_client_secret_hasher_missing_from_password_hashers_is_an_error(production):
    production.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    assert ids(check_client_secret_hasher()) == ["countersign.E003"]


def test_client_secret_hasher_as_the_default_password_hasher_is_an_error(production):
    # First in PASSWORD_HASHERS, the fast hasher would hash people's passwords with a single SHA-256.
    production.PASSWORD_HASHERS = [CLIENT_SECRET_HASHER, "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    assert ids(check_client_secret_hasher()) == ["countersign.E003"]


def test_client_secret_hasher_check_runs_in_development_too(production):
    production.DEBUG = True
    production.OAUTH2_PROVIDER = oauth2_provider(CLIENT_SECRET_HASHER="default")
    assert countersign_ids() == ["countersign.E003"]


def test_the_test_settings_pass_the_checks():
    # The suite itself runs with DEBUG off, a non-development key and a signing key; its one allowance is http to the
    # local fakes standing in for agents' notification endpoints, which E108 refuses outside development.
    assert countersign_ids() == ["countersign.E108"]


def test_loopback_http_for_client_urls_without_debug_is_an_error(production):
    production.APPROVALS = {**production.APPROVALS, "OUTBOUND_ALLOW_LOOPBACK_HTTP": True}
    assert countersign_ids() == ["countersign.E108"]
    production.DEBUG = True
    assert countersign_ids() == []
