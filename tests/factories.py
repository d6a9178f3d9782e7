from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals import services
from approvals.models import Approver
from authz.models import CibaClient

PASSWORD = "correct horse battery staple"


def make_approver(username: str, *, email: str = "", phone: str = "", user_code: str = "") -> Approver:
    user = get_user_model().objects.create_user(username=username, email=email, password=PASSWORD)
    approver = Approver.objects.create(user=user, phone_number=phone)
    if user_code:
        services.approver_set_user_code(approver=approver, user_code=user_code)
    return approver


def make_agent_client(*, name: str = "Agent", ciba: bool = True, **ciba_fields: Any) -> tuple[Any, str]:
    Application = get_application_model()
    secret = generate_client_secret()
    application = Application.objects.create(
        name=name,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
        algorithm=Application.RS256_ALGORITHM,
    )
    if ciba:
        CibaClient.objects.create(application=application, **ciba_fields)
    return application, secret
