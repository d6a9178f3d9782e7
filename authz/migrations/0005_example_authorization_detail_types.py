"""Two example RFC 9396 authorization_details types: a payment (the RFC's own §2 example) and a calendar change.

Both forbid fields they do not name (additionalProperties: false): the approver must see everything the token will
allow, and a display template only shows the fields it knows.
"""

from django.db import migrations

# A positive decimal string ("123.50", "0.99"): strings avoid floating-point rounding of money.
AMOUNT_PATTERN = r"^(?!0+(\.0+)?$)(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$"
# Printable text without line breaks (control characters are refused for every type by authz.rar as well).
LINE = {"type": "string", "minLength": 1, "maxLength": 140, "pattern": r"^[^\r\n\t]*\S[^\r\n\t]*$"}

PAYMENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Payment initiation (RFC 9396 §2)",
    "type": "object",
    "required": ["type", "instructedAmount", "creditorName"],
    "properties": {
        "type": {"const": "payment_initiation"},
        "actions": {
            "type": "array",
            "items": {"enum": ["initiate", "status", "cancel"]},
            "minItems": 1,
            "uniqueItems": True,
        },
        "locations": {
            "type": "array",
            "items": {"type": "string", "maxLength": 2000, "pattern": r"^https://[^\s/?#]+[^\s]*$"},
            "minItems": 1,
            "maxItems": 5,
            "uniqueItems": True,
        },
        "instructedAmount": {
            "type": "object",
            "required": ["currency", "amount"],
            "properties": {
                # ISO 4217 alphabetic code.
                "currency": {"type": "string", "pattern": r"^[A-Z]{3}$"},
                "amount": {"type": "string", "pattern": AMOUNT_PATTERN},
            },
            "additionalProperties": False,
        },
        "creditorName": LINE,
        "creditorAccount": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                # ISO 13616 IBAN, ISO 9362 BIC (upper case, no spaces).
                "iban": {"type": "string", "pattern": r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"},
                "bic": {"type": "string", "pattern": r"^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$"},
            },
            "additionalProperties": False,
        },
        "remittanceInformationUnstructured": LINE,
    },
    "additionalProperties": False,
}

PAYMENT_TEMPLATE = """\
<p class="detail-summary">Pay <strong>{{ detail.instructedAmount.currency }} {{ detail.instructedAmount.amount }}</strong> \
to <strong>{{ detail.creditorName }}</strong>{% if detail.remittanceInformationUnstructured %}, \
reference “{{ detail.remittanceInformationUnstructured }}”{% endif %}</p>
<dl>
  {% if detail.creditorAccount.iban %}<div class="detail-row"><dt>IBAN</dt><dd>{{ detail.creditorAccount.iban }}</dd></div>{% endif %}
  {% if detail.creditorAccount.bic %}<div class="detail-row"><dt>BIC</dt><dd>{{ detail.creditorAccount.bic }}</dd></div>{% endif %}
  {% if detail.actions %}<div class="detail-row"><dt>The agent may</dt><dd>{{ detail.actions|join:", " }}</dd></div>{% endif %}
  {% if detail.locations %}<div class="detail-row"><dt>Payment service</dt><dd>{{ detail.locations|join:", " }}</dd></div>{% endif %}
</dl>
"""

CALENDAR_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "A change to the person's calendar",
    "type": "object",
    "required": ["type", "actions", "title", "start", "end"],
    "properties": {
        "type": {"const": "calendar_event"},
        # One action per object, so the summary says exactly what happens.
        "actions": {"type": "array", "items": {"enum": ["create", "update", "delete"]}, "minItems": 1, "maxItems": 1},
        # RFC 9396 §2.2: the event an update or delete applies to.
        "identifier": {"type": "string", "minLength": 1, "maxLength": 200},
        "calendar": {**LINE, "maxLength": 100},
        "title": {**LINE, "maxLength": 200},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "attendees": {
            "type": "array",
            "items": {"type": "string", "format": "email", "maxLength": 254, "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
            "maxItems": 50,
            "uniqueItems": True,
        },
    },
    "additionalProperties": False,
    # Changing or deleting needs to name the event; creating makes a new one.
    "if": {"required": ["actions"], "properties": {"actions": {"contains": {"enum": ["update", "delete"]}}}},
    "then": {"required": ["identifier"]},
}

CALENDAR_TEMPLATE = """\
{% load approver_ui %}<p class="detail-summary">\
{% if "delete" in detail.actions %}Delete{% elif "update" in detail.actions %}Change{% else %}Create{% endif %} \
the event <strong>“{{ detail.title }}”</strong>{% if detail.calendar %} in the calendar “{{ detail.calendar }}”{% endif %}</p>
<dl>
  <div class="detail-row"><dt>When</dt><dd>{{ detail.start|iso_datetime }} to {{ detail.end|iso_datetime }}</dd></div>
  {% if detail.attendees %}<div class="detail-row"><dt>Invites</dt><dd>{{ detail.attendees|join:", " }}</dd></div>{% endif %}
  {% if detail.identifier %}<div class="detail-row"><dt>Event</dt><dd>{{ detail.identifier }}</dd></div>{% endif %}
</dl>
"""

EXAMPLES = [
    {
        "type": "payment_initiation",
        "name": "Payment",
        "description": "A single payment (RFC 9396 §2): amount and currency, the creditor, optionally the "
        "creditor's account and a reference.",
        "schema": PAYMENT_SCHEMA,
        "display_template": PAYMENT_TEMPLATE,
    },
    {
        "type": "calendar_event",
        "name": "Calendar",
        "description": "Create, change or delete one event in the person's calendar.",
        "schema": CALENDAR_SCHEMA,
        "display_template": CALENDAR_TEMPLATE,
    },
]


def add_examples(apps, schema_editor):
    AuthorizationDetailType = apps.get_model("authz", "AuthorizationDetailType")
    for example in EXAMPLES:
        # An admin's own type of the same name wins.
        AuthorizationDetailType.objects.get_or_create(type=example["type"], defaults=example)


def remove_examples(apps, schema_editor):
    AuthorizationDetailType = apps.get_model("authz", "AuthorizationDetailType")
    AuthorizationDetailType.objects.filter(type__in=[example["type"] for example in EXAMPLES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0004_client_keys_rar_token_details"),
    ]

    operations = [
        migrations.RunPython(add_examples, remove_examples),
    ]
