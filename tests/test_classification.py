import csv
import json

import numpy as np
import pytest
import torch

from trainers.evaluation.classification import ZeroShotClassificationEvaluator

from .conftest import SHARED_DATA, FakeEmbed, requires_shared

TOPICS = SHARED_DATA / "classification" / "topics"
FAST = {"seeds": (0, 1), "hidden_size": 32, "learning_rate": 1e-2, "batch_size": 16, "max_epochs": 30, "patience": 3}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny MLPs gain nothing from intra-op threads, and on busy shared cores threads slow them down tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




def clusters(language, split, size, centroids, rng, shift=0.0):
    """`size` texts named `language-split-i`, each a noisy copy of its label's centroid moved by `shift`."""
    labels = rng.integers(0, len(centroids), size=size)
    texts = [f"{language}-{split}-{i}" for i in range(size)]
    vectors = centroids[labels] + shift + 0.5 * rng.normal(size=(size, centroids.shape[1]))
    return (texts, labels.tolist()), dict(zip(texts, vectors))


def cluster_task(num_labels=4, dim=16, seed=0):
    """English train / validation / test clusters and a German test set: the same clusters slightly shifted."""
    rng = np.random.default_rng(seed)
    centroids = 2.0 * rng.normal(size=(num_labels, dim))
    splits, vectors = {}, {}
    for language, split, size, shift in [("en", "train", 200, 0.0), ("en", "validation", 60, 0.0),
                                         ("en", "test", 100, 0.0), ("de", "test", 100, 0.3)]:
        splits[language, split], table = clusters(language, split, size, centroids, rng, shift)
        vectors.update(table)
    return splits, vectors


def test_separable_clusters_are_learned_and_transfer_zero_shot():
    splits, vectors = cluster_task()
    tests = {"en": splits["en", "test"], "de": splits["de", "test"]}
    evaluator = ZeroShotClassificationEvaluator(
        splits["en", "train"], splits["en", "validation"], tests, num_labels=4, name="clusters", **FAST
    )
    embed = FakeEmbed(vectors)
    result = evaluator(embed)
    assert set(result) == {"clusters_en_accuracy", "clusters_en_accuracy_std", "clusters_de_accuracy",
                           "clusters_de_accuracy_std"}
    assert result["clusters_en_accuracy"] > 0.95
    assert result["clusters_de_accuracy"] > 0.9
    assert 0.0 <= result["clusters_de_accuracy_std"] < 0.05
    assert len(embed.calls) == 1 and len(embed.calls[0]) == len(set(embed.calls[0])) == 460
    assert evaluator(FakeEmbed(vectors)) == result


def test_each_distinct_text_is_embedded_once_across_splits():
    splits, vectors = cluster_task()
    train = splits["en", "train"]
    evaluator = ZeroShotClassificationEvaluator(train, train, {"en": train, "en2": train}, num_labels=4, **FAST)
    embed = FakeEmbed(vectors)
    evaluator(embed)
    assert len(embed.calls) == 1 and sorted(embed.calls[0]) == sorted(set(train[0]))


def test_qwk_on_ordinal_labels():
    # five ordinal levels along one direction, as in sentiment5 (0..4); the shifted "language" moves along another
    rng = np.random.default_rng(4)
    direction, offset = np.eye(8)[0], 0.2 * np.eye(8)[1]
    centroids = 1.5 * np.arange(5)[:, None] * direction
    train, vectors = clusters("en", "train", 250, centroids, rng)
    validation, more = clusters("en", "validation", 80, centroids, rng)
    test, shifted = clusters("fr", "test", 100, centroids, rng, shift=offset)
    vectors.update(more | shifted)
    evaluator = ZeroShotClassificationEvaluator(
        train, validation, {"fr": test}, num_labels=5, metric="qwk", name="sentiment", **FAST
    )
    result = evaluator(FakeEmbed(vectors))
    assert set(result) == {"sentiment_fr_qwk", "sentiment_fr_qwk_std"}
    assert result["sentiment_fr_qwk"] > 0.9


@pytest.mark.parametrize(
    "train, tests, num_labels, metric, message",
    [
        ((["a", "b"], [0, 4]), {"en": (["a"], [0])}, 4, "accuracy", r"Label 4 of text 1 in the train split .*\[0, 4\)"),
        ((["a", "b"], [0, 1]), {"de": (["a"], [-1])}, 4, "accuracy", r"Label -1 of text 0 in the de test split"),
        ((["a", "b"], [0, 1.5]), {"en": (["a"], [0])}, 4, "accuracy", "Label 1.5 of text 1"),
        ((["a", "b"], [0]), {"en": (["a"], [0])}, 4, "accuracy", "train split has 2 texts and 1 labels"),
        (([], []), {"en": (["a"], [0])}, 4, "accuracy", "train split is empty"),
        ((["a", "b"], [0, 1]), {}, 4, "accuracy", "tests is empty"),
        ((["a", "b"], [0, 1]), {"en": (["a"], [0])}, 1, "accuracy", "num_labels is 1"),
        ((["a", "b"], [0, 1]), {"en": (["a"], [0])}, 4, "f1", "metric is 'f1'"),
    ],
)
def test_bad_inputs_are_rejected(train, tests, num_labels, metric, message):
    with pytest.raises(ValueError, match=message):
        ZeroShotClassificationEvaluator(train, (["a"], [0]), tests, num_labels, metric=metric)


def test_from_tsv_dirs_rejects_bad_files(tmp_path):
    (tmp_path / "train.tsv").write_text("text\tlabel\na\t0\nb\tsports\n", encoding="utf-8")
    (tmp_path / "validation.tsv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="No labels.json"):
        ZeroShotClassificationEvaluator.from_tsv_dirs(tmp_path, {"en": tmp_path})
    with pytest.raises(ValueError, match="train.tsv holds a label that is not an integer .*'sports'"):
        ZeroShotClassificationEvaluator.from_tsv_dirs(tmp_path, {"en": tmp_path}, num_labels=2)
    (tmp_path / "train.tsv").write_text("text\tlabel\na\t0\nb\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="validation.tsv is empty"):
        ZeroShotClassificationEvaluator.from_tsv_dirs(tmp_path, {"en": tmp_path}, num_labels=2)


@requires_shared
def test_real_slice_of_topics_trained_on_english_tested_on_german():
    # an oracle embed that puts each text at its topic's centroid checks that texts and labels are read in step
    num_labels = len(json.loads((TOPICS / "labels.json").read_text(encoding="utf-8")))
    limit, labels = 60, {}
    for language, split in [("en", "train"), ("en", "validation"), ("de", "test")]:
        with open(TOPICS / language / f"{split}.tsv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
        labels.update({row["text"]: int(row["label"]) for row in rows})
    rng = np.random.default_rng(0)
    centroids = 3.0 * rng.normal(size=(num_labels, 16))
    vectors = {text: centroids[label] + 0.1 * rng.normal(size=16) for text, label in sorted(labels.items())}

    evaluator = ZeroShotClassificationEvaluator.from_tsv_dirs(
        TOPICS / "en", {"de": TOPICS / "de"}, limit=limit, name="topics", **FAST
    )
    assert evaluator.num_labels == num_labels == 12
    assert len(evaluator.train[0]) == len(evaluator.validation[0]) == len(evaluator.tests["de"][0]) == limit
    result = evaluator(FakeEmbed(vectors))
    assert set(result) == {"topics_de_accuracy", "topics_de_accuracy_std"}
    assert result["topics_de_accuracy"] > 0.8
