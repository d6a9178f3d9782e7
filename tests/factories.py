from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals import services
from approvals.models import ApprovalRequest, Approver
from authz.ciba.request import request_lifetime
from authz.conf import authz_settings
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


def make_public_client() -> tuple[Any, str]:
    """A public client (no secret of its own) that has CIBA settings all the same: CIBA must still refuse it."""
    Application = get_application_model()
    secret = generate_client_secret()
    application = Application.objects.create(
        name="Public agent",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        client_secret=secret,
        redirect_uris="https://agent.example/cb",
        algorithm=Application.RS256_ALGORITHM,
    )
    CibaClient.objects.create(application=application)
    return application, secret


def decide(auth_req_id: str, *, approve: bool = True, acr: str = "") -> Any:
    """The approver's decision on the request with this auth_req_id, through the service the approver page uses."""
    from approvals.models import ApprovalRequest

    approval_request = ApprovalRequest.objects.select_related("user").get(auth_req_id=auth_req_id)
    assert services.approval_request_decide(
        approval_request_id=approval_request.pk, user=approval_request.user, approve=approve, acr=acr
    )
    approval_request.refresh_from_db()
    return approval_request


def assert_oauth_error(response: Any, status: int, error: str) -> dict[str, str]:
    """An OAuth error answer (RFC 6749 §5.2, CIBA Core §13): the status, a JSON body with exactly `error` and
    `error_description`, never cached; a 401 names its scheme, a 405 names the allowed method."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].split(";")[0] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"].strip(), body
    assert response["Cache-Control"] == "no-store"
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Basic "), response.headers
    else:
        assert not response.has_header("WWW-Authenticate"), response.headers
    if status == 405:
        allowed = {method.strip() for method in response["Allow"].split(",")}
        assert "POST" in allowed and not allowed & {"GET", "PUT", "PATCH", "DELETE"}, response["Allow"]
    return body


def as_bc_authorize(**kwargs: Any) -> dict[str, Any]:
    """approval_request_create's arguments with the lifetime and poll interval bc-authorize would choose (authz
    decides them, approvals stores them), unless given."""
    return {
        "expires_in": request_lifetime(kwargs.get("requested_expiry")),
        "interval": authz_settings.POLL_INTERVAL_SECONDS,
        **kwargs,
    }


def make_approval_request(
    approver: Approver, agent: Any, *, scope: str = "openid", created_ago: int = 0, **kwargs: Any
) -> ApprovalRequest:
    """A pending request straight through the service, as if the agent had asked `created_ago` seconds ago."""
    return services.approval_request_create(
        client=agent.application,
        user=approver.user,
        scope=scope,
        hint_type="login_hint",
        now=timezone.now() - timedelta(seconds=created_ago),
        **as_bc_authorize(**kwargs),
    )


def make_staff(username: str, *groups: str, superuser: bool = False) -> Any:
    """A staff account in the given role groups ("viewer", "operator": authz.review.roles), or a superuser."""
    from django.contrib.auth.models import Group

    User = get_user_model()
    make = User.objects.create_superuser if superuser else User.objects.create_user
    user = make(username, password=PASSWORD, is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user
