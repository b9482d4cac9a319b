"""Fast idempotent bulk insert of samples: COPY into a temporary table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into ``catalog_sample``.

COPY is PostgreSQL's fastest way in; the staging table keeps the unique constraints (dataset +
external id, dataset + path) in charge of idempotency, so importing the same rows again inserts
nothing and a re-delivered import task is harmless. Must run inside the caller's transaction.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import orjson
from django.db import connection

SAMPLE_COLUMNS: tuple[str, ...] = (
    "dataset_id", "external_id", "path", "sha256", "width", "height", "label", "manipulation", "params",
    "identity", "video", "frame", "split", "region_targets", "landmarks", "gt_mask_path", "has_mask",
    "created_at",
)  # fmt: skip
_JSON_COLUMNS = {"params", "region_targets", "landmarks"}
_STAGE_TYPES = {
    "dataset_id": "bigint", "width": "integer", "height": "integer", "frame": "integer",
    "params": "jsonb", "region_targets": "jsonb", "landmarks": "jsonb", "has_mask": "boolean",
    "created_at": "timestamptz",
}  # fmt: skip
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text_value(value) -> str:
    """One field in PostgreSQL COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).translate(_ESCAPES)


def copy_buffer(rows: Iterable[Sequence]) -> io.StringIO:
    buffer = io.StringIO()
    write = buffer.write
    for row in rows:
        write("\t".join(map(copy_text_value, row)))
        write("\n")
    buffer.seek(0)
    return buffer


def _json(value) -> str:
    return orjson.dumps(value).decode()


def sample_tuples(rows: Iterable[dict], *, dataset_id: int, created_at: str) -> Iterable[tuple]:
    for row in rows:
        yield (
            dataset_id, row["external_id"], row["path"], row["sha256"], row["width"], row["height"],
            row["label"], row["manipulation"], _json(row["params"]), row["identity"], row["video"],
            row["frame"], row["split"], _json(row["region_targets"]),
            None if row["landmarks"] is None else _json(row["landmarks"]), row["gt_mask_path"],
            False, created_at,
        )  # fmt: skip


def copy_samples(rows, *, direct: bool = False) -> int:
    """COPY the tuples (SAMPLE_COLUMNS order) into catalog_sample; returns how many rows were new.

    ``rows``: tuples, or a file whose ``read`` gives COPY text (the import streams checked chunks).

    ``direct=True`` (the dataset has no samples yet and the caller holds its lock, the source has no
    duplicates) copies straight into catalog_sample; otherwise rows go through a staging table and
    ``ON CONFLICT DO NOTHING`` skips those already present.
    """
    columns = ", ".join(SAMPLE_COLUMNS)
    data = rows if hasattr(rows, "read") else copy_buffer(rows)
    with connection.cursor() as cursor:
        if direct:
            cursor.copy_expert(f"COPY catalog_sample ({columns}) FROM STDIN", data, 1 << 20)
            return cursor.rowcount
        stage_columns = ", ".join(f"{c} {_STAGE_TYPES.get(c, 'text')}" for c in SAMPLE_COLUMNS)
        cursor.execute(f"CREATE TEMP TABLE catalog_sample_stage ({stage_columns}) ON COMMIT DROP")
        cursor.copy_expert(f"COPY catalog_sample_stage ({columns}) FROM STDIN", data, 1 << 20)
        cursor.execute(
            f"INSERT INTO catalog_sample ({columns}) SELECT {columns} FROM catalog_sample_stage "  # noqa: S608
            "ON CONFLICT DO NOTHING"
        )
        inserted = cursor.rowcount
        cursor.execute("DROP TABLE catalog_sample_stage")
    return inserted
