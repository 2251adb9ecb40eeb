"""Bitext mining (BUCC protocol): margin scores, candidate extraction, threshold tuning, F1 and the evaluator."""

import datasets
import numpy as np
import pytest

from trainers.evaluation.mining import (
    BitextMiningEvaluator,
    MarginCandidates,
    evaluate_mining,
    extract_pairs,
    gold_references,
    margin_scores,
    predictions_above,
    select_threshold,
    split_sources,
)
from trainers.metrics import load_metric

DIM, NUM_SOURCES, NUM_GOLD, NUM_DISTRACTORS = 32, 300, 200, 300


def unit_rows(rng, count, dim=DIM):
    rows = rng.standard_normal((count, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """Sources; targets = the first NUM_GOLD sources (their translations) plus random distractor targets."""
    rng = np.random.default_rng(0)
    sources = unit_rows(rng, NUM_SOURCES)
    distractors = unit_rows(rng, NUM_DISTRACTORS)
    noise = rng.standard_normal((NUM_GOLD, DIM)) / np.sqrt(DIM)  # norm about 1
    gold = [(i, i) for i in range(NUM_GOLD)]
    return sources, distractors, noise, gold


def lookup_embedder(texts, vectors):
    table = dict(zip(texts, vectors))
    return lambda batch: np.stack([table[text] for text in batch])


def test_evaluator_finds_planted_pairs_exactly(planted):
    sources, distractors, _, gold = planted
    targets = np.concatenate([sources[:NUM_GOLD], distractors])
    source_texts = [f"source {i}" for i in range(len(sources))]
    target_texts = [f"target {i}" for i in range(len(targets))]
    embed = lookup_embedder(source_texts + target_texts, np.concatenate([sources, targets]))
    evaluator = BitextMiningEvaluator(source_texts, target_texts, gold, dev_fraction=0.5, seed=1)
    results = evaluator(embed)
    assert evaluator.name == "bitext"
    assert set(results) == {"bitext_f1", "bitext_precision", "bitext_recall", "bitext_threshold", "bitext_dev_f1"}
    assert results["bitext_f1"] == results["bitext_precision"] == results["bitext_recall"] == 1.0
    assert all(isinstance(value, float) for value in results.values())


@pytest.mark.parametrize("mode", ["forward", "backward", "intersection"])
def test_every_mode_finds_exact_pairs(planted, mode):
    sources, distractors, _, gold = planted
    results = evaluate_mining(sources, np.concatenate([sources[:NUM_GOLD], distractors]), gold, mode=mode)
    assert results["f1"] == 1.0


def test_f1_degrades_gracefully_with_noise(planted):
    sources, distractors, noise, gold = planted
    scores = [
        evaluate_mining(sources, np.concatenate([sources[:NUM_GOLD] + sigma * noise, distractors]), gold)["f1"]
        for sigma in (0.0, 1.0, 1.25, 1.5)
    ]
    assert scores[0] == 1.0
    assert all(later < earlier for earlier, later in zip(scores, scores[1:])), scores
    assert scores[-1] > 0.5, scores


def test_margin_scores_equal_dense_reference():
    rng = np.random.default_rng(3)
    source, target, k = unit_rows(rng, 30, 8), unit_rows(rng, 45, 8), 4
    cosines = source @ target.T
    source_means = np.sort(cosines, axis=1)[:, -k:].mean(axis=1)
    target_means = np.sort(cosines, axis=0)[-k:, :].mean(axis=0)
    dense = cosines / ((source_means[:, None] + target_means[None, :]) / 2)  # Artetxe & Schwenk ratio margin
    margins = margin_scores(source, target, k=k, candidates=6, backend="exact")
    assert margins.forward_indices.shape == (30, 6) and margins.backward_indices.shape == (45, 6)
    np.testing.assert_array_equal(margins.forward_indices, np.argsort(-cosines, axis=1)[:, :6])
    np.testing.assert_array_equal(margins.backward_indices, np.argsort(-cosines.T, axis=1)[:, :6])
    rows = np.arange(30)[:, None]
    np.testing.assert_allclose(margins.forward_scores, dense[rows, margins.forward_indices], rtol=1e-5)
    np.testing.assert_allclose(margins.backward_scores, dense.T[np.arange(45)[:, None], margins.backward_indices],
                               rtol=1e-5)
    np.testing.assert_allclose(margins.source_means, source_means, rtol=1e-5)
    np.testing.assert_allclose(margins.target_means, target_means, rtol=1e-5)


def test_extraction_modes_on_hand_made_candidates():
    # source 0 prefers target 0, source 1 prefers target 0 too; target 1 prefers source 1, target 0 prefers source 0
    margins = MarginCandidates(
        forward_indices=np.array([[0, 1], [0, 1]]),
        forward_scores=np.array([[1.5, 1.0], [1.2, 1.1]]),
        backward_indices=np.array([[0, 1], [1, 0]]),
        backward_scores=np.array([[1.5, 1.2], [1.1, 1.0]]),
        source_means=np.zeros(2),
        target_means=np.zeros(2),
    )
    pairs, scores = extract_pairs(margins, "max")
    assert pairs.tolist() == [[0, 0], [1, 1]] and scores.tolist() == [1.5, 1.1]
    assert extract_pairs(margins, "forward")[0].tolist() == [[0, 0]]  # target 0 is taken once, by the best
    assert extract_pairs(margins, "backward")[0].tolist() == [[0, 0], [1, 1]]
    assert extract_pairs(margins, "intersection")[0].tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="mode='union' is not one of"):
        extract_pairs(margins, "union")


def test_threshold_f1_matches_the_metric(planted):
    sources, distractors, noise, gold = planted
    targets = np.concatenate([sources[:NUM_GOLD] + 1.25 * noise, distractors])
    references = gold_references(gold, len(sources), len(targets))
    dev, _ = split_sources(references, 0.5, seed=0)
    pairs, scores = extract_pairs(margin_scores(sources, targets), "max")
    threshold, dev_f1 = select_threshold(pairs, scores, references, dev)
    predictions = predictions_above(pairs, scores, threshold, len(sources))
    metric = load_metric("bitext_mining")
    assert metric.compute(predictions=predictions[dev], references=references[dev])["f1"] == pytest.approx(dev_f1)
    assert 0 < dev_f1 < 1
    for other in (threshold - 0.02, threshold + 0.02):
        shifted = predictions_above(pairs, scores, other, len(sources))
        assert metric.compute(predictions=shifted[dev], references=references[dev])["f1"] <= dev_f1


def test_split_is_stratified_and_seeded():
    references = np.array([0, 1, 2, 3, -1, -1, -1, -1, -1, -1])
    dev, test = split_sources(references, 0.5, seed=7)
    assert sorted(dev.tolist() + test.tolist()) == list(range(10))
    assert (references[dev] != -1).sum() == 2 and len(dev) == 5
    np.testing.assert_array_equal(dev, split_sources(references, 0.5, seed=7)[0])


def test_bad_inputs_raise_clear_errors(planted):
    sources, distractors, _, gold = planted
    texts = [f"s{i}" for i in range(4)]
    with pytest.raises(ValueError, match="sources must be a non-empty list"):
        BitextMiningEvaluator([], texts, [(0, 0)])
    with pytest.raises(ValueError, match="gold holds no"):
        BitextMiningEvaluator(texts, texts, [])
    with pytest.raises(ValueError, match=r"target index 4 outside \[0, 4\)"):
        BitextMiningEvaluator(texts, texts, [(0, 0), (1, 4)])
    with pytest.raises(ValueError, match="source 1 has 2 gold targets"):
        BitextMiningEvaluator(texts, texts, [(0, 0), (1, 1), (1, 2)])
    with pytest.raises(ValueError, match="at least 2"):
        BitextMiningEvaluator(texts, texts, [(0, 0)])
    with pytest.raises(ValueError, match="dev_fraction=1.0 must lie strictly between 0 and 1"):
        BitextMiningEvaluator(texts, texts, [(0, 0), (1, 1)], dev_fraction=1.0)
    with pytest.raises(ValueError, match="embed returned an array of shape"):
        BitextMiningEvaluator(texts, texts, [(0, 0), (1, 1)])(lambda batch: np.ones((2, 3)))
    broken = sources.copy()
    broken[5, 3] = np.nan
    with pytest.raises(ValueError, match="source embeddings row 5 holds NaN"):
        evaluate_mining(broken, sources, gold)
    with pytest.raises(ValueError, match=r"k=5 must be an int in \[1, 3\]"):
        margin_scores(sources[:3], distractors, k=5)


# --- hard negatives for translation ranking (scripts/mine_hard_negatives.py) --------------------------------------


def test_hard_negative_mining_resolves_the_minilm_shortcut(tmp_path, small_pairs):
    """`--model minilm` is the installed all-MiniLM-L6-v2 (as in configs and compare), not a Hub lookup: each pair's
    negative is the German translation, other than its own, nearest its source by that model's cosine (computed
    here with sentence-transformers)."""
    import json

    from sentence_transformers import SentenceTransformer

    from tests.conftest import write_jsonl
    from trainers.hard_negatives import main
    from trainers.loading import minilm_folder

    pairs = [row for row in small_pairs if row["tgt_lang"] == "de"][:8]
    output = tmp_path / "mined.jsonl"
    main(["--model", "minilm", "--pairs", str(write_jsonl(tmp_path / "pairs.jsonl", pairs)), "--output", str(output),
          "--k", "1", "--backend", "exact"])
    mined = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]

    model = SentenceTransformer(str(minilm_folder()), device="cpu")
    targets = sorted({row["tgt"] for row in pairs})
    cosines = model.encode([row["src"] for row in pairs]) @ model.encode(targets).T  # unit vectors: cosines
    expected = [[next(targets[j] for j in np.argsort(-scores) if targets[j] != row["tgt"])]
                for row, scores in zip(pairs, cosines)]
    assert [row["negatives"] for row in mined] == expected
    assert len(set(map(tuple, expected))) > 1  # not one target for all: the model's own ranking decides


