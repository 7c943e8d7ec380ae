"""The batch side, pure data work (no database): a plan's way runs straight down.

``inputs`` (every table-like -> Arrow/polars; Parquet pinned, spooled) -> ``validate`` (each
rule once, for one submission and for a frame) -> ``payload`` (packing payload columns) ->
``dedup`` (last wins) -> ``prepare`` (the prepared plan, read back per chunk) -> the store ->
``outcome`` (what the batch did to every row, and its frame views).  ``submission`` holds the
public builder, :class:`~taskmill.batch.submission.BatchSubmission`.
"""
