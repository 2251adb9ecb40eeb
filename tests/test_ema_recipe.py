"""`recipe: ema_alignment` end to end on a tiny BERT sentence-transformers student with LoRA: retrieval before and
after training, the LoRA adapters merged into a plain folder that AutoModel and SentenceTransformer load with the
adapted student's embeddings, the card; stage 1 (similarity) chained before the alignment, each stage measured;
and clear errors for bad students, LoRA configs and similarity settings."""

import json

import numpy as np
import pytest
import torch
import yaml
from peft import PeftModel
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

from trainers.cli import train as train_command
from trainers.encoding import encode
from trainers.recipes import get_recipe, load_run_config, run_recipe

from .conftest import write_jsonl

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory, small_pairs, heldout_pairs):
    folder = tmp_path_factory.mktemp("pairs")
    by_language = {}
    for row in heldout_pairs:
        by_language.setdefault(row["tgt_lang"], []).append(row)
    heldout = [row for rows in by_language.values() for row in rows[:12]]
    out_of_domain = [row for language in ("de", "fr") for row in by_language[language][12:24]]
    train = [row for language in ("de", "fr", "ja", "ru")
             for row in [r for r in small_pairs if r["tgt_lang"] == language][:16]]
    return {"train": write_jsonl(folder / "train.jsonl", train),
            "heldout": write_jsonl(folder / "heldout.jsonl", heldout),
            "out_of_domain": write_jsonl(folder / "ood.jsonl", out_of_domain),
            "texts": [text for row in train + heldout for text in (row["src"], row["tgt"])]}


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory, pair_files):
    """A tiny random BERT with a character WordPiece vocabulary of the data, saved as a sentence-transformers folder
    Transformer -> mean Pooling -> Normalize, like all-MiniLM-L6-v2."""
    bert = tmp_path_factory.mktemp("bert")
    # the vocabulary as a mapping: transformers 5 ignores vocab_file (a tokenizer of the special tokens alone)
    normalizer = BertTokenizerFast(vocab=dict.fromkeys(SPECIALS, 0)).backend_tokenizer.normalizer
    chars = sorted({c for text in pair_files["texts"] for c in normalizer.normalize_str(text) if not c.isspace()})
    vocabulary = SPECIALS + chars + [f"##{c}" for c in chars]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary)}, model_max_length=32)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0), add_pooling_layer=False).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = st_models.Transformer(str(bert), max_seq_length=32)
    folder = tmp_path_factory.mktemp("student")
    SentenceTransformer(modules=[transformer, st_models.Pooling(32, pooling_mode="mean"), st_models.Normalize()],
                        device="cpu").save(str(folder), create_model_card=False)
    return folder


def test_the_student_reads_every_character_of_the_data(pair_files, student_folder):
    """The student's tokenizer, as saved, holds the data's characters: no text of the data is read as [UNK]."""
    tokenizer = AutoTokenizer.from_pretrained(student_folder)
    for text in pair_files["texts"]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids and len(ids) > 2, text


def write_config(path, pair_files, student: dict, similarity: dict | None = None, **training):
    config = {
        "recipe": "ema_alignment",
        "student": student,
        "similarity": similarity,
        "teacher": None,
        "data": {name: str(pair_files[name]) for name in ("train", "heldout", "out_of_domain")},
        "training": {"per_device_train_batch_size": 8, "max_steps": 4, "learning_rate": 0.02, "tau_base": 0.9,
                     "logging_steps": 1, "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
                     "seed": 0, "dataloader_num_workers": 0, **training},
    }
    path.write_text(yaml.safe_dump(config))
    return load_run_config(path)


LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}


