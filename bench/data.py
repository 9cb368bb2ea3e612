"""Deterministic, clustered 1024-dimensional embeddings and the exact answers to the benchmark's queries.

Real text embeddings are neither uniform nor isotropic: they crowd around topics and vary along far
fewer directions than they have dimensions. The generator mimics that with `clusters` random topic
centroids, a shared low-rank "style" subspace and a little isotropic noise, then L2-normalises every
row, as embedding APIs return them. Query vectors are drawn the same way around the same centroids,
so they land near the data, as a search for an existing topic does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DIMENSIONS = 1024
#: Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

Matrix = NDArray[np.float32]


@dataclass(frozen=True)
class Dataset:
    vectors: Matrix  # (rows, 1024), L2-normalised
    queries: Matrix  # (queries, 1024), L2-normalised
    #: Exact top-k ids (1-based, as bigserial assigns them in COPY order) and cosine distances.
    exact_ids: NDArray[np.int64]
    exact_distances: NDArray[np.float64]
    clusters: int
    seed: int


def _normalise(matrix: NDArray[np.float64]) -> Matrix:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def _draw(rng: np.random.Generator, centroids: NDArray[np.float64], basis: NDArray[np.float64], count: int) -> Matrix:
    """`count` points: a random centroid, plus a low-rank offset (norm about 0.6) and isotropic noise (about 0.25)."""
    which = rng.integers(0, len(centroids), size=count)
    latent = rng.standard_normal((count, basis.shape[0])) * (0.6 / np.sqrt(basis.shape[0]))
    noise = rng.standard_normal((count, DIMENSIONS)) * (0.25 / np.sqrt(DIMENSIONS))
    return _normalise(centroids[which] + latent @ basis + noise)


def make_dataset(rows: int, queries: int, *, clusters: int = 200, seed: int = 20251124, k: int = 10) -> Dataset:
    rng = np.random.default_rng(seed)
    centroids = _normalise(rng.standard_normal((clusters, DIMENSIONS))).astype(np.float64)
    # A shared 64-dimensional subspace with orthonormal rows: the directions the "texts" vary along.
    basis = np.linalg.qr(rng.standard_normal((DIMENSIONS, 64)))[0].T
    vectors = np.empty((rows, DIMENSIONS), dtype=np.float32)
    for start in range(0, rows, 10_000):
        stop = min(rows, start + 10_000)
        vectors[start:stop] = _draw(rng, centroids, basis, stop - start)
    query_vectors = _draw(rng, centroids, basis, queries)
    ids, distances = exact_top_k(vectors, query_vectors, k)
    return Dataset(vectors, query_vectors, ids, distances, clusters, seed)


def exact_top_k(vectors: Matrix, queries: Matrix, k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Brute-force cosine top-k in float64; ids are 1-based row numbers."""
    data = vectors.astype(np.float64)
    ids = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)
    for start in range(0, len(queries), 64):
        block = queries[start : start + 64].astype(np.float64)
        sims = block @ data.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1)
        best = np.take_along_axis(part, order, axis=1)
        ids[start : start + len(block)] = best + 1
        distances[start : start + len(block)] = 1.0 - np.take_along_axis(sims, best, axis=1)
    return ids, distances


def recall_at_k(found: list[list[int]], dataset: Dataset, *, tolerance: float = 1e-6) -> float:
    """Mean recall@k with ties counted: a returned id is a hit if its exact distance is within
    `tolerance` of the k-th exact distance (float32 arithmetic on the server can reorder near-ties)."""
    k = dataset.exact_ids.shape[1]
    data = dataset.vectors
    hits = 0
    for qi, ids in enumerate(found):
        kth = dataset.exact_distances[qi, k - 1]
        truth = set(dataset.exact_ids[qi].tolist())
        q = dataset.queries[qi].astype(np.float64)
        for row_id in ids[:k]:
            if row_id in truth:
                hits += 1
            elif 1 <= row_id <= len(data):
                distance = 1.0 - float(data[row_id - 1].astype(np.float64) @ q)
                hits += int(distance <= kth + tolerance)
    return hits / (k * len(found))


def vector_literal(vector: Matrix) -> str:
    """pgvector's text form; nine significant digits round-trip a float32 exactly."""
    return "[" + ",".join(f"{x:.9g}" for x in vector.tolist()) + "]"


def copy_binary(vectors: Matrix, *, first_memo_id: int = 1, timestamp_unix: int = 1_763_942_400) -> bytes:
    """The whole COPY ... (FORMAT binary) stream for (memo_id int4, embedding vector, updated_ts timestamptz).

    pgvector's binary form is int16 dimensions, int16 unused (0), then big-endian float4s.
    """
    rows, dims = vectors.shape
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("memo_len", ">i4"),
            ("memo", ">i4"),
            ("vec_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f4", (dims,)),
            ("ts_len", ">i4"),
            ("ts", ">i8"),
        ]
    )
    records = np.zeros(rows, dtype=layout)
    records["fields"] = 3
    records["memo_len"] = 4
    records["memo"] = np.arange(first_memo_id, first_memo_id + rows, dtype=np.int32)
    records["vec_len"] = 4 + 4 * dims
    records["dim"] = dims
    records["vec"] = vectors
    records["ts_len"] = 8
    records["ts"] = timestamp_unix * 1_000_000 - PG_EPOCH_OFFSET_US
    return COPY_HEADER + records.tobytes() + COPY_TRAILER
