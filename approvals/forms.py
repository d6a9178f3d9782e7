from __future__ import annotations

import math

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from approvals import attempts
from approvals.conf import approvals_settings


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", _("Approve")), ("deny", _("Deny"))])


class UserCodeForm(forms.Form):
    user_code = forms.CharField(
        label=_("New user code"),
        min_length=4,
        max_length=64,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=_("Agents that must prove they know you will ask you for this code."),
    )


class SignInForm(AuthenticationForm):
    """The sign-in page's form. Throttling itself is in the authentication backend (approvals.backends), which
    every sign-in goes through; this only says so when a sign-in was refused for it."""

    def get_invalid_login_error(self) -> ValidationError:
        username = str(self.cleaned_data.get("username") or "")
        address = attempts.client_address(self.request) if self.request is not None else ""
        if attempts.exhausted(attempts.password_limits(username=username, address=address)):
            minutes = math.ceil(approvals_settings.PASSWORD_LOCKOUT_SECONDS / 60)
            return ValidationError(
                _("Too many failed sign-ins. Wait %(minutes)d minutes, then try again."),
                code="locked",
                params={"minutes": minutes},
            )
        return super().get_invalid_login_error()
