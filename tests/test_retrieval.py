"""k-NN search backends and translation retrieval: Tatoeba P@1, P@N against 999 distractors, large-pool retrieval."""

import sys

import numpy as np
import pytest

from trainers.evaluation import knn as knn_module
from trainers.evaluation.knn import knn, resolve_backend
from trainers.evaluation.retrieval import (
    RetrievalEvaluator,
    distractor_retrieval,
    pool_retrieval,
    precision_at_1,
    retrieval_by_language,
    tfidf_similarity,
)


def unit_rows(rng, count, dim):
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return unit_rows(rng, 257, 24), unit_rows(rng, 1031, 24)


def test_exact_knn_matches_brute_force(vectors):
    queries, candidates = vectors
    scores, indices = knn(queries * 3.0, candidates, 5, backend="exact")  # knn normalises its inputs
    cosines = queries @ candidates.T
    np.testing.assert_array_equal(indices, np.argsort(-cosines, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(cosines, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert scores.dtype == np.float32 and indices.dtype == np.int64


def test_exact_and_faiss_agree(vectors):
    pytest.importorskip("faiss")
    exact = knn(*vectors, 7, backend="exact")
    faiss = knn(*vectors, 7, backend="faiss")
    np.testing.assert_array_equal(exact[1], faiss[1])
    np.testing.assert_allclose(exact[0], faiss[0], atol=1e-5)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_chunked_equals_unchunked(vectors, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    whole = knn(*vectors, 4, backend=backend, chunk_size=len(vectors[0]))
    chunked = knn(*vectors, 4, backend=backend, chunk_size=10)
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_allclose(whole[0], chunked[0], atol=1e-6)


def test_missing_faiss(monkeypatch, vectors):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        knn(*vectors, 3, backend="faiss")
    monkeypatch.setattr(knn_module, "AUTO_FAISS_MIN_POOL", 10)
    assert resolve_backend("auto", 10**6) == "exact"
    knn(*vectors, 3, backend="auto")


def test_auto_backend_switches_on_pool_size():
    pytest.importorskip("faiss")
    assert resolve_backend("auto", knn_module.AUTO_FAISS_MIN_POOL - 1) == "exact"
    assert resolve_backend("auto", knn_module.AUTO_FAISS_MIN_POOL) == "faiss"
    with pytest.raises(ValueError, match="backend='annoy' is not one of"):
        resolve_backend("annoy", 10)


def test_knn_bad_inputs(vectors):
    queries, candidates = vectors
    with pytest.raises(ValueError, match="queries must be a non-empty 2-D"):
        knn(np.empty((0, 24)), candidates, 1)
    nan_rows = candidates.copy()
    nan_rows[[3, 9]] = np.nan
    with pytest.raises(ValueError, match=r"candidates row 3 holds NaN or infinite values \(2 such rows\)"):
        knn(queries, nan_rows, 1)
    with pytest.raises(ValueError, match="row 0 is all zeros"):
        knn(np.zeros((2, 24)), candidates, 1)
    with pytest.raises(ValueError, match="queries have dimension 24 but candidates 8"):
        knn(queries, candidates[:, :8], 1)
    with pytest.raises(ValueError, match=r"k=2000 must be an int in \[1, 1031\]"):
        knn(queries, candidates, 2000)
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive int"):
        knn(queries, candidates, 1, chunk_size=0)


def planted_distractor_case():
    """4 sources (basis vectors e0..e3) and 1000 targets, so the 999 distractors of a source are all other targets.

    Gold cosines are 1.0, 0.8, 0.5, 0.2; source 1 has one distractor above its gold (0.9), source 2 two (0.6, 0.7),
    source 3 four (0.3) plus an exact copy of its gold, which ties and ranks before it. Every other target lies in
    dimensions 4..7, orthogonal to all sources. Gold ranks: 1, 2, 3, 6.
    """
    rng = np.random.default_rng(5)
    dim = 8
    sources = np.eye(dim)[:4]

    def at_cosine(axis, cosine, other_axis):
        vector = np.zeros(dim)
        vector[axis], vector[other_axis] = cosine, np.sqrt(1 - cosine**2)
        return vector

    targets = np.zeros((1000, dim))
    targets[4:, 4:] = rng.standard_normal((996, 4))
    targets[0] = sources[0]
    for row, (axis, cosine) in enumerate([(1, 0.8), (2, 0.5), (3, 0.2)], start=1):
        targets[row] = at_cosine(axis, cosine, 4 + row)
    hard = [(1, 0.9), (2, 0.6), (2, 0.7), (3, 0.3), (3, 0.3), (3, 0.3), (3, 0.3)]
    for row, (axis, cosine) in enumerate(hard, start=100):
        targets[row] = at_cosine(axis, cosine, 4)
    targets[500] = targets[3]
    return sources, targets


def test_precision_at_n_with_999_distractors_by_hand():
    sources, targets = planted_distractor_case()
    results = distractor_retrieval(sources, targets, n=[1, 2, 3, 5, 6, 10], num_distractors=999)
    # gold ranks 1, 2, 3, 6: P@n = share of ranks <= n
    assert results == {"precision_at_1": 0.25, "precision_at_2": 0.5, "precision_at_3": 0.75, "precision_at_5": 0.75,
                       "precision_at_6": 1.0, "precision_at_10": 1.0}


def test_distractors_are_sampled_from_a_larger_pool():
    rng = np.random.default_rng(2)
    sources = unit_rows(rng, 40, 16)
    targets = np.concatenate([sources, unit_rows(rng, 2000, 16)])
    for margin in (False, True):
        assert distractor_retrieval(sources, targets, n=1, margin=margin, seed=3) == {"precision_at_1": 1.0}
    noisy = np.concatenate([sources + rng.standard_normal(sources.shape) * 0.4, targets[40:]])
    few = distractor_retrieval(sources, noisy, n=1, num_distractors=9, seed=3)["precision_at_1"]
    many = distractor_retrieval(sources, noisy, n=1, num_distractors=999, seed=3)["precision_at_1"]
    assert few >= many and 0 < many < 1
    with pytest.raises(ValueError, match="num_distractors=999 needs at least 1000 targets, got 500"):
        distractor_retrieval(sources, targets[:500], n=1)


def test_pool_retrieval_with_and_without_margin():
    rng = np.random.default_rng(4)
    queries = unit_rows(rng, 200, 32)
    translations = queries + 0.08 * rng.standard_normal(queries.shape).astype(np.float32)
    candidates = np.concatenate([translations, unit_rows(rng, 5000, 32)])
    for margin in (False, True):
        results = pool_retrieval(queries, candidates, n=(1, 5), margin=margin, backend="exact")
        assert results == {"precision_at_1": 1.0, "precision_at_5": 1.0}
    with pytest.raises(ValueError, match="200 queries but only 100 candidates"):
        pool_retrieval(queries, candidates[:100])


def test_retrieval_evaluator_keys_and_values():
    rng = np.random.default_rng(6)
    vectors = unit_rows(rng, 1300, 16)
    sources = [f"s{i}" for i in range(300)]
    targets = [f"t{i}" for i in range(300)]
    pool = [f"p{i}" for i in range(700)]
    table = dict(zip(sources + targets + pool, np.concatenate([vectors[:300], vectors[:300], vectors[600:]])))
    embed = lambda batch: np.stack([table[text] for text in batch])  # noqa: E731
    evaluator = RetrievalEvaluator(sources, targets, pool=pool, precision_at=(1, 5), margin=True, name="tatoeba")
    results = evaluator(embed)
    assert evaluator.name == "tatoeba"
    assert results == {"tatoeba_p@1": 1.0, "tatoeba_p@1_src2tgt": 1.0, "tatoeba_p@1_tgt2src": 1.0,
                       "tatoeba_p@1_k999_margin": 1.0, "tatoeba_p@5_k999_margin": 1.0, "tatoeba_pool_p@1_margin": 1.0}
    assert set(RetrievalEvaluator(sources, targets)(embed)) == {"retrieval_p@1", "retrieval_p@1_src2tgt",
                                                                 "retrieval_p@1_tgt2src"}


def test_retrieval_evaluator_bad_inputs():
    with pytest.raises(ValueError, match="3 sources but 2 targets"):
        RetrievalEvaluator(["a", "b", "c"], ["x", "y"])
    with pytest.raises(ValueError, match="targets must be a non-empty list"):
        RetrievalEvaluator(["a"], [])
    with pytest.raises(ValueError, match="num_distractors=999 needs at least 1000 targets and pool texts, got 2"):
        RetrievalEvaluator(["a", "b"], ["x", "y"], precision_at=[1])
    with pytest.raises(ValueError, match=r"n=\[0\] must be a positive int"):
        RetrievalEvaluator(["a", "b"], ["x", "y"], precision_at=[0])
    with pytest.raises(ValueError, match="source embeddings row 1 holds NaN"):
        RetrievalEvaluator(["a", "b"], ["x", "y"])(lambda batch: np.array([[1.0, 0.0], [np.nan, 1.0]]))


def test_tatoeba_precision_at_1_is_unchanged():
    similarity = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    assert precision_at_1(similarity) == (1 / 3, 1 / 3)
    with pytest.raises(ValueError, match="NaN"):
        precision_at_1(np.full((2, 2), np.nan))


def test_retrieval_by_language_keeps_its_keys():
    texts = [("good morning", "guten Morgen"), ("the red house", "das rote Haus"), ("thank you", "danke")]
    pairs = [{"src": src, "tgt": tgt, "src_lang": "en", "tgt_lang": "de"} for src, tgt in texts]
    results = retrieval_by_language(pairs, tfidf_similarity)
    assert set(results) == {"en-de", "average"}
    assert set(results["en-de"]) == {"p@1", "p@1_src2tgt", "p@1_tgt2src", "size"}
    assert results["en-de"]["size"] == 3 and 0 <= results["average"]["p@1"] <= 1
