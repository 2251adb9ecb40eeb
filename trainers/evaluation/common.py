"""Helpers shared by the evaluators: the embedding function type, checked text lists, a headed TSV reader, the
checked embedding of texts and the normalisation of embeddings to unit rows."""

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

EmbedFn = Callable[[list[str]], np.ndarray]


def checked_texts(texts, name: str) -> list[str]:
    """`texts` as a list, after checking that it is a non-empty list of strings."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"{name} must be a non-empty list of strings, got {type(texts).__name__} of length "
                         f"{len(texts) if isinstance(texts, Sequence) else 'n/a'}.")
    bad = [index for index, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise ValueError(f"{name}[{bad[0]}] is {texts[bad[0]]!r}, not a string; every item must be a sentence.")
    return list(texts)


def read_tsv(
    path: str | Path, columns: Sequence[str], limit: int | None = None, where: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """`columns` of the first `limit` rows (all when None) of a headed, tab-separated file, column by column,
    keeping only the rows whose values equal those of `where`."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit is {limit}: pass a positive number of rows, or None for the whole file.")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty: expected a header with the columns {list(columns)} and rows.")
        missing = [column for column in columns if column not in reader.fieldnames]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {missing} (it has {reader.fieldnames}): write a header with {list(columns)}."
            )
        table = {column: [] for column in columns}
        for line, row in enumerate(reader, start=2):
            if len(table[columns[0]]) == limit:
                break
            if None in row.values():
                raise ValueError(
                    f"{path}, line {line} has fewer fields than the header {reader.fieldnames}: fix that row."
                )
            if all(row[column] == value for column, value in (where or {}).items()):
                for column in columns:
                    table[column].append(row[column])
    if not table[columns[0]]:
        condition = f" with {where}" if where else ""
        raise ValueError(f"{path} has no rows{condition}: nothing to evaluate on.")
    return table


def embed_distinct(embed: EmbedFn, groups: Mapping[str, Sequence[str]], dtype=np.float32,
                   allow_sparse: bool = False) -> list[np.ndarray]:
    """Embed every distinct text of `groups` (name -> texts) in one call of `embed` and return, in the order of
    `groups`, one `(len(texts), dim)` array of `dtype` per group, checked to hold one finite row per text. With
    `allow_sparse`, an `embed` returning a scipy sparse matrix (the TF-IDF baseline) gives CSR arrays; without, the
    caller cannot score them and that is refused."""
    distinct = list(dict.fromkeys(text for texts in groups.values() for text in texts))
    vectors = embed(distinct)
    if sparse.issparse(vectors) and not allow_sparse:
        raise ValueError("embed returned a scipy sparse matrix, which this evaluator cannot score: it takes dense "
                         "(len(texts), dim) arrays; densify the embeddings or use a retrieval / eigen evaluator.")
    vectors = sparse.csr_array(vectors) if sparse.issparse(vectors) else np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(distinct) or vectors.shape[1] == 0:
        raise ValueError(
            f"embed returned an array of shape {vectors.shape} for {len(distinct)} texts: "
            "it must return one row per text, shape (len(texts), dim) with dim >= 1."
        )
    vectors = real_array(vectors, "the output of embed", dtype)
    index = {text: row for row, text in enumerate(distinct)}
    arrays = []
    for name, texts in groups.items():
        array = vectors[[index[text] for text in texts]]
        check_finite_rows(finite_rows(array), f"{name} embeddings")
        arrays.append(array)
    return arrays


def l2_normalize(embeddings, name: str = "embeddings", dtype=np.float32) -> np.ndarray:
    """`embeddings` as a C-contiguous `(count, dim)` array of `dtype` with unit rows; returned as is when it already
    is, to within ten times the precision of `dtype` (1e-5 in float32, 1e-14 in float64). A scipy sparse matrix
    (the TF-IDF baseline's rows) comes back as a CSR array of `dtype` with unit rows."""
    array = sparse.csr_array(embeddings) if sparse.issparse(embeddings) else np.asarray(embeddings)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"{name} must be a non-empty 2-D (count, dim) array, got shape {array.shape}; embed at least one text."
        )
    array = real_array(array, name, dtype)
    if sparse.issparse(array):
        norms = np.sqrt(np.bincount(stored_rows(array), array.data.astype(np.float64) ** 2, minlength=array.shape[0]))
    else:
        norms = np.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64))  # no (count, dim) temporary
    check_finite_rows(np.isfinite(norms), name)
    if (norms == 0).any():
        row = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"{name} row {row} is all zeros and has no cosine similarity; drop it or fix its encoding.")
    if np.allclose(norms, 1.0, rtol=0, atol=10 * np.finfo(dtype).resolution):
        return array
    if sparse.issparse(array):
        return sparse.csr_array((array.data / norms[stored_rows(array)].astype(dtype), array.indices, array.indptr),
                                shape=array.shape)
    return array / norms.astype(dtype)[:, None]


def real_array(array, name: str, dtype):
    """`array` as a C-contiguous array (or a CSR array, when sparse) of `dtype`, after checking that it holds real
    numbers (floats or ints)."""
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} has dtype {array.dtype}; pass real-valued (float) embeddings.")
    if sparse.issparse(array):
        return sparse.csr_array(array, dtype=dtype)
    return np.ascontiguousarray(array, dtype=dtype)


def stored_rows(array: sparse.csr_array) -> np.ndarray:
    """The row of each stored value of a CSR array, in storage order."""
    return np.repeat(np.arange(array.shape[0]), np.diff(array.indptr))


def finite_rows(array) -> np.ndarray:
    """One flag per row of a dense or CSR array: whether all its values are finite."""
    if not sparse.issparse(array):
        return np.isfinite(array).all(axis=1)
    finite = np.ones(array.shape[0], dtype=bool)
    finite[stored_rows(array)[~np.isfinite(array.data)]] = False
    return finite


def check_finite_rows(finite: np.ndarray, name: str) -> None:
    """Raise a ValueError naming the first row of `name` that `finite` (one flag per row) marks as not finite."""
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} row {rows[0]} holds NaN or infinite values ({len(rows)} such rows); "
            "check the encoder output (e.g. an fp16 overflow)."
        )
