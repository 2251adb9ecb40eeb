"""Multilingual distillation from a separate teacher (`teacher: <encoder>` of `recipe: ema_alignment`): the loss
against hand values, the teacher's embeddings computed once and reused, a teacher never trained, the projection
saved as a Dense module and applied by both loaders, the new EMS student, τ_base scaled to the run, the vocabulary
check, and the bad-input errors."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from transformers import BertConfig, BertModel, BertTokenizerFast

from trainers.loading import load_embedder
from trainers.losses import distillation_loss
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.ema_alignment import distillation as distillation_module
from trainers.recipes.ema_alignment import recipe as recipe_module
from trainers.recipes.ema_alignment.recipe import SPLIT_WARNING, vocabulary_report
from trainers.recipes.ema_alignment.trainer import ema_tau, scaled_tau_base

from .conftest import write_jsonl

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_distillation_loss_both_terms_by_hand():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pivot = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # squared errors 0,1 | 0,0 -> MSE 1/4
    other = torch.tensor([[3.0, 0.0], [0.0, 0.0]])  # squared errors 4,0 | 0,4 -> MSE 8/4 = 2
    loss, terms = distillation_loss(pivot, other, teacher)
    assert terms["pivot_loss"].item() == pytest.approx(0.25) and terms["other_loss"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx((0.25 + 2.0) / 2)  # MSELoss: the mean over the two input columns
    loss, _ = distillation_loss(pivot, other, teacher, pivot_weight=3.0, other_weight=1.0)
    assert loss.item() == pytest.approx((3 * 0.25 + 2.0) / 4)
    loss, terms = distillation_loss(None, other, teacher, pivot_weight=0.0)  # eq. 1 alone
    assert loss.item() == pytest.approx(2.0) and "pivot_loss" not in terms
    with pytest.raises(ValueError, match="at least one of them > 0"):
        distillation_loss(pivot, other, teacher, pivot_weight=0.0, other_weight=0.0)


def test_tau_base_scaled_to_the_run_by_hand():
    assert scaled_tau_base(105_000) == pytest.approx(0.99999)  # the paper's value at its K
    assert scaled_tau_base(100) == pytest.approx(1 - 0.0105)
    # the teacher's travel 1 - prod(tau_k) over the cosine schedule is the paper's ~41 % at any K
    for steps in (100, 105_000):
        kept = math.prod(ema_tau(k, steps, scaled_tau_base(steps)) for k in range(steps))
        assert 1 - kept == pytest.approx(0.41, abs=0.01)
    assert scaled_tau_base(1) == 0.0


class SplittingTokenizer:
    """A whitespace tokenizer that splits the words of `fine` languages' texts into `factor` tokens each."""

    unk_token_id, unk_token = None, None

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, texts, add_special_tokens=False):
        ids = [[1] * (len(text.split()) * (self.factor if text.startswith("ru:") else 1)) for text in texts]
        return {"input_ids": ids}


def test_vocabulary_check_flags_a_language_split_four_times_finer():
    import datasets

    rows = [{"src": f"one two three {i}", "tgt": f"ru: eins zwei {i}", "src_lang": "en", "tgt_lang": "ru"}
            for i in range(5)]
    rows += [{"src": f"one two three {i}", "tgt": f"de: eins zwei {i}", "src_lang": "en", "tgt_lang": "de"}
             for i in range(5)]
    report = vocabulary_report(SplittingTokenizer(4), datasets.Dataset.from_list(rows))
    assert report["ru"]["split_ratio"] == pytest.approx(4.0) and report["ru"]["split_ratio"] > SPLIT_WARNING
    assert report["de"]["split_ratio"] == pytest.approx(1.0) and report["en"]["split_ratio"] == 1.0
    assert report["ru"]["tokens_per_character"] == pytest.approx(4 * 4 / len("ru: eins zwei 0"), abs=1e-4)


# --- end to end on tiny models ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_files(tmp_path_factory, small_pairs, heldout_pairs):
    folder = tmp_path_factory.mktemp("pairs")
    heldout = [row for language in ("de", "fr", "ja", "ru")
               for row in [r for r in heldout_pairs if r["tgt_lang"] == language][:12]]
    out_of_domain = [row for language in ("de", "fr")
                     for row in [r for r in heldout_pairs if r["tgt_lang"] == language][12:24]]
    train = [row for language in ("de", "fr", "ja", "ru")
             for row in [r for r in small_pairs if r["tgt_lang"] == language][:16]]
    return {"train": write_jsonl(folder / "train.jsonl", train),
            "heldout": write_jsonl(folder / "heldout.jsonl", heldout),
            "out_of_domain": write_jsonl(folder / "ood.jsonl", out_of_domain),
            "texts": [text for row in train + heldout for text in (row["src"], row["tgt"])]}


