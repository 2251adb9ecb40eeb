import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer

from modeling_ems import (
    DualEncoderMultiTask,
    DualEncoderMultiTaskConfig,
    DualEncoderMultiTaskForPreTraining,
    EMSConfig,
    EMSModel,
)
from modeling_ems.modeling_dual_encoder import char_ngrams, ngram_bucket, ngram_table
from trainers.encoding import encode
from trainers.hub import write_sentence_transformers_config

from .test_model import run_without_package


def tiny_config(**overrides) -> DualEncoderMultiTaskConfig:
    settings = dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=16, head_intermediate_size=8, nli_hidden_size=8, ngram_buckets=101,
                    max_ngrams_per_token=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return DualEncoderMultiTaskConfig(**{**settings, **overrides})


def tiny_heads(**overrides) -> DualEncoderMultiTaskForPreTraining:
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(tiny_config(**overrides)).eval()
    if model.config.input_type == "char_ngram":
        model.encoder.set_ngram_vocabulary([None] + [f"\u2581w{i}ord" for i in range(model.config.vocab_size - 1)])
    return model


def test_defaults_are_the_papers_model():
    config = DualEncoderMultiTaskConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        512, 3, 8, 2048)  # sec. 2.1
    assert (config.head_intermediate_size, config.nli_hidden_size, config.head_activation) == (320, 512, "tanh")
    assert config.ngram_orders == [3, 4] and config.ngram_buckets == 200000 and config.similarity == "dot"
    assert config.tasks == ["translation", "response", "quick_thought", "nli"]


@pytest.mark.parametrize("overrides, message", [
    ({"tasks": ["translation", "paraphrase"]}, "paraphrase"),
    ({"tasks": []}, "tasks is empty"),
    ({"input_type": "bytes"}, "input_type='bytes'"),
    ({"ngram_buckets": 0}, "ngram_buckets must be a positive integer"),
    ({"ngram_orders": [3, 0]}, "ngram_orders"),
    ({"similarity": "l2"}, "similarity='l2'"),
    ({"hidden_size": 15}, "multiple of num_attention_heads"),
    ({"head_activation": "sigmoid"}, "head_activation='sigmoid'"),
])
def test_bad_config_is_refused_naming_the_value(overrides, message):
    with pytest.raises(Exception, match=message):  # huggingface_hub's StrictDataclassClassValidationError
        tiny_config(**overrides)


def test_heads_exist_only_for_the_configured_tasks_and_an_unconfigured_task_is_refused():
    model = tiny_heads(tasks=["translation", "response"])
    assert hasattr(model, "response_head") and not hasattr(model, "nli_head")
    assert not hasattr(model, "quick_thought_current_head")
    with pytest.raises(ValueError, match=r"no head for the tasks \['nli'\]"):
        model(torch.ones(4, 3, dtype=torch.long), task="nli")
    with pytest.raises(ValueError, match="no head for the tasks"):
        model.config.check_tasks(["translation", "quick_thought"])


def test_forward_splits_sides_and_applies_each_tasks_heads():
    model = tiny_heads()
    ids = torch.randint(3, 60, (9, 5))
    g = model.encoder(ids).pooler_output
    out = model(ids, task="quick_thought")
    previous, current, following = out.task_embeddings
    torch.testing.assert_close(previous, model.quick_thought_previous_head(g[:3]))
    torch.testing.assert_close(current, model.quick_thought_current_head(g[3:6]))
    torch.testing.assert_close(following, model.quick_thought_next_head(g[6:]))
    assert not torch.allclose(current, previous)  # separate heads
    inputs, responses = model(ids[:6], task="response").task_embeddings
    torch.testing.assert_close(inputs, g[:3])  # g^I = g
    torch.testing.assert_close(responses, model.response_head(g[3:6]))
    u, v = g[:3], g[3:6]
    head = model.nli_head
    expected = head.classifier(torch.tanh(head.dense(torch.cat([u, v, (u - v).abs(), u * v], -1))))
    torch.testing.assert_close(model(ids[:6], task="nli").logits, expected)
    source, target, negatives = model(ids[:8], task="translation", num_examples=2).task_embeddings  # K = 2
    assert source.shape == target.shape == (2, 16) and negatives.shape == (4, 16)
    torch.testing.assert_close(target, g[2:4])  # no head


def test_char_ngrams_and_buckets_are_bounded_and_deterministic_across_python_runs():
    assert char_ngrams("\u2581cat", [3, 4]) == ["<ca", "cat", "at>", "<cat", "cat>"]
    assert char_ngrams("s", [3]) == []  # "s>" is shorter than 3
    pieces = [f"\u2581token{i}" for i in range(500)]
    table = ngram_table(pieces, [3, 4], buckets=97, width=12)
    assert table.shape == (500, 12) and int(table.max()) <= 97 and int(table.min()) >= 0  # 97 = padding
    script = ("from modeling_ems.modeling_dual_encoder import ngram_table;"
              f"print(ngram_table({pieces!r}, [3, 4], 97, 12).tolist())")
    # another interpreter with another string-hash salt than this one gives the same buckets
    salt = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout == str(table.tolist()) + "\n"


