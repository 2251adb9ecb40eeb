import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from trainers.evaluation.similarity import SimilarityEvaluator

from .conftest import SHARED_DATA, FakeEmbed, requires_shared

SHARED_SIMILARITY = SHARED_DATA / "similarity" / "en-wordsim353-sim.tsv"


def random_vectors(texts, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {text: rng.normal(size=dim) for text in texts}


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_correlations_equal_scipy_on_the_same_cosines_and_each_text_is_embedded_once():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(12)]
    # distinct unordered pairs, so that no two cosines tie and rounding cannot reorder the ranks
    pairs = [(a, b) for index, a in enumerate(words) for b in words[index + 1 :]]
    text1, text2 = map(list, zip(*[pairs[i] for i in rng.permutation(len(pairs))[:40]]))
    scores = rng.uniform(0, 5, size=40).tolist()
    embed = FakeEmbed(random_vectors(words))
    result = SimilarityEvaluator(text1, text2, scores, name="toy")(embed)

    a, b = np.stack([embed.vectors[t] for t in text1]), np.stack([embed.vectors[t] for t in text2])
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert set(result) == {"toy_spearman", "toy_pearson"}
    assert result["toy_spearman"] == pytest.approx(spearmanr(cosines, scores).statistic, abs=1e-9)
    assert result["toy_pearson"] == pytest.approx(pearsonr(cosines, scores).statistic, abs=1e-9)
    assert len(embed.calls) == 1 and sorted(embed.calls[0]) == sorted(set(text1 + text2))

    angular = SimilarityEvaluator(text1, text2, scores, name="toy", angular=True)(embed)
    assert angular["toy_spearman"] == pytest.approx(result["toy_spearman"], abs=1e-9)
    assert angular["toy_pearson"] == pytest.approx(pearsonr(-np.arccos(cosines), scores).statistic, abs=1e-9)


def test_scores_that_follow_the_cosine_give_correlation_one():
    rng = np.random.default_rng(2)
    vectors = {f"t{i}": rng.normal(size=4) for i in range(10)}
    text1, text2 = [f"t{i}" for i in range(5)], [f"t{i}" for i in range(5, 10)]
    cosines = [vectors[a] @ vectors[b] / np.linalg.norm(vectors[a]) / np.linalg.norm(vectors[b])
               for a, b in zip(text1, text2)]
    result = SimilarityEvaluator(text1, text2, [3 * c + 1 for c in cosines])(FakeEmbed(vectors))
    assert result["sts_spearman"] == pytest.approx(1.0)
    assert result["sts_pearson"] == pytest.approx(1.0)


def test_from_tsv_selects_a_cross_language_pair(tmp_path):
    path = write(
        tmp_path / "xsts.tsv",
        "text1\ttext2\tscore\tlang1\tlang2\n"
        "a cat\ta dog\t1.0\ten\ten\n"
        "a cat\tein Hund\t2.0\ten\tde\n"
        "a car\tein Auto\t5.0\ten\tde\n"
        "a cat\tein Auto\t0.5\ten\tde\n",
    )
    evaluator = SimilarityEvaluator.from_tsv(path, languages=("en", "de"))
    assert evaluator.name == "xsts_en-de"
    assert evaluator.text2 == ["ein Hund", "ein Auto", "ein Auto"]
    assert evaluator.scores == [2.0, 5.0, 0.5]
    assert SimilarityEvaluator.from_tsv(path, limit=2).text1 == ["a cat", "a cat"]
    with pytest.raises(ValueError, match="no rows with .*'fr'"):
        SimilarityEvaluator.from_tsv(path, languages=("en", "fr"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("text1\ttext2\tscore\tlang1\tlang2\n", "no rows"),
        ("text1\ttext2\tscore\na\tb\t1.0\n", r"lacks the columns \['lang1', 'lang2'\]"),
        ("text1\ttext2\tscore\tlang1\tlang2\na\tb\tnan\ten\ten\nc\td\t2\ten\ten\n", "NaN"),
        ("text1\ttext2\tscore\tlang1\tlang2\na\tb\thigh\ten\ten\nc\td\t2\ten\ten\n", "'high', not a number"),
        ("text1\ttext2\tscore\tlang1\tlang2\na\tb\t1.0\n", "line 2 has fewer fields"),
    ],
)
def test_from_tsv_rejects_bad_files(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        SimilarityEvaluator.from_tsv(write(tmp_path / "bad.tsv", content))


def test_constructor_rejects_bad_lists():
    with pytest.raises(ValueError, match=r"different lengths \(2, 1, 2\)"):
        SimilarityEvaluator(["a", "b"], ["c"], [1.0, 2.0])
    with pytest.raises(ValueError, match="pair 1 .* is NaN"):
        SimilarityEvaluator(["a", "b"], ["c", "d"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 2"):
        SimilarityEvaluator(["a"], ["c"], [1.0])


def test_embed_with_a_wrong_shape_is_rejected():
    evaluator = SimilarityEvaluator(["a", "b"], ["c", "d"], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(3, 2\) for 4 texts"):
        evaluator(lambda texts: np.ones((3, 2)))


@requires_shared
def test_real_slice_of_wordsim353():
    evaluator = SimilarityEvaluator.from_tsv(SHARED_SIMILARITY, limit=30)
    assert evaluator.name == "en-wordsim353-sim" and len(evaluator.scores) == 30
    embed = FakeEmbed(random_vectors(sorted(set(evaluator.text1 + evaluator.text2)), dim=16))
    result = evaluator(embed)
    assert set(result) == {"en-wordsim353-sim_spearman", "en-wordsim353-sim_pearson"}
    assert all(-1.0 <= value <= 1.0 for value in result.values())