def tiny_bert_folder(folder, texts, hidden, english_only=False, normalize=False):
    """A tiny random BERT sentence-transformers folder (Transformer -> mean Pooling [-> Normalize]) with a character
    vocabulary of `texts` (ASCII letters only with `english_only`: anything else is [UNK])."""
    bert = folder / "bert"
    normalizer = BertTokenizerFast(vocab=dict.fromkeys(SPECIALS, 0)).backend_tokenizer.normalizer
    chars = sorted({c for text in texts for c in normalizer.normalize_str(text) if not c.isspace()
                    and (not english_only or c.isascii())})
    vocabulary = SPECIALS + chars + [f"##{c}" for c in chars]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary)}, model_max_length=32)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    st_folder = folder / "st"
    modules = [st_models.Transformer(str(bert), max_seq_length=32), st_models.Pooling(hidden, pooling_mode="mean")]
    SentenceTransformer(modules=modules + [st_models.Normalize()] * normalize,
                        device="cpu").save(str(st_folder), create_model_card=False)
    return st_folder


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory, pair_files):
    return tiny_bert_folder(tmp_path_factory.mktemp("teacher"), pair_files["texts"], hidden=24)


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory, pair_files):
    return tiny_bert_folder(tmp_path_factory.mktemp("student"), pair_files["texts"], hidden=16)


@pytest.fixture
def teacher_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_module, "TEACHER_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def write_config(path, pair_files, student, teacher, **training):
    config = {
        "recipe": "ema_alignment", "student": student, "teacher": teacher, "similarity": None,
        "data": {name: str(pair_files[name]) for name in ("train", "heldout", "out_of_domain")},
        "training": {"per_device_train_batch_size": 8, "max_steps": 4, "learning_rate": 0.02, "logging_steps": 1,
                     "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 0,
                     "dataloader_num_workers": 0, **training},
    }
    path.write_text(yaml.safe_dump(config))
    return load_run_config(path)


def counting_teacher(monkeypatch):
    """Count the sentences every separate teacher embeds."""
    embedded = []
    original = distillation_module.Teacher.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        embed = self.embed
        self.embed = lambda texts: embedded.extend(texts) or embed(texts)

    monkeypatch.setattr(distillation_module.Teacher, "__init__", init)
    return embedded


