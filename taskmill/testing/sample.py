"""Synthetic sync plans shaped like a bucket diff, for demos, benchmarks and tests."""

from __future__ import annotations

import polars as pl

ENDPOINTS = (
    "s3://us-east-1.amazonaws.com",
    "s3://eu-west-1.amazonaws.com",
    "gcs://europe-west4",
    "azure://westeurope",
)
ACTIONS = ("sync.upload", "sync.copy", "sync.delete")


def make_plan(
    rows: int,
    *,
    seed: int = 0,
    start: int = 0,
    duplicate_rate: float = 0.0,
    invalid_rate: float = 0.0,
    random_prefixes: bool = False,
) -> pl.DataFrame:
    """A sync plan with ``rows`` actions, deterministic for a ``seed``.

    Columns: ``task_type``, ``dedup_key`` (an object path), ``group`` (the endpoint),
    ``priority`` (deletes are more urgent), ``payload`` (JSON text with source, size and
    checksum) and ``expected_net_tx_bytes``.  Keys are ``start``, ``start + 1``, …; with
    ``duplicate_rate`` that share of rows repeats an earlier key of the plan (a diff that
    saw an object change twice); with ``invalid_rate`` that share of rows carries a bad
    value (a priority of 300, or an empty task type) to show how failures are reported.
    With ``random_prefixes`` an object's folders are named by hashes of its number
    (``data/<h>/<h>/part-N.parquet``, the same for every seed), so consecutive keys land
    all over a key index, as a real bucket's do.
    """
    idx = pl.int_range(start, start + rows, dtype=pl.Int64, eager=True).alias("i")
    df = pl.DataFrame(idx).with_columns(
        (pl.col("i").hash(seed) % 1000).alias("h"),
        (pl.col("i").hash(seed + 1) % 50_000_000 + 1).alias("size"),
    )
    if duplicate_rate > 0:
        dup = (pl.col("i").hash(seed + 2) % 10_000) < int(duplicate_rate * 10_000)
        back = (pl.col("i").hash(seed + 3) % 1000 + 1).cast(pl.Int64)
        df = df.with_columns(
            pl.when(dup & (pl.col("i") - back >= start))
            .then(pl.col("i") - back)
            .otherwise(pl.col("i"))
            .alias("k")
        )
    else:
        df = df.with_columns(pl.col("i").alias("k"))
    action = (
        pl.when(pl.col("h") < 700)
        .then(pl.lit(ACTIONS[0]))
        .when(pl.col("h") < 850)
        .then(pl.lit(ACTIONS[1]))
        .otherwise(pl.lit(ACTIONS[2]))
    )
    endpoint = pl.lit(pl.Series(ENDPOINTS)).get(pl.col("k").hash(seed + 4) % len(ENDPOINTS))
    if random_prefixes:
        folders = (pl.col("k").hash(7) % 4093, pl.col("k").hash(8) % 100_003)
    else:
        folders = (pl.col("k") % 97, pl.col("k") % 1013)
    key = pl.format("data/{}/{}/part-{}.parquet", *folders, pl.col("k"))
    bad = (pl.col("i").hash(seed + 5) % 10_000) < int(invalid_rate * 10_000)
    odd = pl.col("i") % 2 == 1
    priority = pl.when(action == ACTIONS[2]).then(64).otherwise(128)
    return df.select(
        pl.when(bad & odd).then(pl.lit("")).otherwise(action).alias("task_type"),
        pl.concat_str(endpoint, pl.lit("/"), key).alias("dedup_key"),
        endpoint.alias("group"),
        pl.when(bad & ~odd).then(300).otherwise(priority).cast(pl.Int64).alias("priority"),
        pl.format(
            '{{"src":"/mnt/data/{}","size":{},"crc":"{}"}}', key, pl.col("size"), pl.col("h")
        ).alias("payload"),
        pl.col("size").cast(pl.Int64).alias("expected_net_tx_bytes"),
    )
