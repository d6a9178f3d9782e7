from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


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
