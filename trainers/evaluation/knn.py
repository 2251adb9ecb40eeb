"""Exact k-nearest-neighbour search by cosine similarity, in query chunks so that memory stays bounded.

Two backends give the same neighbours, up to float rounding of near-ties: "exact" (a torch matrix product and top-k
per chunk of queries) and "faiss" (`faiss.IndexFlatIP`, an exact inner-product index holding a copy of the pool;
`pip install faiss-cpu`). "auto" takes "exact" on a CUDA device, else faiss for pools of at least
`AUTO_FAISS_MIN_POOL` candidates when it is installed, else "exact".

"exact" multiplies on `device` (default: cuda when present) in `dtype` (default: bf16 on CUDA, float32 elsewhere). In
a reduced precision each query's `k + RESCORE_EXTRA` best candidates are rescored in float32 before its top k are
taken: neighbours and scores are float32's unless a true neighbour falls beyond that margin in the reduced precision.
Sparse inputs (scipy CSR rows, the TF-IDF baseline) are searched by "exact" only, on the CPU: each chunk's scores
come from a sparse product, made dense for the top-k; "auto" takes "exact" for them.
"""

from collections.abc import Callable

import numpy as np
import torch
from scipy import sparse

from ..encoding import default_device
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
# In a reduced precision (bf16 on CUDA) each query's shortlist holds this many candidates beyond the k it returns,
# rescored in float32: bf16 keeps 8 bits of mantissa, cosines within about 0.004 of each other can swap places.
RESCORE_EXTRA = 32

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def knn(
    queries,
    candidates,
    k: int,
    backend: str = "auto",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` candidates nearest to each query by cosine similarity.

    Returns `(scores, indices)`, both `(len(queries), k)` and nearest first: float32 cosines and int64 rows of
    `candidates`. Both sides are dense arrays, or both scipy sparse matrices (searched by "exact"). Queries are
    searched `chunk_size` at a time (default: for "exact", as many as keep a chunk's query x candidate scores within
    64 MiB, and its float32 shortlists too; for "faiss", `FAISS_QUERY_BLOCK`), so memory never grows with
    queries x pool. `device` and `dtype` are where and in what "exact" multiplies dense rows (see the module's
    docstring); the pool is copied there once.
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
    device = torch.device(device or default_device())
    if resolve_backend(backend, pool_size, sparse.issparse(candidates), device) == "faiss":
        search, chunk_size = _faiss_search(candidates), checked_chunk_size(chunk_size, FAISS_QUERY_BLOCK)
    else:
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype={dtype!r}: search in torch.float32, torch.bfloat16 or torch.float16.")
        search = _exact_search(candidates, device, dtype)
        elements = pool_size if dtype == torch.float32 else max(pool_size, (k + RESCORE_EXTRA) * queries.shape[1])
        chunk_size = checked_chunk_size(chunk_size, max(1, BLOCK_ELEMENTS // elements))
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


def resolve_backend(backend: str, pool_size: int, is_sparse: bool = False, device: torch.device | None = None) -> str:
    """"exact" or "faiss" for a search among `pool_size` candidates (sparse ones: "exact" only) on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}.")
    if is_sparse and backend == "faiss":
        raise ValueError("backend='faiss' cannot search sparse embeddings (e.g. the TF-IDF baseline's rows): faiss "
                         "indexes dense vectors; use backend='exact' or 'auto'.")
    if backend == "auto":
        on_cuda = device is not None and torch.device(device).type == "cuda"  # a GPU product beats faiss-cpu
        return "faiss" if (not is_sparse and not on_cuda and pool_size >= AUTO_FAISS_MIN_POOL
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


def _exact_search(candidates, device: torch.device, dtype: torch.dtype) -> Search:
    if sparse.issparse(candidates):  # scipy products, on the CPU
        transposed = candidates.T.tocsr()  # chunk @ transposed: a CSR x CSR product

        def sparse_search(queries, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores, indices = torch.topk(torch.from_numpy((queries @ transposed).toarray()), k, dim=1)
            return scores.numpy(), indices.numpy()

        return sparse_search
    exact_pool = torch.from_numpy(candidates)
    pool = exact_pool.to(device=device, dtype=dtype)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = torch.from_numpy(queries)
        scores = chunk.to(device=device, dtype=dtype) @ pool.T
        if dtype == torch.float32:
            scores, indices = torch.topk(scores, k, dim=1)
            return scores.cpu().numpy(), indices.cpu().numpy()
        shortlist = torch.topk(scores, min(k + RESCORE_EXTRA, len(pool)), dim=1).indices.cpu()
        exact = torch.einsum("qd,qcd->qc", chunk, exact_pool[shortlist])  # float32 cosines of the shortlist
        scores, order = torch.topk(exact, k, dim=1)
        return scores.numpy(), shortlist.gather(1, order).numpy()

    return search
