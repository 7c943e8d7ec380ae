"""Tags in the store: the rows of ``task_tags`` a transaction writes for the tasks it
inserted, found once for every driver (each driver writes them in one statement: a JSON
array through ``json_each`` on SQLite, arrays through ``unnest`` on PostgreSQL)."""

from __future__ import annotations

import polars as pl

from .calls import NewTask
from .staging import INSERTING

__all__ = ["TAG_ROW", "new_tags", "tags_of_task"]

#: The columns of the tag rows a transaction writes.
TAG_ROW: dict[str, pl.DataType] = {"task_id": pl.Int64(), "key": pl.String(), "value": pl.String()}


def new_tags(part: pl.DataFrame, result: pl.DataFrame) -> pl.DataFrame:
    """``task_id``, ``key``, ``value`` of every tag of the rows of ``part`` (a transaction's
    rows, ``index`` and ``tags``) that ``result`` (its merge's decisions) says inserted a
    task; empty when none carries a tag."""
    if "tags" not in part.columns:
        return pl.DataFrame(schema=TAG_ROW)
    tagged = part.select("index", "tags").filter(pl.col("tags").list.len() > 0)
    if not tagged.height:
        return pl.DataFrame(schema=TAG_ROW)
    new = result.filter(pl.col("action").is_in(INSERTING)).select("index", "task_id")
    return (
        new.join(tagged, on="index", how="inner")
        .explode("tags")
        .select(pl.col("task_id").cast(pl.Int64), pl.col("tags").struct.unnest())
        .select(list(TAG_ROW))
    )


def tags_of_task(task: NewTask) -> list[tuple[int, str, str]]:
    """The tag rows of one task a submit inserts."""
    return [(task.id, key, value) for key, value in task.row.tags or ()]
