from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from oauth2_provider.settings import oauth2_settings

from authz.clients.hashers import ClientSecretHasher


@register(Tags.security, deploy=False)
def check_production_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    if not settings.DEBUG:
        if settings.SECRET_KEY == settings.DEV_SECRET_KEY or settings.SECRET_KEY.startswith("django-insecure"):
            errors.append(
                Error(
                    "DEBUG is off but SECRET_KEY is the development key.",
                    hint="Set SECRET_KEY (or SECRET_KEY_FILE) to a long random value.",
                    id="countersign.E001",
                )
            )
        if not oauth2_settings.OIDC_RSA_PRIVATE_KEY:
            errors.append(
                Error(
                    "DEBUG is off and no OIDC signing key is configured.",
                    hint="Set OIDC_RSA_PRIVATE_KEY (or OIDC_RSA_PRIVATE_KEY_FILE) to an RSA private key in PEM.",
                    id="countersign.E002",
                )
            )
    return errors


@register(Tags.security)
def check_client_secret_hasher(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    hasher_path = f"{ClientSecretHasher.__module__}.{ClientSecretHasher.__qualname__}"
    if (
        ClientSecretHasher.algorithm != oauth2_settings.CLIENT_SECRET_HASHER
        or hasher_path not in settings.PASSWORD_HASHERS
        # First would make it the default: people's passwords hashed with a single SHA-256.
        or settings.PASSWORD_HASHERS[0] == hasher_path
    ):
        return [
            Error(
                "Client secrets must be hashed with the fast client-secret hasher.",
                hint=f'Set OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"] = "{ClientSecretHasher.algorithm}" and add '
                f"{hasher_path} to PASSWORD_HASHERS (not first).",
                id="countersign.E003",
            )
        ]
    return []
