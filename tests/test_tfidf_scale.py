"""The TF-IDF baseline as sparse rows (`TfidfPool`): the same cosines, rankings and P@1 as TF-IDF computed directly
with scikit-learn, exact k-NN on sparse rows equal to k-NN on the same rows made dense, faiss refused for them, and
the evaluators that cannot score sparse rows refusing them."""

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from trainers.evaluation.common import embed_distinct
from trainers.evaluation.eigen import EigenSimilarityEvaluator, eigen_similarity
from trainers.evaluation.knn import knn
from trainers.evaluation.retrieval import (
    TFIDF_OPTIONS,
    RetrievalEvaluator,
    TfidfPool,
    distractor_retrieval,
    pool_retrieval,
    tfidf_embedder,
)


@pytest.fixture
def pairs(heldout_pairs):
    rows = [r for r in heldout_pairs if r["tgt_lang"] == "de"][:60]
    return [r["src"] for r in rows], [r["tgt"] for r in rows]


def direct_cosines(fitted_on, left, right):
    """TF-IDF cosines straight from scikit-learn, fitted on `fitted_on`."""
    vectorizer = TfidfVectorizer(**TFIDF_OPTIONS).fit(fitted_on)
    return cosine_similarity(vectorizer.transform(left), vectorizer.transform(right))


def test_retrieval_p_at_1_equals_tfidf_cosines_computed_directly(pairs):
    sources, targets = pairs
    pool = [t + " (extra)" for t in targets[:20]]  # near copies of golds: hard distractors for the margin
    evaluator = RetrievalEvaluator(sources, targets, pool=pool, precision_at=(1, 5), num_distractors=30)
    results = evaluator(tfidf_embedder(evaluator))
    cosines = direct_cosines(sources + targets + pool, sources, targets)
    forward = np.mean(cosines.argmax(axis=1) == np.arange(len(sources)))
    backward = np.mean(cosines.argmax(axis=0) == np.arange(len(sources)))
    assert results["retrieval_p@1_src2tgt"] == pytest.approx(forward)
    assert results["retrieval_p@1_tgt2src"] == pytest.approx(backward)
    assert 0 < forward < 1 and 0 < backward < 1  # neither trivially right nor wrong
    # the margin and distractor scores: the same as dense rows holding the same TF-IDF cosines
    vectorizer = TfidfVectorizer(**TFIDF_OPTIONS).fit(sources + targets + pool)
    dense_sources = vectorizer.transform(sources).toarray()
    dense_targets = vectorizer.transform(targets + pool).toarray()
    assert results["retrieval_pool_p@1_margin"] == pytest.approx(
        pool_retrieval(dense_sources, dense_targets, margin=True)["precision_at_1"])
    expected = distractor_retrieval(dense_sources, dense_targets, (1, 5), num_distractors=30)
    assert results["retrieval_p@5_k30"] == pytest.approx(expected["precision_at_5"])
    assert results["retrieval_p@1_k30"] == pytest.approx(expected["precision_at_1"])


def test_sparse_knn_equals_knn_on_the_same_rows_made_dense(pairs):
    sources, targets = pairs
    pool = TfidfPool(sources + targets)
    queries, candidates = pool(sources), pool(targets + sources[:10])
    assert sparse.issparse(queries)
    scaled = queries.multiply(np.arange(1.0, 61.0)[:, None])  # knn normalises each row
    scores, indices = knn(scaled, candidates, 5, backend="exact", chunk_size=7)  # several chunks
    dense_scores, dense_indices = knn(queries.toarray(), candidates.toarray(), 5, backend="exact")
    np.testing.assert_allclose(scores, dense_scores, atol=1e-6)
    np.testing.assert_array_equal(indices, dense_indices)
    expected = direct_cosines(sources + targets, sources, targets + sources[:10])
    np.testing.assert_allclose(scores, -np.sort(-expected, axis=1)[:, :5], atol=1e-6)
    assert np.array_equal(knn(queries, candidates, 5, backend="auto")[1], indices)  # auto: exact for sparse


def test_sparse_rows_refuse_faiss_and_dense_only_consumers(pairs):
    sources, targets = pairs
    pool = TfidfPool(sources + targets)
    with pytest.raises(ValueError, match="faiss' cannot search sparse"):
        knn(pool(sources), pool(targets), 3, backend="faiss")
    with pytest.raises(ValueError, match="pass both the same kind"):
        knn(pool(sources), pool(targets).toarray(), 3)
    with pytest.raises(ValueError, match="cannot score"):
        embed_distinct(pool, {"texts": sources})  # e.g. similarity or classification


def test_eigen_similarity_on_sparse_rows_equals_dense_tfidf(pairs):
    sources, targets = pairs
    evaluator = EigenSimilarityEvaluator(sources, targets, sample_size=6, num_samples=50)
    value = evaluator(TfidfPool(sources + targets))["eigen_eigen_similarity"]
    vectorizer = TfidfVectorizer(**TFIDF_OPTIONS).fit(sources + targets)
    expected = eigen_similarity(vectorizer.transform(sources).toarray(), vectorizer.transform(targets).toarray(),
                                sample_size=6, num_samples=50)
    assert value == pytest.approx(expected, rel=1e-9) and value > 0
