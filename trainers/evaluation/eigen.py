"""Eigen-similarity of two languages' embedding spaces over translation pairs (multi-task paper sec. 5, eq. 3).

Lower is more similar: identical spaces, and spaces that differ by a rotation or a scaling, score 0.
"""

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from .common import EmbedFn, embed_distinct, l2_normalize


def check_sampling(num_pairs: int, sample_size: int, num_samples: int) -> None:
    if not 2 <= sample_size <= num_pairs:
        raise ValueError(
            f"sample_size is {sample_size} with {num_pairs} translation pairs: "
            "pass a sample size of at least 2 and at most the number of pairs."
        )
    if num_samples < 1:
        raise ValueError(f"num_samples is {num_samples}: draw at least one sample.")


def laplacian_spectra(embeddings: np.ndarray, samples: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Ascending eigenvalues `(N, K)` of the graph Laplacian of each sample, a row of `samples` `(N, K)` indexing
    `embeddings` (called `name` in errors). The graph's edge weights are the pairwise cosine distances within the
    sample: L = D - W. `embeddings` may be a scipy sparse matrix (the TF-IDF baseline's rows)."""
    vectors = l2_normalize(embeddings, name, np.float64)
    if sparse.issparse(vectors):
        cosines = np.stack([((rows := vectors[sample]) @ rows.T).toarray() for sample in samples])
    else:
        gathered = vectors[samples]
        cosines = gathered @ gathered.transpose(0, 2, 1)
    weights = 1.0 - cosines
    diagonal = np.arange(samples.shape[1])
    weights[:, diagonal, diagonal] = 0.0
    laplacians = -weights
    laplacians[:, diagonal, diagonal] = weights.sum(axis=2)
    return np.linalg.eigvalsh(laplacians)


def eigen_similarity(
    embeddings_a: np.ndarray,
    embeddings_b: np.ndarray,
    sample_size: int = 10,
    num_samples: int = 1000,
    seed: int = 0,
) -> float:
    """Psi(S, T) of the two spaces, where row i of `embeddings_a` and row i of `embeddings_b` embed a translation
    pair: `num_samples` (N) random sets of `sample_size` (K) pairs, each compared through its Laplacians' spectra."""
    embeddings_a, embeddings_b = (sparse.csr_array(side) if sparse.issparse(side) else np.asarray(side)
                                  for side in (embeddings_a, embeddings_b))
    if embeddings_a.ndim != 2 or embeddings_b.ndim != 2 or embeddings_a.shape[0] != embeddings_b.shape[0]:
        raise ValueError(
            f"eigen_similarity needs two 2-d arrays with one row per translation pair, got shapes "
            f"{embeddings_a.shape} and {embeddings_b.shape}: row i of both must embed pair i."
        )
    check_sampling(embeddings_a.shape[0], sample_size, num_samples)
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.choice(embeddings_a.shape[0], size=sample_size, replace=False) for _ in range(num_samples)])
    spectra_a = laplacian_spectra(embeddings_a, samples, "embeddings_a")
    spectra_b = laplacian_spectra(embeddings_b, samples, "embeddings_b")
    # eq. 3: Psi(S, T) = 1/N sum_i sum_j (lambda_j(L_i^(s)) - lambda_j(L_i^(t)))^2
    return float(((spectra_a - spectra_b) ** 2).sum(axis=1).mean())


class EigenSimilarityEvaluator:
    """Eigen-similarity between the embeddings of parallel texts: `texts_a[i]` translates `texts_b[i]`."""

    def __init__(
        self,
        texts_a: Sequence[str],
        texts_b: Sequence[str],
        name: str = "eigen",
        sample_size: int = 10,
        num_samples: int = 1000,
        seed: int = 0,
        note: str | None = None,
    ):
        """`note` says how the evaluator was set up where a reader of the results needs it (as
        `RetrievalEvaluator`'s); `run_suite` reports it beside the metrics."""
        if len(texts_a) != len(texts_b):
            raise ValueError(
                f"texts_a has {len(texts_a)} texts and texts_b {len(texts_b)}: pass parallel lists, "
                "texts_b[i] the translation of texts_a[i]."
            )
        check_sampling(len(texts_a), sample_size, num_samples)
        self.texts_a, self.texts_b = list(texts_a), list(texts_b)
        self.name, self.sample_size, self.num_samples, self.seed = name, sample_size, num_samples, seed
        self.note = note

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        embeddings_a, embeddings_b = embed_distinct(embed, {"texts_a": self.texts_a, "texts_b": self.texts_b},
                                                    dtype=np.float64, allow_sparse=True)
        value = eigen_similarity(embeddings_a, embeddings_b, self.sample_size, self.num_samples, self.seed)
        return {f"{self.name}_eigen_similarity": value}
