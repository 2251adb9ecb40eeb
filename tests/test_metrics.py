import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, cohen_kappa_score, top_k_accuracy_score

from trainers.metrics import METRICS, load_metric

SEEDS = [0, 1, 2, 3, 4]

VALID_INPUTS = {
    "accuracy": ([0, 1, 2], [0, 1, 1]),
    "bitext_mining": ([0, 1, -1], [0, 2, 2]),
    "precision_at_k": ([[0, 1], [1, 0], [0, 1]], [0, 0, 1]),
    "qwk": ([0, 1, 2], [0, 1, 1]),
    "spearman": ([0.1, 0.5, 0.2], [1.0, 3.0, 2.0]),
}

EMPTY_MESSAGES = {
    "accuracy": "accuracy got empty predictions",
    "bitext_mining": "bitext_mining got no source sentences",
    "precision_at_k": "precision_at_k got no queries",
    "qwk": "qwk got empty predictions",
    "spearman": "spearman needs at least 2 scored pairs, got 0",
}


def test_load_metric_caches_modules_and_names_the_available_ones():
    assert load_metric("qwk") is load_metric("qwk")
    with pytest.raises(ValueError, match="Unknown metric 'f1'; available metrics: accuracy, bitext_mining"):
        load_metric("f1")


@pytest.mark.parametrize("name", METRICS)
def test_metric_info(name):
    metric = load_metric(name)
    assert metric.name == name
    assert set(metric.features) == {"predictions", "references"}
    assert "@" in metric.citation and "year=" in metric.citation
    assert metric.description.strip() and "Returns:" in metric.inputs_description


@pytest.mark.parametrize("name", METRICS)
def test_empty_inputs_raise(name):
    with pytest.raises(ValueError, match=EMPTY_MESSAGES[name]):
        load_metric(name).compute(predictions=[], references=[])


@pytest.mark.parametrize("name", METRICS)
def test_mismatched_lengths_raise_and_leave_the_shared_module_usable(name):
    predictions, references = VALID_INPUTS[name]
    metric = load_metric(name)
    with pytest.raises(ValueError, match=r"Mismatch in the number of predictions \(3\) and references \(2\)"):
        metric.compute(predictions=predictions, references=references[:2])
    fresh = metric.compute(predictions=predictions, references=references)
    assert fresh == metric.compute(predictions=predictions, references=references)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_labels", [None, 6])
def test_qwk_matches_sklearn(seed, num_labels):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 6, size=60)
    predictions = np.clip(references + rng.integers(-2, 3, size=60), 0, 5)
    labels = None if num_labels is None else list(range(num_labels))
    expected = cohen_kappa_score(references, predictions, labels=labels, weights="quadratic")
    result = load_metric("qwk").compute(
        predictions=predictions.tolist(), references=references.tolist(), num_labels=num_labels
    )
    assert result["qwk"] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < result["qwk"] < 1.0


def test_qwk_hand_checked():
    # Observed weighted disagreement 1, chance-expected 20 / 4 = 5: kappa = 1 - 1 / 5.
    result = load_metric("qwk").compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1], num_labels=3)
    assert result == {"qwk": pytest.approx(0.8)}


