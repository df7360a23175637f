"""Streamed pair exports: TRL-format JSONL or Parquet, produced batch by batch.

Neither format is built in memory as a whole: JSONL yields one chunk per batch of records,
Parquet writes one row group per batch into a sink that the generator drains after each write.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("iteration", pa.int64()),
        ("prompt", _MESSAGES),
        ("chosen", _MESSAGES),
        ("rejected", _MESSAGES),
        ("score_chosen", pa.float64()),
        ("score_rejected", pa.float64()),
        ("chosen_length", pa.int64()),
        ("rejected_length", pa.int64()),
        ("chosen_chars", pa.int64()),
        ("rejected_chars", pa.int64()),
        ("ref_chosen_logps", pa.float64()),
        ("ref_rejected_logps", pa.float64()),
        ("s_ref", pa.float64()),
    ]
)


def jsonl_chunks(batches: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    """One UTF-8 JSONL chunk per batch (every record keeps its extra keys)."""
    for batch in batches:
        yield "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch).encode("utf-8")


class _DrainableSink(io.RawIOBase):
    """A write-only file whose written bytes are handed out and forgotten by `drain`."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def parquet_chunks(batches: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    """A Parquet file (columns of PAIR_SCHEMA; extra keys are not exported) as byte chunks."""
    sink = _DrainableSink()
    writer = pq.ParquetWriter(sink, PAIR_SCHEMA, compression="zstd")
    try:
        for batch in batches:
            table = pa.Table.from_pylist(
                [{name: r.get(name) for name in PAIR_SCHEMA.names} for r in batch], schema=PAIR_SCHEMA
            )
            writer.write_table(table)
            if chunk := sink.drain():
                yield chunk
    finally:
        writer.close()
    yield sink.drain()
