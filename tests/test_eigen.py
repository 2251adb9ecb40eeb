import numpy as np
import pytest
from scipy.sparse.csgraph import laplacian
from scipy.spatial.distance import cdist

from trainers.evaluation.eigen import EigenSimilarityEvaluator, eigen_similarity


def spaces(seed=0, size=200, dim=16):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(size, dim))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return rng, source, rotation


def test_two_point_samples_match_the_hand_computed_value():
    # K = 2: W = [[0, d], [d, 0]], so the Laplacian's eigenvalues are (0, 2d) and eq. 3 gives (2 d_s - 2 d_t)^2.
    # d_s = 1 - cos(90 deg) = 1, d_t = 1 - cos(45 deg) = 1 - 1/sqrt(2): Psi = (2 / sqrt(2))^2 = 2.
    source = np.array([[1.0, 0.0], [0.0, 1.0]])
    target = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert eigen_similarity(source, target, sample_size=2, num_samples=5) == pytest.approx(2.0)


def test_matches_scipy_laplacian_spectra_when_a_sample_is_the_whole_set():
    # With K = number of pairs every sample is the whole set (reordered), so Psi is that one set's spectral distance.
    rng = np.random.default_rng(3)
    source, target = rng.normal(size=(7, 5)), rng.normal(size=(7, 9))
    spectra = [np.linalg.eigvalsh(laplacian(cdist(x, x, metric="cosine"))) for x in (source, target)]
    expected = ((spectra[0] - spectra[1]) ** 2).sum()
    assert eigen_similarity(source, target, sample_size=7, num_samples=4) == pytest.approx(expected)


def test_identical_rotated_and_unrelated_spaces():
    rng, source, rotation = spaces()
    # eq. 3 with identical spaces: every lambda_j(L_i^(s)) = lambda_j(L_i^(t)), so Psi = 0.
    assert eigen_similarity(source, source) == 0.0
    # cosine distances, hence the Laplacians, do not change under a rotation and a scaling: Psi = 0 again.
    assert eigen_similarity(source, 3.0 * source @ rotation) == pytest.approx(0.0, abs=1e-12)
    noisy = eigen_similarity(source, source + 0.1 * rng.normal(size=source.shape))
    unrelated = eigen_similarity(source, rng.normal(size=source.shape))
    assert 0.0 < noisy < 0.2 < 1.0 < unrelated


def test_seed_fixes_the_samples():
    rng, source, _ = spaces()
    target = rng.normal(size=source.shape)
    assert eigen_similarity(source, target, seed=1) == eigen_similarity(source, target, seed=1)
    assert eigen_similarity(source, target, seed=1) != eigen_similarity(source, target, seed=2)


def test_evaluator_embeds_each_text_once_and_reports_under_its_name():
    _, source, rotation = spaces(size=30)
    texts_a, texts_b = [f"en {i}" for i in range(30)], [f"de {i}" for i in range(30)]
    vectors = {**dict(zip(texts_a, source)), **dict(zip(texts_b, source @ rotation))}
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([vectors[text] for text in texts])

    result = EigenSimilarityEvaluator(texts_a, texts_b, name="en-de", num_samples=50)(embed)
    assert list(result) == ["en-de_eigen_similarity"]
    assert result["en-de_eigen_similarity"] == pytest.approx(0.0, abs=1e-12)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(texts_a + texts_b)


def test_bad_inputs_are_rejected():
    _, source, _ = spaces(size=5)
    with pytest.raises(ValueError, match=r"shapes \(5, 16\) and \(4, 16\)"):
        eigen_similarity(source, source[:4])
    with pytest.raises(ValueError, match="sample_size is 10 with 5 translation pairs"):
        eigen_similarity(source, source)
    with pytest.raises(ValueError, match="num_samples is 0"):
        eigen_similarity(source, source, sample_size=3, num_samples=0)
    with pytest.raises(ValueError, match="texts_a has 2 texts and texts_b 1"):
        EigenSimilarityEvaluator(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="sample_size is 10 with 3 translation pairs"):
        EigenSimilarityEvaluator(["a", "b", "c"], ["d", "e", "f"])
