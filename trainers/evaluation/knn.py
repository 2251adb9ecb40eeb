"""Exact k-nearest-neighbour search by cosine similarity, in query chunks so that memory stays bounded.

Two backends give the same neighbours, up to float rounding of near-ties: "exact" (a torch matrix product and top-k
per chunk of queries) and "faiss" (`faiss.IndexFlatIP`, an exact inner-product index holding a copy of the pool;
`pip install faiss-cpu`). "auto" takes faiss for pools of at least `AUTO_FAISS_MIN_POOL` candidates when it is
installed, else "exact". Sparse inputs (scipy CSR rows, the TF-IDF baseline) are searched by "exact" only: each
chunk's scores come from a sparse product, made dense for the top-k; "auto" takes "exact" for them.
"""

from collections.abc import Callable

import numpy as np
import torch
from scipy import sparse

from .common import l2_normalize

BACKENDS = ("auto", "exact", "faiss")
# "auto" switches to faiss from this pool size on: from 10k candidates up it was as fast as "exact" or faster (about
# 25% at 100k per side) on a 2-core CPU (benchmarks/bench_mining.py), for an index that copies the pool; below, both
# take well under a second.
AUTO_FAISS_MIN_POOL = 10_000
# Without `chunk_size`, an exact chunk holds as many queries as keep its (queries x candidates) scores in 64 MiB.
BLOCK_ELEMENTS = 2**24
# faiss scores 4096 queries x 1024 candidates at a time whatever the chunk, so its memory does not grow with the
# chunk size and smaller chunks only slow it down (about 2x at 1024 queries); its default chunk is that block.
FAISS_QUERY_BLOCK = 4096

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def knn(
    queries,
    candidates,
    k: int,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` candidates nearest to each query by cosine similarity.

    Returns `(scores, indices)`, both `(len(queries), k)` and nearest first: float32 cosines and int64 rows of
    `candidates`. Both sides are dense arrays, or both scipy sparse matrices (searched by "exact"). Queries are
    searched `chunk_size` at a time (default: for "exact", as many as keep a chunk's query x candidate scores within
    64 MiB; for "faiss", `FAISS_QUERY_BLOCK`), so memory never grows with queries x pool.
    """
    queries = l2_normalize(queries, "queries")
    candidates = l2_normalize(candidates, "candidates")
    if sparse.issparse(queries) != sparse.issparse(candidates):
        raise ValueError("one of queries and candidates is a sparse matrix and the other a dense array; pass both "
                         "the same kind (e.g. both rows of the same TF-IDF embedder).")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but candidates {candidates.shape[1]}; "
            "embed both sides with the same model."
        )
    pool_size = candidates.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= pool_size:
        raise ValueError(
            f"k={k!r} must be an int in [1, {pool_size}] (the number of candidates); lower k or add candidates."
        )
    if resolve_backend(backend, pool_size, sparse.issparse(candidates)) == "faiss":
        search, chunk_size = _faiss_search(candidates), checked_chunk_size(chunk_size, FAISS_QUERY_BLOCK)
    else:
        search = _exact_search(candidates)
        chunk_size = checked_chunk_size(chunk_size, max(1, BLOCK_ELEMENTS // pool_size))
    scores = np.empty((queries.shape[0], k), dtype=np.float32)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk_size):
        stop = start + chunk_size
        scores[start:stop], indices[start:stop] = search(queries[start:stop], int(k))
    return scores, indices


def checked_chunk_size(chunk_size: int | None, default: int) -> int:
    """`chunk_size` checked to be a positive int, or `default` when it is None."""
    if chunk_size is None:
        return default
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int (queries processed at a time) or None.")
    return int(chunk_size)


def resolve_backend(backend: str, pool_size: int, is_sparse: bool = False) -> str:
    """"exact" or "faiss" for a search among `pool_size` candidates (sparse ones: "exact" only)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}.")
    if is_sparse and backend == "faiss":
        raise ValueError("backend='faiss' cannot search sparse embeddings (e.g. the TF-IDF baseline's rows): faiss "
                         "indexes dense vectors; use backend='exact' or 'auto'.")
    if backend == "auto":
        return "faiss" if (not is_sparse and pool_size >= AUTO_FAISS_MIN_POOL
                           and _faiss_module() is not None) else "exact"
    return backend


def _faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_search(candidates: np.ndarray) -> Search:
    faiss = _faiss_module()
    if faiss is None:
        raise ImportError(
            "backend='faiss' needs faiss: `pip install faiss-cpu` (or the `faiss` extra of this package), "
            "or use backend='exact' / 'auto'."
        )
    index = faiss.IndexFlatIP(candidates.shape[1])  # exact inner product = cosine on unit rows
    index.add(candidates)
    return index.search


def _exact_search(candidates) -> Search:
    if sparse.issparse(candidates):
        transposed = candidates.T.tocsr()  # chunk @ transposed: a CSR x CSR product

        def sparse_search(queries, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores, indices = torch.topk(torch.from_numpy((queries @ transposed).toarray()), k, dim=1)
            return scores.numpy(), indices.numpy()

        return sparse_search
    pool = torch.from_numpy(candidates)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, indices = torch.topk(torch.from_numpy(queries) @ pool.T, k, dim=1)
        return scores.numpy(), indices.numpy()

    return search
