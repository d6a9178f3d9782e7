"""The two example display templates for the restricted engine (issue 15): approvals.display renders display
templates with no {% load %} (iso_datetime is built in) and shows each of the agent's values in its own delimited
element, so the page's own quotation marks around values go: a value such as `ACME”, reference “INV-7` must not be
able to close them and open a field of its own.

Only a template that is still exactly the one migration 0005 installed is changed: an admin's own template stays.
"""

from __future__ import annotations

import importlib
from typing import Any

from django.db import migrations

EXAMPLES = importlib.import_module("authz.migrations.0005_example_authorization_detail_types")

PAYMENT_TEMPLATE = """\
<p class="detail-summary">Pay <strong>{{ detail.instructedAmount.currency }} {{ detail.instructedAmount.amount }}</strong> \
to {{ detail.creditorName }}{% if detail.remittanceInformationUnstructured %}, \
reference {{ detail.remittanceInformationUnstructured }}{% endif %}</p>
<dl>
  {% if detail.creditorAccount.iban %}<div class="detail-row"><dt>IBAN</dt><dd>{{ detail.creditorAccount.iban }}</dd></div>{% endif %}
  {% if detail.creditorAccount.bic %}<div class="detail-row"><dt>BIC</dt><dd>{{ detail.creditorAccount.bic }}</dd></div>{% endif %}
  {% if detail.actions %}<div class="detail-row"><dt>The agent may</dt><dd>{{ detail.actions|join:", " }}</dd></div>{% endif %}
  {% if detail.locations %}<div class="detail-row"><dt>Payment service</dt><dd>{{ detail.locations|join:", " }}</dd></div>{% endif %}
</dl>
"""

CALENDAR_TEMPLATE = """\
<p class="detail-summary">\
{% if "delete" in detail.actions %}Delete{% elif "update" in detail.actions %}Change{% else %}Create{% endif %} \
the event {{ detail.title }}{% if detail.calendar %} in the calendar {{ detail.calendar }}{% endif %}</p>
<dl>
  <div class="detail-row"><dt>When</dt><dd>{{ detail.start|iso_datetime }} to {{ detail.end|iso_datetime }}</dd></div>
  {% if detail.attendees %}<div class="detail-row"><dt>Invites</dt><dd>{{ detail.attendees|join:", " }}</dd></div>{% endif %}
  {% if detail.identifier %}<div class="detail-row"><dt>Event</dt><dd>{{ detail.identifier }}</dd></div>{% endif %}
</dl>
"""

TEMPLATES = {
    "payment_initiation": (EXAMPLES.PAYMENT_TEMPLATE, PAYMENT_TEMPLATE),
    "calendar_event": (EXAMPLES.CALENDAR_TEMPLATE, CALENDAR_TEMPLATE),
}


def _replace(apps: Any, *, forward: bool) -> None:
    AuthorizationDetailType = apps.get_model("authz", "AuthorizationDetailType")
    for type_name, (original, new) in TEMPLATES.items():
        old, replacement = (original, new) if forward else (new, original)
        AuthorizationDetailType.objects.filter(type=type_name, display_template=old).update(
            display_template=replacement
        )


def restrict_example_templates(apps: Any, schema_editor: Any) -> None:
    _replace(apps, forward=True)


def unrestrict_example_templates(apps: Any, schema_editor: Any) -> None:
    _replace(apps, forward=False)


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0009_redact_stored_tokens"),
    ]

    operations = [
        migrations.RunPython(restrict_example_templates, unrestrict_example_templates),
    ]