def reference_hard_negatives(embed, pairs, k, backend="auto"):
    """The loop `mine_hard_negatives` was before it was vectorised (issue 18), kept as the oracle."""
    from trainers.data import validate_pairs
    from trainers.evaluation.knn import knn

    if k < 1:
        raise ValueError(f"k={k}: mine at least one hard negative per pair (the paper uses 5).")
    validate_pairs(pairs, name="pairs to mine")
    negatives = [None] * len(pairs)
    languages = pairs["tgt_lang"]
    sources, targets = pairs["src"], pairs["tgt"]
    for language in sorted(set(languages)):
        rows = [i for i, code in enumerate(languages) if code == language]
        pool = sorted({targets[i] for i in rows})
        if len(pool) <= k:
            raise ValueError(f"Language {language!r} has {len(pool)} distinct translations: too few for k={k} hard "
                             "negatives each; lower k or add pairs.")
        _, nearest = knn(np.asarray(embed([sources[i] for i in rows])), np.asarray(embed(pool)), k + 1,
                         backend=backend)
        for row, candidates in zip(rows, nearest):
            found = [pool[j] for j in candidates if pool[j] != targets[row]]
            negatives[row] = found[:k]
    return pairs.add_column("negatives", negatives)


def recording_embedder(seed):
    """Hashed random vectors per text (the same text, the same vector), and the list of calls made."""
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([np.random.default_rng([seed, *text.encode()]).standard_normal(DIM) for text in texts])

    return embed, calls