def test_qwk_num_labels_counts_unseen_labels_in_the_distances():
    # Labels 0, 1, 4, each used twice per side; two disagreements, both between 1 and 4.
    # Without num_labels they are ranks 0, 1, 2: observed 1 + 1 = 2, expected 4 * 2 * (1 + 1 + 4) / 6 = 8.
    # With num_labels=5: observed 9 + 9 = 18, expected 4 * 2 * (1 + 9 + 16) / 6 = 104 / 3.
    predictions, references = [0, 1, 4, 4, 1, 0], [0, 4, 4, 1, 1, 0]
    compact = load_metric("qwk").compute(predictions=predictions, references=references)
    full = load_metric("qwk").compute(predictions=predictions, references=references, num_labels=5)
    assert compact == {"qwk": pytest.approx(1 - 2 / 8)}
    assert full == {"qwk": pytest.approx(1 - 18 / (104 / 3))}


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([0, 5, 1], [0, 1, 1], r"predictions holds label 5, outside \[0, 3\)"),
        ([0, 1, 1], [0, -1, 1], r"references holds label -1, outside \[0, 3\)"),
    ],
)
def test_qwk_rejects_labels_outside_the_scale(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load_metric("qwk").compute(predictions=predictions, references=references, num_labels=3)


def test_qwk_rejects_a_single_label_and_a_bad_num_labels():
    with pytest.raises(ValueError, match="qwk is undefined: .* single label 2"):
        load_metric("qwk").compute(predictions=[2, 2, 2], references=[2, 2, 2])
    with pytest.raises(ValueError, match="num_labels must be a positive int, got 0"):
        load_metric("qwk").compute(predictions=[0, 1], references=[1, 0], num_labels=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, 4, size=80)
    predictions = np.where(rng.random(80) < 0.6, references, rng.integers(0, 4, size=80))
    result = load_metric("accuracy").compute(predictions=predictions.tolist(), references=references.tolist())
    assert result == {"accuracy": pytest.approx(accuracy_score(references, predictions))}
    assert result["accuracy"] == pytest.approx(np.mean(predictions == references))


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    references = rng.uniform(0, 5, size=70)
    predictions = np.tanh(references / 5 + rng.normal(scale=0.3, size=70))
    result = load_metric("spearman").compute(predictions=predictions.tolist(), references=references.tolist())
    assert result["spearman"] == pytest.approx(spearmanr(predictions, references).statistic, abs=1e-12)
    assert result["pearson"] == pytest.approx(pearsonr(predictions, references).statistic, abs=1e-12)
    assert 0.0 < result["spearman"] < 1.0


def test_spearman_hand_checked():
    references = [1.0, 2.0, 3.0, 4.0]
    predictions = [1.0, 4.0, 9.0, 16.0]
    result = load_metric("spearman").compute(predictions=predictions, references=references)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] == pytest.approx(np.corrcoef(predictions, references)[0, 1])
    assert result["pearson"] < 0.99


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([0.1, math.nan, 0.3], [1.0, 2.0, 3.0], r"predictions\[1\] is nan"),
        ([0.1, 0.2, 0.3], [1.0, 2.0, -math.inf], r"references\[2\] is -inf"),
        ([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], "all predictions equal 0.5, so the correlation is undefined"),
        ([0.1, 0.2, 0.3], [2.0, 2.0, 2.0], "all references equal 2.0, so the correlation is undefined"),
        ([0.1], [1.0], "spearman needs at least 2 scored pairs, got 1"),
    ],
)
def test_spearman_rejects_bad_scores(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load_metric("spearman").compute(predictions=predictions, references=references)


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_at_k_matches_sklearn_top_k_accuracy(seed):
    rng = np.random.default_rng(seed)
    num_queries, num_candidates = 50, 10
    rankings = np.array([rng.permutation(num_candidates) for _ in range(num_queries)])
    references = rng.integers(0, num_candidates, size=num_queries)
    scores = np.empty((num_queries, num_candidates))
    np.put_along_axis(scores, rankings, np.arange(num_candidates, 0, -1)[None, :], axis=1)
    result = load_metric("precision_at_k").compute(
        predictions=rankings.tolist(), references=references.tolist(), k=[1, 3, 5]
    )
    assert list(result) == ["precision_at_1", "precision_at_3", "precision_at_5"]
    for k in (1, 3, 5):
        expected = top_k_accuracy_score(references, scores, k=k, labels=range(num_candidates))
        assert result[f"precision_at_{k}"] == pytest.approx(expected)


def test_precision_at_k_hand_checked():
    rankings = [[3, 1, 2], [0, 2, 1], [2, 1, 0, 5]]
    result = load_metric("precision_at_k").compute(predictions=rankings, references=[1, 0, 0], k=[3, 1, 2, 1])
    assert result == {
        "precision_at_1": pytest.approx(1 / 3),
        "precision_at_2": pytest.approx(2 / 3),
        "precision_at_3": pytest.approx(1.0),
    }
    assert load_metric("precision_at_k").compute(predictions=rankings, references=[3, 2, 5]) == {
        "precision_at_1": pytest.approx(1 / 3)
    }


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (4, "k=4 but the ranking of query 1 holds only 3 ids"),
        (0, "k must be a positive int or a non-empty list of them, got 0"),
        ([], r"k must be a positive int or a non-empty list of them, got \[\]"),
        (1.5, "k must be a positive int or a non-empty list of them, got 1.5"),
    ],
)
def test_precision_at_k_rejects_bad_k(k, message):
    with pytest.raises(ValueError, match=message):
        load_metric("precision_at_k").compute(predictions=[[0, 1, 2, 3], [1, 0, 2]], references=[0, 1], k=k)


def bucc_reference(predictions, references):
    """Set-based scoring of the BUCC evaluation script: mined and gold (source, target) pairs."""
    mined = {(source, target) for source, target in enumerate(predictions) if target != -1}
    gold = {(source, target) for source, target in enumerate(references) if target != -1}
    correct = len(mined & gold)
    precision, recall = correct / len(mined), correct / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", SEEDS)
def test_bitext_mining_matches_set_based_bucc_scoring(seed):
    rng = np.random.default_rng(seed)
    references = np.where(rng.random(100) < 0.2, -1, rng.permutation(100))
    predictions = np.where(rng.random(100) < 0.7, references, rng.integers(-1, 100, size=100))
    result = load_metric("bitext_mining").compute(predictions=predictions.tolist(), references=references.tolist())
    precision, recall, f1 = bucc_reference(predictions.tolist(), references.tolist())
    assert result == {"precision": pytest.approx(precision), "recall": pytest.approx(recall), "f1": pytest.approx(f1)}
    assert 0.5 < result["f1"] < 1.0


@pytest.mark.parametrize(
    ("predictions", "references", "expected"),
    [
        # 4 extracted, 5 gold, 2 correct (sources 0 and 4).
        ([4, 7, -1, 2, 5, -1], [4, 5, 6, -1, 5, 9], (0.5, 0.4, 4 / 9)),
        ([1, 0], [1, 0], (1.0, 1.0, 1.0)),
        ([-1, -1], [3, 4], (0.0, 0.0, 0.0)),
        ([3, 4], [-1, -1], (0.0, 0.0, 0.0)),
        ([-1, -1], [-1, -1], (0.0, 0.0, 0.0)),
        ([1, 0], [0, 1], (0.0, 0.0, 0.0)),
    ],
)
def test_bitext_mining_hand_checked(predictions, references, expected):
    result = load_metric("bitext_mining").compute(predictions=predictions, references=references)
    assert result == dict(zip(("precision", "recall", "f1"), map(pytest.approx, expected)))
    assert not any(math.isnan(value) for value in result.values())


def test_bitext_mining_rejects_ids_below_minus_one():
    with pytest.raises(ValueError, match=r"references\[1\] is -3; target ids are >= 0, and -1 marks"):
        load_metric("bitext_mining").compute(predictions=[0, 1], references=[0, -3])
