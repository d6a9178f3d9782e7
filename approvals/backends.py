"""The authentication backend behind every password sign-in (our login page, the admin's, `authenticate()`)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from approvals import attempts


class ThrottledModelBackend(ModelBackend):
    """Django's ModelBackend, with each password guess counted before it is checked (approvals.attempts): per
    person, shared with the step-up password, and per client address. A locked guess raises PermissionDenied, which
    ends authenticate() at once (no later backend is asked) and sends user_login_failed."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        address = attempts.client_address(request) if request is not None else ""
        found: list[User] = []

        def check() -> bool:
            user = super(ThrottledModelBackend, self).authenticate(request, username, password, **kwargs)
            if user is not None:
                found.append(user)
            return user is not None

        verdict = attempts.attempt(attempts.password_limits(username=str(username), address=address), check)
        if verdict is attempts.Verdict.LOCKED:
            raise PermissionDenied
        return found[0] if found else None
