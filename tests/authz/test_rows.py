"""authz.rows: the client and the user of every bc-authorize, read by SQL built once, come back as the ORM's
select_related would give them, in one query, with the companion row (or its absence) cached both ways."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from approvals.models import Approver
from authz.ciba.request import resolve_login_hint
from authz.clients.auth import load_application
from authz.models import CibaClient
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_user_comes_with_the_approver_in_one_query(django_assert_num_queries: object) -> None:
    approver = factories.make_approver("ada", email="ada@example.com", phone="+15005550006")
    with django_assert_num_queries(1):  # type: ignore[operator]
        user = resolve_login_hint("ada")
        assert user is not None and user.pk == approver.user_id
        assert user.approver.pk == approver.pk and user.approver.user is user
        assert user.email == "ada@example.com" and user.is_active
    fresh = get_user_model().objects.select_related("approver").get(pk=user.pk)
    for field in get_user_model()._meta.concrete_fields:
        assert getattr(user, field.attname) == getattr(fresh, field.attname), field.name
    for field in Approver._meta.concrete_fields:
        assert getattr(user.approver, field.attname) == getattr(fresh.approver, field.attname), field.name


def test_a_user_without_an_approver_row_says_so_without_a_query(django_assert_num_queries: object) -> None:
    get_user_model().objects.create_user("grace", password="x")  # noqa: S106
    with django_assert_num_queries(1):  # type: ignore[operator]
        user = resolve_login_hint("grace")
        assert user is not None
        with pytest.raises(Approver.DoesNotExist):
            user.approver  # noqa: B018


def test_unknown_usernames_and_case_are_not_matched() -> None:
    factories.make_approver("Linus")
    assert resolve_login_hint("nobody") is None
    assert resolve_login_hint("linus") is None  # as the ORM's exact lookup: usernames are case-sensitive
    assert resolve_login_hint("Linus") is not None


def test_a_client_comes_with_its_ciba_row_or_none(django_assert_num_queries: object) -> None:
    with_ciba, _ = factories.make_agent_client(name="with")
    without, _ = factories.make_agent_client(name="without", ciba=False)
    with django_assert_num_queries(2):  # type: ignore[operator]
        loaded = load_application(with_ciba.client_id)
        assert loaded.pk == with_ciba.pk and loaded.ciba.application is loaded
        bare = load_application(without.client_id)
        assert bare.pk == without.pk
        with pytest.raises(CibaClient.DoesNotExist):
            bare.ciba  # noqa: B018
    assert load_application("no-such-client") is None
    fresh = CibaClient.objects.get(application=with_ciba)
    for field in CibaClient._meta.concrete_fields:
        assert getattr(loaded.ciba, field.attname) == getattr(fresh, field.attname), field.name