def normalized(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def test_lora_student_is_aligned_merged_and_saved_as_a_plain_sentence_transformer(tmp_path, pair_files,
                                                                                   student_folder):
    config = write_config(tmp_path / "run.yaml", pair_files, {"model": str(student_folder), "lora": LORA})
    output = tmp_path / "out"
    results = run_recipe(config, output, resume=False)

    # before and after, beside the baseline, for both evaluation sets
    for name in ("heldout", "out_of_domain"):
        assert {"model", "before_training", "tfidf_baseline"} <= results[name].keys()
        assert results[name]["model"].keys() == results[name]["before_training"].keys()
        assert 0.0 <= results[name]["before_training"]["average"]["p@1"] <= 1.0
    assert results["student"]["pooling"] == "mean" and results["student"]["merged"]
    assert results["training"]["global_step"] == 4
    assert json.loads((output / "eval_results.json").read_text())["heldout"]["before_training"]

    # a plain folder: no adapters at the root (AutoModel would follow them), the student's own modules
    assert not (output / "adapter_config.json").exists() and (output / "lora_adapter" / "adapter_config.json").is_file()
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((output / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    merged = AutoModel.from_pretrained(output).eval()
    assert type(merged).__name__ == "BertModel" and not any("lora" in n for n, _ in merged.named_parameters())

    # the adapted, unmerged student: the untouched student with the saved adapters
    tokenizer = AutoTokenizer.from_pretrained(student_folder)
    texts = pair_files["texts"][:24]
    base = AutoModel.from_pretrained(student_folder).eval()
    before = normalized(encode(base, tokenizer, texts, pooling="mean"))
    adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(student_folder), output / "lora_adapter").eval()
    expected = normalized(encode(adapted, tokenizer, texts, pooling="mean"))
    assert np.abs(expected - before).max() > 1e-4  # the adapters trained, so the check below can fail

    np.testing.assert_allclose(normalized(encode(merged, AutoTokenizer.from_pretrained(output), texts,
                                                 pooling="mean")), expected, atol=1e-5, rtol=0)
    st = SentenceTransformer(str(output), device="cpu")
    np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), expected, atol=1e-5, rtol=0)

    card = (output / "README.md").read_text()
    assert "P@1 before" in card and "model-index" in card and "lora_adapter/" in card
    assert "EMA teacher" in card and "τ_base = 0.9" in card


def test_unknown_student_says_what_to_pass(tmp_path, pair_files):
    config = write_config(tmp_path / "run.yaml", pair_files, {"model": str(tmp_path / "no-such-student")})
    with pytest.raises(ValueError, match=r"student.model=.*no-such-student.*cannot be loaded: .*is not a folder.*"
                                         r"`minilm`"):
        run_recipe(config, tmp_path / "out")


def test_lora_targeting_no_module_names_the_student_s_layers(tmp_path, pair_files, student_folder):
    student = {"model": str(student_folder), "lora": {**LORA, "target_modules": ["q_proj", "v_proj"]}}
    config = write_config(tmp_path / "run.yaml", pair_files, student)
    with pytest.raises(ValueError, match=r"student.lora in .*run.yaml: LoRA target_modules=.*matches no module of "
                                         r"BertModel, whose linear layers are .*'query'.*'value'"):
        get_recipe("ema_alignment")(config, tmp_path / "out")  # when the recipe is made: before any data or weights
    assert not (tmp_path / "out").exists()


def test_bad_student_settings_fail_when_the_config_loads(tmp_path, pair_files, student_folder):
    with pytest.raises(ValueError, match="student.lora: .*rank"):
        write_config(tmp_path / "a.yaml", pair_files, {"model": str(student_folder), "lora": {"rank": 8}})
    config = write_config(tmp_path / "b.yaml", pair_files, {"model": str(student_folder), "pooling": "cls"})
    with pytest.raises(ValueError, match="student.pooling='cls', but .* pools by 'mean'"):
        run_recipe(config, tmp_path / "out")


def test_plain_transformers_student_fully_fine_tuned_keeps_its_stated_pooling(tmp_path, pair_files, student_folder):
    plain = tmp_path / "plain"
    AutoModel.from_pretrained(student_folder).save_pretrained(plain)
    AutoTokenizer.from_pretrained(student_folder).save_pretrained(plain)
    config = write_config(tmp_path / "run.yaml", pair_files, {"model": str(plain), "pooling": "cls"}, max_steps=2)
    output = tmp_path / "out"
    results = run_recipe(config, output, resume=False)
    assert results["student"]["pooling"] == "cls" and not results["student"]["merged"]
    assert not (output / "lora_adapter").exists()
    assert json.loads((output / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "cls"

    texts = pair_files["texts"][:24]
    trained = AutoModel.from_pretrained(output).eval()
    expected = encode(trained, AutoTokenizer.from_pretrained(output), texts, pooling="cls")
    untouched = encode(AutoModel.from_pretrained(plain).eval(), AutoTokenizer.from_pretrained(plain), texts,
                       pooling="cls")
    assert np.abs(expected - untouched).max() > 1e-4  # every weight trained
    st = SentenceTransformer(str(output), device="cpu")
    np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), expected, atol=1e-5, rtol=0)


def scored_pairs(path, rows):
    """(text1, text2, score) on the STS scale 0-5: a pair 5, an English sentence beside another's translation 0."""
    lines = [f"{a['src']}\t{a['tgt']}\t5" for a in rows[:12]]
    lines += [f"{a['src']}\t{b['tgt']}\t0" for a, b in zip(rows[12:24], rows[:12])]
    path.write_text("text1\ttext2\tscore\tlang1\tlang2\n" + "".join(f"{line}\ten\tde\n" for line in lines))
    return path


