"""Every string in the two example authorization_details types gets a maxLength (issue 14: bound input sizes before
patterns). authz.rar refuses any string longer than rar.MAX_STRING_CHARS before a schema runs; these bounds are the
fields' own, tighter ones, so that the schema alone says what a field may hold.

Only a type whose schema is still exactly the one migration 0005 installed is changed: an admin's own schema stays.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from django.db import migrations

EXAMPLES = importlib.import_module("authz.migrations.0005_example_authorization_detail_types")

# (type, path of a string subschema inside its schema) -> maxLength.
MAX_LENGTHS: dict[str, dict[tuple[str, ...], int]] = {
    "payment_initiation": {
        # Was 2000: a resource server's URL; authz.rar refuses anything longer than 512 in any case.
        ("properties", "locations", "items"): 512,
        ("properties", "instructedAmount", "properties", "currency"): 3,  # ISO 4217
        # Up to 15 integer digits, a point and 4 decimals (the 0005 pattern).
        ("properties", "instructedAmount", "properties", "amount"): 20,
        ("properties", "creditorAccount", "properties", "iban"): 34,  # ISO 13616
        ("properties", "creditorAccount", "properties", "bic"): 11,  # ISO 9362
    },
    "calendar_event": {
        # RFC 3339 with nine fractional digits and an offset is 35 characters.
        ("properties", "start"): 40,
        ("properties", "end"): 40,
    },
}


def bounded(type_name: str, schema: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(schema)
    for path, max_length in MAX_LENGTHS[type_name].items():
        node = result
        for key in path:
            node = node[key]
        node["maxLength"] = max_length
    return result


def _replace(apps: Any, *, forward: bool) -> None:
    AuthorizationDetailType = apps.get_model("authz", "AuthorizationDetailType")
    for example in EXAMPLES.EXAMPLES:
        original = example["schema"]
        new = bounded(example["type"], original)
        old, replacement = (original, new) if forward else (new, original)
        for kind in AuthorizationDetailType.objects.filter(type=example["type"]):
            if kind.schema == old:
                kind.schema = replacement
                kind.save(update_fields=["schema"])


def bound_example_strings(apps: Any, schema_editor: Any) -> None:
    _replace(apps, forward=True)


def unbound_example_strings(apps: Any, schema_editor: Any) -> None:
    _replace(apps, forward=False)


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0006_resource_servers_and_grant_time"),
    ]

    operations = [
        migrations.RunPython(bound_example_strings, unbound_example_strings),
    ]
