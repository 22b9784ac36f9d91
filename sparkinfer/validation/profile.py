"""Profiles: what a validation keeps of a prediction table, bounded by bins, never by rows.

A `Profile` holds one `ColumnProfile` per prediction column: its row, null, error, truncation and empty
counts, a `Distribution` per numeric field (a score, a length, an embedding's norm), the counts per value of
each categorical field (a label, a finish reason, a status), and for embeddings the centroid and a capped
sample for the domain classifier. It is plain data: `to_dict`/`from_dict` round-trip it through JSON, so a
published version's profile can be stored beside its table and compared with later (`save`/`load`).
Building one from a DataFrame is `sparkinfer.spark.validate.profile`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from sparkinfer.errors import SpecError
from sparkinfer.validation.stats import Distribution

Kind = Literal["classification", "scores", "labels", "embedding", "token_classification", "generation", "extraction",
               "text"]
KINDS: tuple[str, ...] = get_args(Kind)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Categorical:
    """Counts per value of a categorical field: the `counts` of the most frequent values, `other` for the rest."""

    counts: Mapping[str, int]
    other: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def with_other(self) -> dict[str, int]:
        """`counts` plus the cut values as one category (what the statistics compare)."""
        return {**self.counts, **({"(other)": self.other} if self.other else {})}


@dataclass(frozen=True)
class Embeddings:
    """An embedding column's centroid and a uniform sample of its vectors (rows x dim, float32)."""

    dim: int
    centroid: tuple[float, ...]
    sample: np.ndarray = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        sample = np.ascontiguousarray(self.sample, dtype="<f4")
        return {"dim": self.dim, "centroid": list(self.centroid), "sample_rows": int(sample.shape[0]),
                "sample": base64.b64encode(sample.tobytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Embeddings:
        flat = np.frombuffer(base64.b64decode(data["sample"]), dtype="<f4")
        return cls(int(data["dim"]), tuple(float(x) for x in data["centroid"]),
                   flat.reshape(int(data["sample_rows"]), int(data["dim"])))


@dataclass(frozen=True)
class ColumnProfile:
    """One prediction column.

    Attributes:
        kind: What the column holds (see `KINDS`); it decides the fields and the default checks.
        rows: Rows of the table.
        nulls: Rows whose prediction is null (a null input, or a failed row with ``on_error="null"``).
        errors: Rows whose prediction failed, when known (``on_error="column"``, or the run's counters).
        truncated: Rows whose input or output was cut, when known (finish reason "length", status
            "truncated", or the run's counters).
        empty: Text kinds: rows whose text is empty or blank.
        numeric: Distribution per numeric field.
        categorical: Counts per categorical field.
        embedding: Embedding columns: centroid and sample.
    """

    kind: str
    rows: int
    nulls: int
    errors: int | None = None
    truncated: int | None = None
    empty: int | None = None
    numeric: Mapping[str, Distribution] = field(default_factory=dict)
    categorical: Mapping[str, Categorical] = field(default_factory=dict)
    embedding: Embeddings | None = None

    def rate(self, name: str) -> float | None:
        """``null_rate``, ``error_rate``, ``truncation_rate`` or ``empty_rate`` of all rows; None when unknown."""
        count = {"null_rate": self.nulls, "error_rate": self.errors, "truncation_rate": self.truncated,
                 "empty_rate": self.empty}[name]
        return None if count is None or self.rows == 0 else count / self.rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "rows": self.rows, "nulls": self.nulls, "errors": self.errors,
            "truncated": self.truncated, "empty": self.empty,
            "numeric": {k: d.to_dict() for k, d in self.numeric.items()},
            "categorical": {k: {"counts": dict(c.counts), "other": c.other} for k, c in self.categorical.items()},
            "embedding": None if self.embedding is None else self.embedding.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        return cls(
            kind=data["kind"], rows=int(data["rows"]), nulls=int(data["nulls"]), errors=data.get("errors"),
            truncated=data.get("truncated"), empty=data.get("empty"),
            numeric={k: Distribution.from_dict(v) for k, v in data.get("numeric", {}).items()},
            categorical={k: Categorical({str(a): int(b) for a, b in v["counts"].items()}, int(v.get("other", 0)))
                         for k, v in data.get("categorical", {}).items()},
            embedding=None if data.get("embedding") is None else Embeddings.from_dict(data["embedding"]),
        )


@dataclass(frozen=True)
class Profile:
    """A table's profile: its row count, where it came from, and one `ColumnProfile` per prediction column."""

    rows: int
    columns: Mapping[str, ColumnProfile]
    source: str = ""
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": "sparkinfer-profile", "version": FORMAT_VERSION, "rows": self.rows, "source": self.source,
                "created": self.created, "columns": {k: c.to_dict() for k, c in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("format") != "sparkinfer-profile" or data.get("version") != FORMAT_VERSION:
            raise SpecError(
                f"expected a sparkinfer profile (format 'sparkinfer-profile', version {FORMAT_VERSION}), got "
                f"format {data.get('format')!r} version {data.get('version')!r}; profile the reference again"
            )
        return cls(int(data["rows"]), {k: ColumnProfile.from_dict(v) for k, v in data["columns"].items()},
                   str(data.get("source", "")), str(data.get("created", "")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str) -> None:
        """Write the profile as JSON to a local path or any URI pyarrow can open."""
        _write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Profile:
        """Read a profile `save` wrote."""
        return cls.from_dict(json.loads(_read_text(path)))


def _filesystem(path: str) -> tuple[Any, str]:
    import os

    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))  # type: ignore[no-any-return]


def _write_text(path: str, text: str) -> None:
    fs, inner = _filesystem(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode())


def _read_text(path: str) -> str:
    fs, inner = _filesystem(path)
    with fs.open_input_stream(inner) as stream:
        return bytes(stream.read()).decode()