def test_separate_teacher_projection_cache_and_both_loaders(tmp_path, pair_files, teacher_folder, student_folder,
                                                            teacher_cache, monkeypatch):
    embedded = counting_teacher(monkeypatch)
    teacher_state = {k: v.clone() for k, v in SentenceTransformer(str(teacher_folder), device="cpu")
                     .state_dict().items()}
    config = write_config(tmp_path / "run.yaml", pair_files, {"model": str(student_folder)},
                          {"model": str(teacher_folder), "pivot_weight": 1.0, "other_weight": 2.0},
                          matryoshka_dims=[24, 8])
    output = tmp_path / "out"
    results = run_recipe(config, output, resume=False)
    pivots = {row["src"] for row in map(json.loads, pair_files["train"].read_text().splitlines())}
    assert sorted(embedded) == sorted(pivots)  # each distinct pivot once
    assert results["student"]["teacher"]["kind"] == "separate" and results["student"]["matryoshka_dims"] == [24, 8]
    assert list(teacher_cache.glob("teacher-*.arrow"))

    # the projection 16 -> 24 is a Dense module, applied by the package's loader and by sentence-transformers
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((output / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense"]
    texts = pair_files["texts"][:10]
    by_st = SentenceTransformer(str(output), device="cpu").encode(texts)
    embed, _ = load_embedder(output, device="cpu")
    assert by_st.shape == (10, 24)
    np.testing.assert_allclose(embed(texts), by_st, atol=1e-5)
    card = (output / "README.md").read_text()
    assert "Matryoshka" in card and "24, 8" in card

    # a second run with the same teacher and pivots reads the cached embeddings: the teacher embeds nothing
    embedded.clear()
    run_recipe(config, tmp_path / "again", resume=False)
    assert embedded == []

    # the teacher never trained
    after = SentenceTransformer(str(teacher_folder), device="cpu").state_dict()
    assert all(torch.equal(teacher_state[k], after[k]) for k in teacher_state)


def test_a_normalizing_teacher_fits_unit_vectors_by_hand():
    """Against a teacher whose folder ends with Normalize, the loss is the MSE of the student's embeddings scaled to
    unit length (by hand: each row divided by its norm), not of the raw ones."""
    student = torch.tensor([[3.0, 4.0], [0.0, 2.0], [6.0, 8.0], [1.0, 0.0]])  # pivots (2 rows), then translations
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # unit rows: pivots (0.6, 0.8), (0, 1); translations (0.6, 0.8), (1, 0)
    pivot_term = ((0.6 - 1) ** 2 + 0.8 ** 2 + 0 + 0) / 4
    other_term = ((0.6 - 1) ** 2 + 0.8 ** 2 + 0 + 1 + 1) / 4
    stub = type("Stub", (), {})()
    stub.pooling, stub.pivot_weight, stub.other_weight = None, 1.0, 1.0
    stub.args = type("Args", (), {"matryoshka_dims": None, "matryoshka_weights": None})()
    stub.record_loss_terms = lambda terms: None

    class Encoder(torch.nn.Module):
        produces_sentence_embedding = True

        def forward(self, input_ids, attention_mask):
            return type("Output", (), {"pooler_output": student})()

    inputs = {"input_ids": torch.zeros(4, 1, dtype=torch.long), "attention_mask": torch.ones(4, 1, dtype=torch.long),
              "teacher_embeddings": teacher}
    for normalize, expected in ((True, (pivot_term + other_term) / 2),
                                (False, (((3 - 1) ** 2 + 16 + 0 + 1) / 4 + ((6 - 1) ** 2 + 64 + 1 + 1) / 4) / 2)):
        stub.normalize = normalize
        loss = distillation_module.DistillationTrainer.compute_loss(stub, Encoder(), inputs)
        assert loss.item() == pytest.approx(expected)


def test_a_normalizing_teacher_gives_a_normalizing_student(tmp_path, pair_files, student_folder, teacher_cache):
    teacher = tiny_bert_folder(tmp_path / "teacher", pair_files["texts"], hidden=24, normalize=True)
    output = tmp_path / "out"
    run_recipe(write_config(tmp_path / "run.yaml", pair_files, {"model": str(student_folder)},
                            {"model": str(teacher)}), output, resume=False)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((output / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense", "Normalize"]  # the projection, then the unit length
    texts = pair_files["texts"][:6]
    by_st = SentenceTransformer(str(output), device="cpu").encode(texts)
    embed, _ = load_embedder(output, device="cpu")
    np.testing.assert_allclose(np.linalg.norm(by_st, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embed(texts), by_st, atol=1e-5)


def test_new_ems_student_distilled(tmp_path, pair_files, teacher_folder, teacher_cache):
    config = write_config(tmp_path / "run.yaml", pair_files,
                          {"model": "ems", "vocab_size": 300,
                           "config": {"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "intermediate_size": 32, "max_position_embeddings": 32,
                                      "language_embedding_size": 8, "contrastive_projection_size": 8}},
                          {"model": str(teacher_folder)})
    output = tmp_path / "out"
    results = run_recipe(config, output, resume=False)
    assert results["training"]["global_step"] == 4
    assert json.loads((output / "config.json").read_text())["model_type"] == "ems"
    assert "ru" in results["data"]["vocabulary"]
    by_st = SentenceTransformer(str(output), device="cpu").encode(pair_files["texts"][:4])
    assert by_st.shape == (4, 24)


def test_bad_teachers_and_dims(tmp_path, pair_files, teacher_folder, student_folder, teacher_cache):
    not_encoder = tmp_path / "vit"
    not_encoder.mkdir()
    (not_encoder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    with pytest.raises(ValueError, match="teacher.model=.* is not a sentence encoder"):
        run_recipe(write_config(tmp_path / "a.yaml", pair_files, {"model": str(student_folder)},
                                {"model": str(not_encoder)}), tmp_path / "a")
    english = tiny_bert_folder(tmp_path / "english", pair_files["texts"], hidden=8, english_only=True)
    ja_pivot = tmp_path / "ja_pivot.jsonl"
    rows = [json.loads(line) for line in pair_files["train"].read_text().splitlines()]
    write_jsonl(ja_pivot, [{"src": r["tgt"], "tgt": r["src"], "src_lang": "ja", "tgt_lang": "en"}
                           for r in rows if r["tgt_lang"] == "ja"])
    with pytest.raises(ValueError, match="cannot read ja"):
        run_recipe(write_config(tmp_path / "b.yaml", {**pair_files, "train": ja_pivot},
                                {"model": str(student_folder)}, {"model": str(english)}), tmp_path / "b")
    with pytest.raises(ValueError, match=r"matryoshka_dims=\[48, 8\]: 48 is larger than the embedding \(24 dims\)"):
        run_recipe(write_config(tmp_path / "c.yaml", pair_files, {"model": str(student_folder)},
                                {"model": str(teacher_folder)}, matryoshka_dims=[48, 8]), tmp_path / "c")
    with pytest.raises(ValueError, match="not strictly decreasing"):
        run_recipe(write_config(tmp_path / "d.yaml", pair_files, {"model": str(student_folder)},
                                {"model": str(teacher_folder)}, matryoshka_dims=[8, 16]), tmp_path / "d")
    with pytest.raises(ValueError, match="teacher.pivot_weight is set, but teacher.model='ema'"):
        write_config(tmp_path / "e.yaml", pair_files, {"model": str(student_folder)},
                     {"model": "ema", "pivot_weight": 1.0})
