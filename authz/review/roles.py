"""The two staff roles of the admin review (issue 18), as Django groups: "viewer" reads every review page and the
review API, "operator" may also cancel, revoke, suspend and clear lockouts.

The groups are created by migration authz 0015_staff_roles; their permissions come from ROLES below, applied by
`sync_roles` after every `migrate` (a post_migrate receiver, connected in authz.apps): Django creates permissions
only after the migrations ran, so a migration alone cannot grant permissions of models it creates. The sync sets
each group's permissions to exactly the table's: a permission added to these groups by hand is taken away at the next
migrate (make another group for other sets).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

VIEWER = "viewer"
OPERATOR = "operator"


class Perm(NamedTuple):
    app_label: str
    model: str  # the model's name in lower case, as ContentType stores it
    codename: str

    def __str__(self) -> str:
        return f"{self.app_label}.{self.codename}"


def _swapped(setting: str) -> tuple[str, str]:
    # DOT's models are named in settings ("oauth2_provider.AccessToken"), as its migrations reference them.
    app_label, model = str(getattr(settings, setting)).split(".")
    return app_label, model.lower()


def _view(app_label: str, model: str) -> Perm:
    return Perm(app_label, model, f"view_{model}")


def _view_swapped(setting: str) -> Perm:
    return _view(*_swapped(setting))


# What the review shows (plan of issue 18, point 4): requests and their trail, prompts, approvers and devices, agents
# and their settings, tokens, callbacks to agents, and what admins did to agents and approvers.
VIEWER_PERMISSIONS: tuple[Perm, ...] = (
    _view("approvals", "approvalrequest"),
    _view("approvals", "auditevent"),
    _view("approvals", "delivery"),
    _view("approvals", "approver"),
    _view("approvals", "pushsubscription"),
    _view("approvals", "approverevent"),
    _view("approvals", "approverevent"),  # lockouts cleared (approvals.lockouts)
    _view_swapped("OAUTH2_PROVIDER_APPLICATION_MODEL"),
    _view_swapped("OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL"),
    _view_swapped("OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL"),
    _view_swapped("OAUTH2_PROVIDER_ID_TOKEN_MODEL"),
    _view("authz", "cibaclient"),
    _view("authz", "tokendetails"),
    _view("authz", "notification"),
    _view("authz", "notificationattempt"),
    _view("authz", "requestcallback"),
    _view("authz", "agentevent"),
)

OPERATOR_PERMISSIONS: tuple[Perm, ...] = (
    *VIEWER_PERMISSIONS,
    Perm("approvals", "approvalrequest", "cancel_approvalrequest"),
    Perm("approvals", "approvalrequest", "revoke_approvalrequest_tokens"),
    Perm("approvals", "approver", "clear_lockout_approver"),
    Perm("authz", "cibaclient", "suspend_cibaclient"),
)

ROLES: dict[str, tuple[Perm, ...]] = {VIEWER: VIEWER_PERMISSIONS, OPERATOR: OPERATOR_PERMISSIONS}

# What the review API and the audit export ask of a user besides being active staff: the viewer role's reading of
# requests and their trail (superusers have every permission).
API_PERMISSIONS = ("approvals.view_approvalrequest", "approvals.view_auditevent")


def sync_roles(apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS) -> dict[str, list[str]]:
    """Create the groups if missing and give each exactly its declared permissions, of those that exist yet.

    `apps` is the registry to read models from: a migration's historical one, or the global one. Idempotent. Returns
    the declared permissions that do not exist (yet), per group."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    missing: dict[str, list[str]] = {}
    for name, declared in ROLES.items():
        group, _created = Group.objects.using(using).get_or_create(name=name)
        found = {
            (perm.content_type.app_label, perm.content_type.model, perm.codename): perm
            for perm in Permission.objects.using(using)
            .select_related("content_type")
            .filter(codename__in={p.codename for p in declared})
        }
        group.permissions.set([found[p] for p in declared if p in found])
        missing[name] = [str(p) for p in declared if p not in found]
    return missing


def on_post_migrate(*, apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """post_migrate receiver, connected for authz (the last of the apps the roles name, so Django has created the
    permissions of all of them by the time it runs)."""
    try:
        apps.get_model("auth", "Group")
        apps.get_model("auth", "Permission")
    except LookupError:  # migrated back before auth: nothing to sync
        return
    sync_roles(apps, using)
