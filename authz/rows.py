"""One row and its one-to-one companion, read by SQL built once per process (issue 17).

Every bc-authorize reads its client (with the client's CibaClient) and its user (with the user's Approver). Through
the ORM, compiling each of those queries cost about three times the CPU of running it; here the SQL and the column
converters are built on first use, and the rows become model instances exactly as `select_related` makes them: the
companion (or None) is cached on the parent, and the parent on the companion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, Model, OneToOneField


@dataclass(frozen=True)
class _Columns:
    """One model's columns in a row: where they are and how the ORM would convert them (JSON, SQLite's text)."""

    model: type[Model]
    start: int
    attnames: list[str]
    converters: list[tuple[Any, list[Callable[..., Any]]]]

    def build(self, row: tuple[Any, ...]) -> Any:
        values = list(row[self.start : self.start + len(self.attnames)])
        if values[self.attnames.index(self.model._meta.pk.attname)] is None:
            return None
        for i, (expression, converters) in enumerate(self.converters):
            for converter in converters:
                values[i] = converter(values[i], expression, connection)
        return self.model.from_db(connection.alias, self.attnames, values)


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column, f"{model.__name__}.{name} is not a column"
    return field


def _columns(model: type[Model], alias: str, start: int) -> _Columns:
    fields = list(model._meta.concrete_fields)
    converters = []
    for field in fields:
        # As the ORM's compiler converts a selected column: the backend's converters, then the field's.
        expression = field.get_col(alias)
        converters.append(
            (expression, [*connection.ops.get_db_converters(expression), *expression.get_db_converters(connection)])
        )
    return _Columns(model, start, [f.attname for f in fields], converters)


class WithCompanion:
    """`parent` by a unique field, LEFT JOINed to `companion`, whose one-to-one field `link` points at it:
    `Parent.objects.select_related(<link's related_name>).get(<field>=value)` without the ORM's compiler."""

    def __init__(
        self,
        parent: Callable[[], type[Model]],
        companion: type[Model],
        *,
        link: str,
        field: str | Callable[[type[Model]], str],
    ) -> None:
        # The parent model is looked up on first use: swappable models (the user, DOT's application) are only
        # known once the app registry is ready.
        self._parent, self._companion, self._link, self._field = parent, companion, link, field
        self._built: tuple[str, _Columns, _Columns] | None = None

    def _build(self) -> tuple[str, _Columns, _Columns]:
        parent, companion = self._parent(), self._companion
        q = connection.ops.quote_name
        p_meta, c_meta = parent._meta, companion._meta
        p_cols = _columns(parent, "p", 0)
        c_cols = _columns(companion, "c", len(p_cols.attnames))
        select = [f"p.{q(f.column)}" for f in p_meta.concrete_fields] + [
            f"c.{q(f.column)}" for f in c_meta.concrete_fields
        ]
        join = f"c.{q(_field(companion, self._link).column)} = p.{q(p_meta.pk.column)}"
        field = self._field if isinstance(self._field, str) else self._field(parent)
        # Only quoted identifiers from the models' metadata are interpolated; the value is a parameter.
        sql = (
            f"SELECT {', '.join(select)} FROM {q(p_meta.db_table)} p "  # noqa: S608
            f"LEFT JOIN {q(c_meta.db_table)} c ON {join} "
            f"WHERE p.{q(_field(parent, field).column)} = %s"
        )
        return sql, p_cols, c_cols

    def get(self, value: Any) -> Any:
        """The parent with its companion cached on it (None when there is none); None when no parent matches."""
        if self._built is None:
            self._built = self._build()
        sql, p_cols, c_cols = self._built
        with connection.cursor() as cursor:
            cursor.execute(sql, [value])
            row = cursor.fetchone()
        if row is None:
            return None
        parent, companion = p_cols.build(row), c_cols.build(row)
        relation = _field(self._companion, self._link)
        assert isinstance(relation, OneToOneField)
        relation.remote_field.set_cached_value(parent, companion)
        if companion is not None:
            relation.set_cached_value(companion, parent)
        return parent
