"""Packing payload columns: the table columns packed into each task's payload (a JSON
object), the one column a payload is read from, and the NaN/infinity check of packed values."""

from __future__ import annotations

import polars as pl
from polars.datatypes import DataTypeClass  # a dtype's inner or field type may be a class

from .submission import BatchSubmission
from .validate import BAD_PAYLOAD, _bad_input


def _payload_source(schema: pl.Schema, spec: BatchSubmission) -> tuple[list[str], pl.Expr]:
    """The raw columns a payload is made of, and the expression making it (binary)."""
    if spec._payload_columns:
        cols = list(spec._payload_columns)
        return cols, _packed_payload(schema, cols)
    source = spec._columns.get("payload")
    if source is None and "payload" in schema and "payload" not in spec._columns.values():
        source = "payload"
    if source is None:
        return [], pl.lit(None, dtype=pl.Binary).alias("payload")
    return [source], pl.col(source).cast(pl.Binary).alias("payload")


def _packed_payload(schema: pl.Schema, columns: list[str]) -> pl.Expr:
    for name in columns:
        dtype = schema[name]
        if _no_json_form(dtype):
            raise _bad_input(
                f"payload_columns(): column {name!r} has type {dtype}, which has no JSON form "
                "(binary data, at any depth, cannot be packed; pass it as the payload column)",
                name,
            )
    return pl.struct(columns).struct.json_encode().cast(pl.Binary).alias("payload")


def _no_json_form(dtype: pl.DataType | DataTypeClass) -> bool:
    """Whether a value of ``dtype`` (at any depth) has no JSON form: binary or objects."""
    if dtype == pl.Binary or isinstance(dtype, pl.Object):
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _no_json_form(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_no_json_form(f.dtype) for f in dtype.fields)
    return False


def _non_finite(expr: pl.Expr, dtype: pl.DataType | DataTypeClass) -> pl.Expr | None:
    """True where a value (at any depth) is NaN or infinite: JSON has no such numbers."""
    if dtype.is_float():
        return expr.is_nan() | expr.is_infinite()
    if isinstance(dtype, pl.List | pl.Array):
        inner = _non_finite(pl.element(), dtype.inner)
        if inner is None:
            return None
        as_list = expr if isinstance(dtype, pl.List) else expr.cast(pl.List(dtype.inner))
        return as_list.list.eval(inner.fill_null(False)).list.any()
    if isinstance(dtype, pl.Struct):
        parts = [_non_finite(expr.struct.field(f.name), f.dtype) for f in dtype.fields]
        found = [p.fill_null(False) for p in parts if p is not None]
        return pl.any_horizontal(found) if found else None
    return None


def _payload_check(schema: pl.Schema, columns: list[str]) -> pl.Expr:
    found = [
        e.fill_null(False)
        for name in columns
        if (e := _non_finite(pl.col(name), schema[name])) is not None
    ]
    return (pl.any_horizontal(found) if found else pl.lit(False)).alias(BAD_PAYLOAD)
