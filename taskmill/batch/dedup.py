"""In-batch dedup: the last valid row of each ``(task_type, dedup_key)`` wins.

Keys are first told apart by a 64-bit fingerprint (cheap on millions of rows); only rows
whose fingerprint repeats are grouped by their exact key, so a collision never merges two
different keys.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

#: A hidden column of a plan kept on disk: a 64-bit fingerprint of each valid row's key.
_FINGERPRINT = "__taskmill_key_fingerprint"


def _fingerprinted(frame: pl.LazyFrame) -> pl.LazyFrame:
    """``frame`` (validated rows) with each row's :func:`_fingerprint` in :data:`_FINGERPRINT`."""
    return frame.with_columns(_fingerprint().alias(_FINGERPRINT))


def _fingerprint(schema: pl.Schema | None = None) -> pl.Expr:
    """A 64-bit fingerprint of ``(task_type, dedup_key)`` for valid keyed rows, else null
    (stable within the process, which is all in-batch dedup needs)."""
    keyed = pl.col("error_kind").is_null() & pl.col("dedup_key").is_not_null()
    return pl.when(keyed).then(pl.col("task_type").hash(7) ^ pl.col("dedup_key").hash(11))


def _mark_winners(df: pl.DataFrame) -> pl.DataFrame:
    """:func:`_with_winners` for a frame that holds its keys."""
    keyed = df.select("index", "error_kind", _fingerprint().alias(_FINGERPRINT))
    marks = _with_winners(
        keyed,
        lambda rows: df.filter(pl.col("index").is_in(rows.implode())).select(
            "index", "task_type", "dedup_key"
        ),
    )
    return df.with_columns(marks["winner_index"], marks["winner"])


def _repeated(values: pl.Series) -> pl.Series:
    """True where a non-null value occurs more than once.  Found by sorting (a few bytes
    per row) rather than ``is_duplicated`` (a hash table of every value: ~90 bytes per
    row on a million distinct keys)."""
    order = values.arg_sort(nulls_last=True)
    ordered = values.gather(order)
    same = (ordered == ordered.shift(1)).fill_null(False) | (
        ordered == ordered.shift(-1)
    ).fill_null(False)
    flags = pl.Series("repeated", [False] * 0, dtype=pl.Boolean).extend_constant(
        False, values.len()
    )
    return flags.scatter(order.filter(same), True)


def _with_winners(keyed: pl.DataFrame, exact: Callable[[pl.Series], pl.DataFrame]) -> pl.DataFrame:
    """Inside the batch, the last valid row of each ``(task_type, dedup_key)`` wins.

    ``keyed`` holds ``index``, ``error_kind`` and each row's key fingerprint; keys are
    first told apart by it (cheap on millions of rows), and only the rows whose
    fingerprint repeats — the real duplicates, and any collision — are grouped by the
    exact key, which ``exact(indices)`` fetches (``index``, ``task_type``, ``dedup_key``),
    so a collision can never merge two different keys.  Adds ``winner_index`` and
    ``winner``.
    """
    valid = pl.col("error_kind").is_null()
    repeated = _repeated(keyed[_FINGERPRINT])
    winner_index = keyed["index"].clone().alias("winner_index")  # its own row, unless …
    if repeated.any():
        dupes = exact(keyed["index"].filter(repeated)).select(
            "index", pl.col("index").max().over("task_type", "dedup_key").alias("last")
        )
        winner_index = winner_index.scatter(dupes["index"], dupes["last"])
    return keyed.with_columns(
        pl.when(valid).then(winner_index).alias("winner_index"),
    ).with_columns(
        (valid & (pl.col("winner_index") == pl.col("index"))).fill_null(False).alias("winner"),
    )
