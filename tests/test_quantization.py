"""Evaluation at lower cost: truncated and quantized embeddings scored as sentence-transformers' quantize_embeddings
gives them (binary by Hamming distance), in suite tasks and in the comparison; unknown precisions are clear errors."""

import numpy as np
import pytest
from sentence_transformers.util import quantize_embeddings

from trainers.compare import compare_models, parse_model_spec
from trainers.evaluation.quantization import ReducedEmbedder, reduced
from trainers.evaluation.retrieval import cosine_similarity_matrix
from trainers.evaluation.suite import load_suite, run_suite

from .test_compare import suite, two_models  # noqa: F401  (fixtures)

rng = np.random.default_rng(0)
EMBEDDINGS = rng.normal(size=(40, 19)).astype(np.float32)
TEXTS = [f"text {i}" for i in range(40)]


def table(texts):
    return EMBEDDINGS[[TEXTS.index(text) for text in texts]]


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_scoring_is_hamming_distance_of_quantize_embeddings(precision):
    codes = quantize_embeddings(EMBEDDINGS[:, :16], precision)  # truncated to 16, packed to 2 bytes
    packed = codes if precision == "ubinary" else (codes.astype(np.int16) + 128).astype(np.uint8)  # ST: bits - 128
    bits = np.unpackbits(packed, axis=-1)
    np.testing.assert_array_equal(bits, EMBEDDINGS[:, :16] > 0)  # the sign bit of each dimension
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)  # by hand, from the packed codes
    scores = cosine_similarity_matrix(*[ReducedEmbedder(table, 16, precision)(TEXTS)] * 2)
    np.testing.assert_allclose(scores, 1 - 2 * hamming / 16, atol=1e-6)
    np.testing.assert_array_equal(ReducedEmbedder(table, 16, precision)(TEXTS), np.where(bits, 1.0, -1.0))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_integer_scoring_uses_the_quantize_embeddings_values_with_the_first_calls_ranges(precision):
    embed = ReducedEmbedder(table, None, precision)
    first = embed(TEXTS[:30])  # calibrates on these
    np.testing.assert_array_equal(first, quantize_embeddings(EMBEDDINGS[:30], precision).astype(np.float32))
    ranges = np.vstack((EMBEDDINGS[:30].min(0), EMBEDDINGS[:30].max(0)))
    np.testing.assert_array_equal(embed(TEXTS[30:]),
                                  quantize_embeddings(EMBEDDINGS[30:], precision, ranges=ranges).astype(np.float32))


def test_float32_and_truncation():
    assert reduced(table) is table
    np.testing.assert_array_equal(reduced(table, 5)(TEXTS), EMBEDDINGS[:, :5])
    with pytest.raises(ValueError, match="truncate_dim=64 is larger than the embedding"):
        reduced(table, 64)(TEXTS)


def test_unknown_precision_and_bad_truncation_are_clear_errors(tmp_path, suite, two_models):  # noqa: F811
    with pytest.raises(ValueError, match=r"precision='int4' is not one .* use one of \('float32'"):
        reduced(table, precision="int4")
    with pytest.raises(ValueError, match="truncate_dim=0"):
        reduced(table, 0)
    with pytest.raises(ValueError, match="precision='int4'"):
        parse_model_spec(f"{two_models[0]}?precision=int4")
    with pytest.raises(ValueError, match="no dense embedding"):
        parse_model_spec("tfidf?precision=binary")
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite.read_text().replace("type: similarity,", "type: similarity, precision: int4,"))
    with pytest.raises(ValueError, match="task 'sim'.*precision='int4'"):
        load_suite(bad)


def test_suite_tasks_and_the_comparison_take_truncate_dim_and_precision(tmp_path, suite, two_models):  # noqa: F811
    first, _ = two_models
    reduced_suite = tmp_path / "reduced.yaml"
    reduced_suite.write_text(suite.read_text().replace("languages: all}", "languages: all, truncate_dim: 8, "
                                                                          "precision: binary}"))
    from trainers.loading import load_embedder

    embed, languages = load_embedder(first, device="cpu")
    by_suite = run_suite(load_suite(reduced_suite, languages), embed)
    by_hand = run_suite(load_suite(suite, languages), ReducedEmbedder(embed, 8, "binary"))
    assert {k: v for k, v in by_suite.items() if "indomain" in k} == {k: v for k, v in by_hand.items()
                                                                       if "indomain" in k}
    spec = parse_model_spec(f"{first}?truncate_dim=8,precision=binary")
    assert (spec.truncate_dim, spec.precision, spec.name) == (8, "binary", f"{first.name} (truncate_dim 8) "
                                                                          "(precision binary)")
    comparison = compare_models([f"full={first}", f"small={first}?truncate_dim=8,precision=binary"], suite)
    small = comparison["models"]["small"]["results"]
    assert {k: v for k, v in small.items() if "indomain" in k} == {k: v for k, v in by_hand.items()
                                                                   if "indomain" in k}
    assert small != comparison["models"]["full"]["results"]
