"""k-NN search backends and translation retrieval: Tatoeba P@1 (hits judged by text, as sentence-transformers'
`TranslationEvaluator` judges them), P@N against K random distractors, large-pool retrieval."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainers.evaluation import knn as knn_module
from trainers.evaluation.common import read_tsv
from trainers.evaluation.knn import knn, resolve_backend
from trainers.evaluation.retrieval import (
    RetrievalEvaluator,
    distractor_retrieval,
    draw_distractors,
    pool_retrieval,
    retrieval_by_language,
    text_ids,
)

from .conftest import SHARED_DATA, FakeEmbed, requires_shared, save_tiny_model


def at_cosine(dim: int, axis: int, cosine: float, other_axis: int) -> np.ndarray:
    """A unit vector of `dim` dimensions at `cosine` to basis vector `axis`, the rest along `other_axis`."""
    vector = np.zeros(dim)
    vector[axis], vector[other_axis] = cosine, np.sqrt(1 - cosine**2)
    return vector


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


def test_reduced_precision_search_returns_float32_neighbours_and_scores(vectors):
    """bf16 products (as on CUDA, here on the CPU) shortlist, float32 rescoring decides: the same neighbours and
    cosines as float32. The near pool spaces its cosines 0.001 apart around 0.6-0.7, finer than bf16 resolves."""
    float32 = knn(*vectors, 5, backend="exact", device="cpu")
    reduced = knn(*vectors, 5, backend="exact", device="cpu", dtype=torch.bfloat16, chunk_size=100)
    np.testing.assert_array_equal(reduced[1], float32[1])
    np.testing.assert_allclose(reduced[0], float32[0], atol=1e-6)
    cosines = 0.5 + 0.001 * np.random.default_rng(3).permutation(200)
    near = np.stack([at_cosine(16, 0, cosine, 1 + index % 15) for index, cosine in enumerate(cosines)])
    scores, indices = knn(np.eye(16)[:1], near, 5, backend="exact", device="cpu", dtype=torch.bfloat16)
    np.testing.assert_array_equal(indices[0], np.argsort(-cosines)[:5])
    np.testing.assert_allclose(scores[0], [0.699, 0.698, 0.697, 0.696, 0.695], atol=1e-6)
    with pytest.raises(ValueError, match="dtype=torch.int8: search in torch.float32"):
        knn(*vectors, 5, backend="exact", device="cpu", dtype=torch.int8)


def test_auto_takes_the_gpu_product_over_faiss_on_cuda():
    pytest.importorskip("faiss")
    pool = knn_module.AUTO_FAISS_MIN_POOL
    assert resolve_backend("auto", pool, device=torch.device("cpu")) == "faiss"
    assert resolve_backend("auto", pool, device=torch.device("cuda")) == "exact"
    assert resolve_backend("faiss", pool, device=torch.device("cuda")) == "faiss"  # asked for by name


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

    targets = np.zeros((1000, dim))
    targets[4:, 4:] = rng.standard_normal((996, 4))
    targets[0] = sources[0]
    for row, (axis, cosine) in enumerate([(1, 0.8), (2, 0.5), (3, 0.2)], start=1):
        targets[row] = at_cosine(dim, axis, cosine, 4 + row)
    hard = [(1, 0.9), (2, 0.6), (2, 0.7), (3, 0.3), (3, 0.3), (3, 0.3), (3, 0.3)]
    for row, (axis, cosine) in enumerate(hard, start=100):
        targets[row] = at_cosine(dim, axis, cosine, 4)
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
    with pytest.raises(ValueError, match=r"num_distractors=999 needs at least 1000 targets \(pool texts included\), "
                                         "got 500"):
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
    with pytest.raises(ValueError, match=r"num_distractors=999 needs at least 1000 targets \(pool texts included\), "
                                         "got 2"):
        RetrievalEvaluator(["a", "b"], ["x", "y"], precision_at=[1])
    with pytest.raises(ValueError, match=r"n=\[0\] must be a positive int"):
        RetrievalEvaluator(["a", "b"], ["x", "y"], precision_at=[0])
    with pytest.raises(ValueError, match="source embeddings row 1 holds NaN"):
        RetrievalEvaluator(["a", "b"], ["x", "y"])(lambda batch: np.array([[1.0, 0.0], [np.nan, 1.0]]))


def test_retrieval_by_language_keeps_its_keys():
    texts = [("good morning", "guten Morgen"), ("the red house", "das rote Haus"), ("thank you", "danke")]
    pairs = [{"src": src, "tgt": tgt, "src_lang": "en", "tgt_lang": "de"} for src, tgt in texts]
    results = retrieval_by_language(pairs)  # the TF-IDF baseline
    assert set(results) == {"en-de", "average"}
    assert set(results["en-de"]) == {"p@1", "p@1_src2tgt", "p@1_tgt2src", "size"}
    assert results["en-de"]["size"] == 3 and 0 <= results["average"]["p@1"] <= 1


def test_retrieval_by_language_shows_progress_when_labelled(capsys):
    pairs = [{"src": src, "tgt": tgt, "src_lang": "en", "tgt_lang": lang}
             for src, tgt, lang in [("one", "eins", "de"), ("two", "zwei", "de"),
                                    ("one", "un", "fr"), ("two", "deux", "fr")]]
    retrieval_by_language(pairs)
    assert "heldout" not in capsys.readouterr().err
    retrieval_by_language(pairs, progress="heldout: TF-IDF")
    shown = capsys.readouterr().err
    assert "heldout: TF-IDF" in shown and "2/2" in shown  # one step per language pair


class VectorModel:
    """What sentence-transformers' `TranslationEvaluator` calls on a model, over fixed vectors, so that it and this
    package's protocols score the very same embeddings."""

    model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *args, **kwargs: None)

    def __init__(self, embed):
        self.embed = embed

    def encode(self, sentences, **kwargs):
        return list(torch.from_numpy(np.asarray(self.embed(list(sentences)), dtype=np.float32)))