def test_collisions_are_bounded_by_the_bucket_count():
    ngrams = sorted({g for i in range(3000) for g in char_ngrams(f"\u2581w{i:04d}x", [3, 4])})
    for buckets in (1, 64, 1_000_000):
        used = {ngram_bucket(g, buckets) for g in ngrams}
        assert len(used) <= buckets and all(0 <= b < buckets for b in used)
        if buckets >= 100 * len(ngrams):
            # with m buckets and n n-grams, expected colliding n-grams are about n^2 / (2m): under 1% here
            assert len(ngrams) - len(used) <= 0.01 * len(ngrams)
    assert len({ngram_bucket(g, 64) for g in ngrams}) == 64  # every bucket used when n >> m


def test_char_ngram_input_averages_word_and_tanh_of_summed_ngrams():
    model = tiny_heads(input_type="char_ngram")
    embedding = model.get_input_embeddings()
    ids = torch.tensor([[0, 5, 7]])
    table = embedding.ngram_table[ids[0]]
    ngram_sum = torch.stack([embedding.ngram_embeddings.weight[row[row < 101]].sum(0) for row in table])
    expected = (embedding.weight[ids[0]] + torch.tanh(embedding.ngram_dense(ngram_sum))) / 2  # sec. 2.1
    torch.testing.assert_close(embedding(ids)[0], expected)
    assert torch.equal(table[0], torch.full((8,), 101))  # the special token has no n-grams


def test_ngram_vocabulary_must_match_the_model():
    model = tiny_heads(input_type="char_ngram")
    with pytest.raises(ValueError, match="one entry per token id"):
        model.encoder.set_ngram_vocabulary(["a"])
    with pytest.raises(ValueError, match="input_type='char_ngram'"):
        tiny_heads().encoder.set_ngram_vocabulary(["a"] * 60)


@pytest.mark.parametrize("input_type", ["subword", "char_ngram"])
def test_save_and_load_with_the_auto_classes(tmp_path, input_type):
    model = tiny_heads(input_type=input_type)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_dual_encoder.DualEncoderMultiTask"
    assert AutoConfig.from_pretrained(tmp_path).model_type == "dual_encoder_multitask"
    bare = AutoModel.from_pretrained(tmp_path).eval()
    assert type(bare) is DualEncoderMultiTask and not hasattr(bare, "nli_head")
    ids = torch.randint(3, 60, (2, 6))
    torch.testing.assert_close(bare(ids).pooler_output, model.encoder(ids).pooler_output)
    heads = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(heads(ids, task="nli").logits, model(ids, task="nli").logits)


def test_a_folder_of_another_model_type_is_refused(tmp_path):
    EMSModel(EMSConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=16, language_embedding_size=4,
                       contrastive_projection_size=8)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="type 'ems'.*needs model_type 'dual_encoder_multitask'"):
        DualEncoderMultiTaskForPreTraining.from_pretrained(tmp_path)


def test_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = tiny_heads(input_type="char_ngram")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ids = [[5, 6, 7, 8]]
    expected = model.encoder(torch.tensor(ids)).pooler_output[0]
    out = run_without_package(textwrap.dedent(f"""
        import json, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(model).__name__ == "DualEncoderMultiTask", type(model).__name__
        print(json.dumps(model(torch.tensor({ids})).pooler_output[0].tolist()))
        """), tmp_path)
    torch.testing.assert_close(torch.tensor(json.loads(out.strip().splitlines()[-1])), expected)


def test_folder_loads_in_sentence_transformers_with_the_same_embeddings(tmp_path, tokenizer_dir):
    from sentence_transformers import SentenceTransformer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(tiny_config(vocab_size=len(tokenizer), input_type="char_ngram",
                                                           max_position_embeddings=32)).eval()
    model.encoder.set_ngram_vocabulary(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    write_sentence_transformers_config(tmp_path, 16, 32)
    texts = ["The Find toolbar searches the document.", "Die Suchleiste durchsucht das Dokument."]
    ours = encode(model, tokenizer, texts)
    st = SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(torch.tensor(st.encode(texts)), torch.tensor(ours), rtol=1e-4, atol=1e-5)


def test_a_training_folder_loads_for_sequence_classification_with_only_the_classifier_new(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from modeling_ems import DualEncoderMultiTaskForSequenceClassification

    model = tiny_heads()
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == (
        "modeling_dual_encoder.DualEncoderMultiTaskForSequenceClassification")
    classifier, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5,
                                                                          output_loading_info=True)
    assert type(classifier) is DualEncoderMultiTaskForSequenceClassification
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"] and not info["unexpected_keys"]
    ids = torch.randint(3, 60, (2, 6))
    torch.testing.assert_close(classifier.eval().encoder(ids).pooler_output, model.encoder(ids).pooler_output)
    assert classifier(ids, labels=torch.tensor([0, 4])).logits.shape == (2, 5)
