"""Issue 14, finding 10: tokens stored before COMPLIANT_BCP_RFC9700_TOKEN_STORAGE lose their plaintext too.

New tokens are stored as their SHA-256 only (DOT's token_checksum, which DOT's own migrations computed for every
existing row and every lookup uses). This empties the `token` column of the rows written before, so that no copy of
the database holds a usable access, refresh, registration or initial access token, and gives registration access
tokens issued without an expiry the lifetime new ones get (RFC 7592; DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS). Both
are one-way: a reverse migration keeps the rows as they are.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def redact_stored_tokens(apps: Any, schema_editor: Any) -> None:
    from oauth2_provider.settings import oauth2_settings

    if not oauth2_settings.COMPLIANT_BCP_RFC9700_TOKEN_STORAGE:
        return
    AccessToken = apps.get_model(*settings.OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL.split("."))
    RefreshToken = apps.get_model(*settings.OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL.split("."))
    for model in (AccessToken, RefreshToken):
        # A row without its checksum could no longer be found: it keeps its value (DOT computed every checksum).
        model.objects.exclude(token="").exclude(token_checksum="").update(token="")
    lifetime = oauth2_settings.DCR_REGISTRATION_TOKEN_EXPIRE_SECONDS
    if lifetime is not None:
        latest = timezone.now() + timedelta(seconds=lifetime)
        AccessToken.objects.filter(scope=oauth2_settings.DCR_REGISTRATION_SCOPE, expires__gt=latest).update(
            expires=latest
        )


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0008_registration_limits_and_bound_callbacks"),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL),
        migrations.swappable_dependency(settings.OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL),
    ]

    operations = [migrations.RunPython(redact_stored_tokens, migrations.RunPython.noop)]