def translation_evaluator_p1(sources, targets, model) -> tuple[float, float]:
    """`(src2trg, trg2src)` accuracy of sentence-transformers' `TranslationEvaluator`."""
    from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

    result = TranslationEvaluator(sources, targets, name="st", write_csv=False)(model)
    return result["st_src2trg_accuracy"], result["st_trg2src_accuracy"]


def test_duplicate_targets_are_hits():
    """Targets 1 and 3 are the same text ("die Datei"): source 3's nearest target is that text, a hit whichever
    copy wins. Backward, both copies retrieve source 1, a miss for row 3 (its gold source is another text)."""
    sources = ["hello", "the file", "one", "a file"]
    targets = ["hallo", "die Datei", "eins", "die Datei"]
    basis = np.eye(4)
    vectors = {"hello": basis[0], "the file": basis[1], "one": basis[2], "a file": basis[3],
               "hallo": basis[0], "die Datei": 0.8 * basis[1] + 0.6 * basis[3], "eins": basis[2]}
    embed = FakeEmbed(vectors)
    queries, candidates = np.stack([vectors[s] for s in sources]), np.stack([vectors[t] for t in targets])
    assert pool_retrieval(queries, candidates)["precision_at_1"] == 0.75  # by row: source 3 "loses" to row 1's copy
    assert pool_retrieval(queries, candidates, candidate_ids=text_ids(targets))["precision_at_1"] == 1.0
    results = RetrievalEvaluator(sources, targets, name="dup")(embed)
    assert (results["dup_p@1_src2tgt"], results["dup_p@1_tgt2src"]) == (1.0, 0.75)
    assert results["dup_p@1"] == 0.875
    pairs = [{"src": s, "tgt": t, "src_lang": "en", "tgt_lang": "de"} for s, t in zip(sources, targets)]
    by_language = retrieval_by_language(pairs, embed)["en-de"]
    assert (by_language["p@1_src2tgt"], by_language["p@1_tgt2src"]) == (1.0, 0.75)
    # sentence-transformers counts the same way
    assert translation_evaluator_p1(sources, targets, VectorModel(embed)) == (1.0, 0.75)


def planted_k_distractor_case():
    """4 sources e0..e3 among 12 targets (dimension 8); target i translates source i.

    Source 0's gold is the source itself: rank 1 whatever is drawn. Source 1's gold (cosine -0.5) is below every
    other target (cosine 0): rank K + 1. Source 2's gold has cosine 0.5 and targets 4 and 5 cosine 0.7: rank 1 +
    how many of them are drawn. Source 3's gold "das Haus" has cosine 0.4, target 7 cosine 0.9 and target 6 is
    the same text "das Haus" (same vector): a drawn copy ties and ranks before the gold, but it is the gold text.
    Targets 8-11 lie in dimensions 4-5, orthogonal to every source.
    """
    dim = 8
    sources = np.eye(dim)[:4]

    targets = np.zeros((12, dim))
    targets[0] = sources[0]
    targets[1] = at_cosine(dim, 1, -0.5, 7)
    targets[2] = at_cosine(dim, 2, 0.5, 7)
    targets[3] = at_cosine(dim, 3, 0.4, 6)
    targets[4], targets[5] = at_cosine(dim, 2, 0.7, 5), at_cosine(dim, 2, 0.7, 4)
    targets[6] = targets[3]
    targets[7] = at_cosine(dim, 3, 0.9, 5)
    targets[8:, 4:6] = [[1, 0], [0, 1], [0.6, 0.8], [0.8, -0.6]]
    texts = ["hallo", "eins", "zwei", "das Haus", "a", "b", "das Haus", "c", "d", "e", "f", "g"]
    return sources, targets, texts