def test_stage1_then_alignment_measured_after_each_stage(tmp_path, pair_files, small_pairs, student_folder):
    german = [row for row in small_pairs if row["tgt_lang"] == "de"][100:136]
    train = scored_pairs(tmp_path / "stage1.tsv", german[:24])
    evaluation = scored_pairs(tmp_path / "eval.tsv", german[12:36])  # other pairs of the same kind
    similarity = {"train": str(train), "score_range": [0, 5], "training": {"max_steps": 3, "learning_rate": 0.005},
                  "eval": [str(evaluation), str(tmp_path / "not-there.tsv")]}
    config = write_config(tmp_path / "run.yaml", pair_files, {"model": str(student_folder), "lora": LORA},
                          similarity, max_steps=2)
    output = tmp_path / "out"
    results = run_recipe(config, output, resume=False)

    stage1 = AutoModel.from_pretrained(output / "stage1")  # stage 1's student, saved
    untouched = AutoModel.from_pretrained(student_folder)
    assert any(not torch.equal(a, b) for a, b in zip(stage1.state_dict().values(), untouched.state_dict().values()))
    for name in ("heldout", "out_of_domain"):
        assert {"before_training", "after_stage1", "model"} <= results[name].keys()
    stages = ("before_training", "after_stage1", "after_training")
    spearman = {stage: results["similarity"][stage]["eval_spearman"] for stage in stages}
    assert len(set(spearman.values())) == 3, spearman  # each stage measured on its own weights
    data = json.loads((output / "eval_results.json").read_text())["data"]
    assert data["stage1"]["pairs"] == 24 and data["stage1"]["training"]["global_step"] == 3
    # paths of this machine are written relative to the folder (the file is published)
    assert data["similarity_eval"] == {"sets": ["eval"], "skipped_missing": ["../not-there.tsv"]}
    assert results["student"]["stage1"] and results["training"]["global_step"] == 2

    # the adapters were trained on top of the stage-1 student: merged folder == stage-1 student + adapters
    adapter = json.loads((output / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(output / "stage1")
    texts = pair_files["texts"][:16]
    tokenizer = AutoTokenizer.from_pretrained(student_folder)
    adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(output / "stage1"), output / "lora_adapter").eval()
    np.testing.assert_allclose(encode(AutoModel.from_pretrained(output).eval(), tokenizer, texts, pooling="mean"),
                               encode(adapted, tokenizer, texts, pooling="mean"), atol=1e-5, rtol=0)

    card = (output / "README.md").read_text()
    assert "stage 1 (sec. 5.1) fine-tuned the whole student on 24 scored" in card
    assert "| eval | " in card and "after stage 1" in card and "Spearman" in card

    # a rerun of the same folder, through the command line, reuses the finished stage 1
    train_command(["--config", str(tmp_path / "run.yaml"), "--output_dir", str(output), "--no_resume"])
    again = json.loads((output / "eval_results.json").read_text())
    assert again["similarity"]["after_stage1"] == results["similarity"]["after_stage1"]


def test_bad_similarity_settings_give_clear_errors(tmp_path, pair_files, small_pairs, student_folder):
    student = {"model": str(student_folder)}
    with pytest.raises(ValueError, match="similarity.train=.* needs similarity.score_range"):
        write_config(tmp_path / "a.yaml", pair_files, student, {"train": "x.tsv"})
    with pytest.raises(ValueError, match=r"similarity.target_range=\[0, 5\]: use \[0, 1\] or \[-1, 1\]"):
        write_config(tmp_path / "b.yaml", pair_files, student, {"target_range": [0, 5]})
    german = [row for row in small_pairs if row["tgt_lang"] == "de"][:24]
    train = scored_pairs(tmp_path / "stage1.tsv", german)
    config = write_config(tmp_path / "c.yaml", pair_files, student,
                          {"train": str(train), "score_range": [0, 5], "eval": [str(train)]})
    with pytest.raises(ValueError, match="shares 24 pairs with the stage-1 data"):
        run_recipe(config, tmp_path / "out")
    config = write_config(tmp_path / "d.yaml", pair_files, student, {"train": str(train), "score_range": [0, 4]})
    with pytest.raises(ValueError, match=r"score 5 is outside score_range \[0, 4\]"):
        run_recipe(config, tmp_path / "out")
