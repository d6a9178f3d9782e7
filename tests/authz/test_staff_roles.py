"""Issue 18, item 7: the staff roles "viewer" and "operator" (authz.review.roles), created by migration and kept to
their declared permissions after every migrate; what each role, and staff without one, see in admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client

from authz.review import roles
from tests import factories

pytestmark = pytest.mark.django_db

COUNTERSIGN_APPS = {"approvals", "authz", "oauth2_provider"}


def names(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def signed_in(user: Any) -> Client:
    http = Client()
    http.force_login(user)
    return http


def review_changelists() -> list[str]:
    """The admin lists of every model the viewer may view (those that have a list of their own)."""
    urls = []
    for model in admin.site._registry:
        label = f"{model._meta.app_label}.view_{model._meta.model_name}"
        if label in {str(p) for p in roles.VIEWER_PERMISSIONS}:
            urls.append(f"/admin/{model._meta.app_label}/{model._meta.model_name}/")
    return sorted(urls)


def test_after_migrate_the_groups_hold_exactly_the_declared_permissions():
    assert names(Group.objects.get(name="viewer")) == {str(p) for p in roles.VIEWER_PERMISSIONS}
    assert names(Group.objects.get(name="operator")) == {str(p) for p in roles.OPERATOR_PERMISSIONS}
    # Nothing declared is missing (a renamed model or permission would be).
    assert roles.sync_roles() == {"viewer": [], "operator": []}


def test_the_table_is_what_the_plan_says():
    viewer = {str(p) for p in roles.VIEWER_PERMISSIONS}
    assert all(name.split(".")[1].startswith("view_") for name in viewer)
    assert {str(p) for p in roles.OPERATOR_PERMISSIONS} - viewer == {
        "approvals.cancel_approvalrequest",
        "approvals.revoke_approvalrequest_tokens",
        "approvals.clear_lockout_approver",
        "authz.suspend_cibaclient",
    }
    # The review API's and the export's needs are the viewer's.
    assert set(roles.API_PERMISSIONS) <= viewer


def test_migrate_puts_back_what_was_changed_by_hand():
    viewer = Group.objects.get(name="viewer")
    viewer.permissions.add(Permission.objects.get(codename="change_approver"))
    viewer.permissions.remove(Permission.objects.get(codename="view_auditevent"))
    Group.objects.get(name="operator").delete()

    call_command("migrate", verbosity=0)

    assert names(Group.objects.get(name="viewer")) == {str(p) for p in roles.VIEWER_PERMISSIONS}
    assert names(Group.objects.get(name="operator")) == {str(p) for p in roles.OPERATOR_PERMISSIONS}


def test_staff_without_a_role_see_nothing_of_countersign():
    http = signed_in(factories.make_staff("sam"))
    index = http.get("/admin/")
    assert index.status_code == 200
    assert index.context["available_apps"] == []
    for url in review_changelists():
        assert http.get(url).status_code == 403, url
    assert http.get("/api/review/audit-events/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_each_role_sees_every_review_list(role, agent, approver):
    factories.make_approval_request(approver, agent)
    http = signed_in(factories.make_staff("vera", role))
    index = http.get("/admin/")
    shown = {
        (app["app_label"], model["object_name"].lower())
        for app in index.context["available_apps"]
        for model in app["models"]
    }
    assert {label for label, _model in shown} <= COUNTERSIGN_APPS
    urls = review_changelists()
    assert len(urls) >= 8
    for url in urls:
        response = http.get(url)
        assert response.status_code == 200, url
        app_label, model_name = url.strip("/").split("/")[1:]
        assert (app_label, model_name) in shown
        assert response.context["has_add_permission"] is False, url


def test_a_viewer_is_offered_no_action_that_changes_anything(agent, approver):
    approval_request = factories.make_approval_request(approver, agent)
    viewer = factories.make_staff("vera", "viewer")
    http = signed_in(viewer)
    request = http.get("/admin/").wsgi_request
    for model, model_admin in admin.site._registry.items():
        if f"{model._meta.app_label}.view_{model._meta.model_name}" not in {str(p) for p in roles.VIEWER_PERMISSIONS}:
            continue
        request.user = viewer
        assert model_admin.get_actions(request) == {}, (model, list(model_admin.get_actions(request)))
        assert model_admin.has_change_permission(request) is False, model
        assert model_admin.has_delete_permission(request) is False, model
        assert model_admin.has_add_permission(request) is False, model
    # Asking for an action anyway changes nothing.
    response = http.post(
        "/admin/approvals/approvalrequest/",
        {"action": "cancel_requests", "_selected_action": [str(approval_request.pk)]},
    )
    assert response.status_code in (200, 302, 403)
    approval_request.refresh_from_db()
    assert approval_request.status == "pending"
    page = http.get(f"/admin/approvals/approvalrequest/{approval_request.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_creates_the_roles_on_a_database_that_has_the_permissions():
    """A deployment upgrading: the permissions exist from earlier migrates, so the migration's own step grants them
    (with the migration's historical models), before any post_migrate."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("authz", "0014_agent_suspension")])
        Group.objects.filter(name__in=["viewer", "operator"]).delete()
        executor = MigrationExecutor(connection)
        executor.migrate([("authz", "0015_staff_roles")])
        assert names(Group.objects.get(name="viewer")) == {str(p) for p in roles.VIEWER_PERMISSIONS}
        assert names(Group.objects.get(name="operator")) == {str(p) for p in roles.OPERATOR_PERMISSIONS}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