def random_translation_pairs(rng, size, languages, distinct):
    """Pairs over `languages` with `distinct` translations each (so targets repeat within a language, and the same
    text occurs in two languages); a third of the sources are their own translation's text (its nearest target)."""
    codes = [languages[i] for i in rng.integers(len(languages), size=size)]
    targets = [f"translation {j}" if j % 3 else f"{code} translation {j}"
               for code, j in zip(codes, rng.integers(distinct, size=size))]
    sources = [target if i % 3 == 0 else f"source {i}" for i, target in enumerate(targets)]
    return datasets.Dataset.from_dict({"src": sources, "tgt": targets, "src_lang": ["en"] * size, "tgt_lang": codes})


@pytest.mark.parametrize("k", [1, 3])
def test_hard_negatives_equal_the_loop_they_replace(k):
    from trainers.hard_negatives import mine_hard_negatives

    pairs = random_translation_pairs(np.random.default_rng(k), 600, ["fr", "de", "zh", "ar", "pt_BR"], 40)
    embed, calls = recording_embedder(0)
    mined = mine_hard_negatives(embed, pairs, k, backend="exact")
    reference_embed, reference_calls = recording_embedder(0)
    expected = reference_hard_negatives(reference_embed, pairs, k, backend="exact")
    assert mined.features == expected.features
    assert mined.to_list() == expected.to_list()
    assert calls == reference_calls  # the same texts embedded in the same order
    # the exclusion was exercised: a source that is its own translation's text has it as nearest candidate
    assert all(row["tgt"] not in row["negatives"] and len(row["negatives"]) == k for row in mined)
    assert sum(row["src"] == row["tgt"] for row in mined) > 100
    # and through an index mapping (a shuffled selection), row for row
    shuffled = pairs.select(np.random.default_rng(9).permutation(len(pairs)))
    assert (mine_hard_negatives(recording_embedder(0)[0], shuffled, k, backend="exact").to_list()
            == reference_hard_negatives(recording_embedder(0)[0], shuffled, k, backend="exact").to_list())


def test_hard_negative_errors_equal_the_loop():
    from trainers.hard_negatives import mine_hard_negatives

    pairs = random_translation_pairs(np.random.default_rng(0), 60, ["fr", "de"], 40)
    few = datasets.concatenate_datasets([pairs, datasets.Dataset.from_dict(
        {"src": ["a", "b", "c"], "tgt": ["x", "y", "x"], "src_lang": ["en"] * 3, "tgt_lang": ["ja"] * 3})])
    blank = pairs.map(lambda row, index: {"tgt": " " if index == 7 else row["tgt"]}, with_indices=True)
    for data, k, message in [(pairs, 0, "k=0: mine at least one"),
                             (few, 2, "Language 'ja' has 2 distinct translations: too few for k=2"),
                             (blank, 1, "pairs to mine, row 7: column 'tgt' is ' '")]:
        for mine in (mine_hard_negatives, reference_hard_negatives):
            with pytest.raises(ValueError, match=message):
                mine(recording_embedder(0)[0], data, k, backend="exact")