def test_precision_at_n_with_k_distractors_by_hand():
    sources, targets, texts = planted_k_distractor_case()
    K, cutoffs = 4, [1, 2, 3, 5]
    rows_differ = False
    for seed in range(12):
        drawn = draw_distractors(4, 12, K, seed)
        for row in range(4):  # each source ranks K distinct other targets, then its gold last
            assert drawn[row, -1] == row and len(set(drawn[row])) == K + 1 and row not in drawn[row, :-1]
        others = [set(drawn[row, :-1].tolist()) for row in range(4)]
        by_text = [1, K + 1, 1 + len({4, 5} & others[2]), 1 + (7 in others[3])]
        by_row = by_text[:3] + [by_text[3] + (6 in others[3])]
        expected_text = {f"precision_at_{n}": np.mean([rank <= n for rank in by_text]) for n in cutoffs}
        expected_row = {f"precision_at_{n}": np.mean([rank <= n for rank in by_row]) for n in cutoffs}
        options = {"n": cutoffs, "num_distractors": K, "seed": seed}
        assert distractor_retrieval(sources, targets, target_ids=text_ids(texts), **options) == expected_text
        assert distractor_retrieval(sources, targets, **options) == expected_row
        rows_differ |= expected_text != expected_row
    assert rows_differ  # some seed draws the copy of "das Haus" for source 3
    np.testing.assert_array_equal(draw_distractors(4, 12, K, 3), draw_distractors(4, 12, K, 3))
    assert not np.array_equal(draw_distractors(4, 12, K, 3), draw_distractors(4, 12, K, 4))


def test_distractors_are_drawn_uniformly():
    """Source 5 of 11 draws each other target with probability K / 10, and never its own gold."""
    drawn = np.stack([draw_distractors(6, 11, 3, seed)[5, :-1] for seed in range(2000)])
    rates = np.array([(drawn == target).any(axis=1).mean() for target in range(11)])
    assert rates[5] == 0
    assert np.allclose(np.delete(rates, 5), 3 / 10, atol=0.04), rates


@pytest.fixture(scope="module")
def sentence_transformer(tmp_path_factory, tokenizer_dir):
    """A SentenceTransformer on a small saved EMS model (`save_tiny_model`, as the `saved_model` fixture has it)."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("st-model")
    save_tiny_model(folder, tokenizer_dir)
    return SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)


def memoized(encode):
    """`encode` run once per distinct text: every later call returns the very same vectors."""
    cache = {}

    def embed(texts):
        new = [text for text in dict.fromkeys(texts) if text not in cache]
        if new:
            cache.update(zip(new, encode(new)))
        return np.stack([cache[text] for text in texts])

    return embed


def assert_same_p1_as_sentence_transformers(model, sources, targets):
    """This package's Tatoeba P@1 (the suite's evaluator and the training run's `retrieval_by_language`) equals
    `TranslationEvaluator`'s, both ways, on the model's embeddings; each text is embedded once and the same vector
    reaches both, so only the protocols are compared."""
    embed = memoized(model.encode)
    st_forward, st_backward = translation_evaluator_p1(sources, targets, VectorModel(embed))
    results = RetrievalEvaluator(sources, targets, name="x")(embed)
    assert (results["x_p@1_src2tgt"], results["x_p@1_tgt2src"]) == (st_forward, st_backward)
    pairs = [{"src": s, "tgt": t, "src_lang": "en", "tgt_lang": "xx"} for s, t in zip(sources, targets)]
    by_language = retrieval_by_language(pairs, embed)["en-xx"]
    assert (by_language["p@1_src2tgt"], by_language["p@1_tgt2src"]) == (st_forward, st_backward)
    return st_forward, st_backward


def test_tatoeba_p1_equals_translation_evaluator_on_real_pairs(sentence_transformer, heldout_pairs):
    """On the embedded held-out pairs (no repeated texts), where judging by row or by text cannot differ."""
    scores = []
    for code in ("de", "ja"):
        rows = [row for row in heldout_pairs if row["tgt_lang"] == code]
        sources, targets = [row["src"] for row in rows], [row["tgt"] for row in rows]
        assert len(set(targets)) == len(targets) == 100 and len(set(sources)) == 100
        scores += assert_same_p1_as_sentence_transformers(sentence_transformer, sources, targets)
    assert 0 < min(scores) and max(scores) < 1  # an untrained encoder: some hits, some misses


@requires_shared
def test_tatoeba_p1_equals_translation_evaluator_with_repeated_targets(sentence_transformer):
    """On a dev file of ../shared/data whose targets repeat: both count a retrieved copy of the gold as a hit."""
    table = read_tsv(SHARED_DATA / "parallel" / "dev" / "ja.tsv", ("en", "text"))
    targets = table["text"]
    assert len(set(targets)) < len(targets), "ja.tsv no longer repeats a target"
    assert_same_p1_as_sentence_transformers(sentence_transformer, table["en"], targets)
