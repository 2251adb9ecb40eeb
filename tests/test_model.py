import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel

from modeling_ems import (
    DualEncoderMultiTask,
    DualEncoderMultiTaskConfig,
    EMSConfig,
    EMSForPreTraining,
    EMSModel,
    mean_pool,
)


def test_paper_defaults():
    config = EMSConfig()
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        6, 1024, 16, 4096)
    assert (config.vocab_size, config.language_embedding_size, config.contrastive_projection_size) == (60000, 128, 128)
    assert (config.temperature, config.max_position_embeddings, config.num_languages) == (0.1, 120, 62)
    assert config.xtr_activation == "silu" and config.contrastive_activation == "relu"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_size": 100}, "multiple of num_attention_heads"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"languages": ["en", "de", "en"]}, "more than once"),
        ({"xtr_activation": "nope"}, "xtr_activation"),
        ({"vocab_size": 10, "pad_token_id": 10}, "pad_token_id"),
    ],
)
def test_config_rejects_values_that_make_no_sense(kwargs, message):
    with pytest.raises(Exception, match=message):
        EMSConfig(**kwargs)


def test_languages_set_num_languages_and_unknown_code_is_explained():
    config = EMSConfig(languages=["de", "en"])
    assert config.num_languages == 2 and config.language_id("en") == 1
    with pytest.raises(ValueError, match="Unknown language code 'xx'.*de, en"):
        config.language_id("xx")


def test_forward_outputs_and_mean_pooling(tiny_model):
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    output = tiny_model(ids, mask)
    assert output.last_hidden_state.shape == (2, 5, 32)
    torch.testing.assert_close(output.pooler_output, mean_pool(output.last_hidden_state, mask))
    torch.testing.assert_close(output.pooler_output[0], output.last_hidden_state[0, :3].mean(0))
    assert not any(name.startswith(("xtr_head", "contrastive_head")) for name in tiny_model.state_dict())


def test_padding_does_not_change_the_embedding(tiny_model):
    short = tiny_model(torch.tensor([[5, 6, 7]])).pooler_output
    padded = tiny_model(torch.tensor([[5, 6, 7, 0, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0, 0]])).pooler_output
    torch.testing.assert_close(short, padded, rtol=1e-5, atol=1e-6)


def test_layers_skip_the_padding_and_give_each_sentence_its_unpadded_states_and_gradients(tiny_config):
    """The layers run on the packed real tokens (TokenPacking): every sentence of a (right-)padded batch gets the
    states, embedding and gradients it gets alone, with no padding at all; the padding's states are zero."""
    sentences = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]
    width = max(map(len, sentences))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in sentences])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in sentences])
    torch.manual_seed(0)
    batched = EMSModel(copy.deepcopy(tiny_config)).eval()
    alone = copy.deepcopy(batched)
    output = batched(ids, mask)
    output.pooler_output.pow(2).sum().backward()
    singles = [alone(torch.tensor([row])) for row in sentences]
    sum(single.pooler_output.pow(2).sum() for single in singles).backward()
    for index, single in enumerate(singles):
        real = mask[index].bool()
        torch.testing.assert_close(output.last_hidden_state[index, real], single.last_hidden_state[0],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(output.pooler_output[index], single.pooler_output[0], rtol=1e-5, atol=1e-5)
        assert output.last_hidden_state[index, ~real].abs().sum() == 0
    for (name, parameter), (_, reference) in zip(batched.named_parameters(), alone.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-4, atol=1e-5, msg=name)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [13, 14, 0, 0, 0]])
    return ids, (ids != 0).long()


def char_ngram_encoder() -> DualEncoderMultiTask:
    torch.manual_seed(0)
    config = DualEncoderMultiTaskConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=16, ngram_buckets=101,
                                        max_ngrams_per_token=8, input_type="char_ngram")
    model = DualEncoderMultiTask(config)
    model.set_ngram_vocabulary([None] + [f"\u2581w{i}ord" for i in range(59)])
    return model


@pytest.mark.parametrize("family", ["ems", "ems_heads", "dual_encoder"])
def test_graph_capture_is_one_graph_without_host_syncs_and_gives_the_packed_results(tiny_config, family):
    """Under graph capture (torch.compile, torch.export, the ONNX exporters, jit.trace) the layers skip the token
    packing and its host syncs (`nonzero`, `.all()`): one graph, no break, and the results of the packed eager run,
    zeros at the padding included."""
    ids, mask = padded_batch()
    torch.manual_seed(0)
    model = {"ems": lambda: EMSModel(tiny_config), "ems_heads": lambda: EMSForPreTraining(tiny_config),
             "dual_encoder": char_ngram_encoder}[family]().eval()
    inputs = (ids, mask) + ((torch.tensor([0, 1, 2]),) if family == "ems_heads" else ())
    explained = torch._dynamo.explain(model)(*inputs)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    eager = model(*inputs)
    torch._dynamo.reset()
    captured = torch.compile(model, backend="eager", fullgraph=True)(*inputs)
    traced = torch.jit.trace(model, inputs, strict=False)(*inputs)  # what torch.onnx.export(dynamo=False) runs
    for other in (captured, traced):
        torch.testing.assert_close(other["last_hidden_state"], eager.last_hidden_state, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(other["pooler_output"], eager.pooler_output, rtol=1e-5, atol=1e-6)
    assert captured.last_hidden_state[~mask.bool()].abs().sum() == 0


@pytest.mark.parametrize("family", ["ems_heads", "dual_encoder"])
def test_activation_checkpointing_gives_the_same_gradients_dropout_included(tiny_config, family):
    """`activation_checkpointing: true` (alias `gradient_checkpointing`): every EncoderLayer runs again in the
    backward pass, with the dropout masks of the forward pass (dropout 0.1 here), so the loss and every gradient are
    those of the plain run."""
    ids, mask = padded_batch()
    torch.manual_seed(0)
    plain = (EMSForPreTraining(tiny_config) if family == "ems_heads" else char_ngram_encoder()).train()
    assert plain.config.hidden_dropout_prob > 0 and plain.config.attention_probs_dropout_prob > 0
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed.base_model.layers)
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)
        kwargs = {"target_language_ids": torch.tensor([0, 1, 2])} if family == "ems_heads" else {}
        output = model(ids, mask, **kwargs)
        loss = output.pooler_output.pow(2).sum() + (output.xtr_logits.logsumexp(-1).sum() if kwargs else 0)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, parameter), (_, reference) in zip(checkpointed.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_eager_and_sdpa_attention_agree(tiny_config):
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    sdpa = AutoModel.from_config(copy.deepcopy(tiny_config), attn_implementation="sdpa").eval()
    eager = AutoModel.from_config(copy.deepcopy(tiny_config), attn_implementation="eager").eval()
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    eager.load_state_dict(sdpa.state_dict())
    mask = (ids != 0).long()
    torch.testing.assert_close(sdpa(ids, mask).pooler_output, eager(ids, mask).pooler_output, rtol=1e-5, atol=1e-5)


def test_training_heads_shapes_and_the_bare_encoder_inside(tiny_pretraining_model):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    output = tiny_pretraining_model(ids, target_language_ids=torch.tensor([0, 2]))
    assert output.xtr_logits.shape == (2, 60)
    assert output.contrastive_embeddings.shape == (2, 16)
    assert tiny_pretraining_model.base_model is tiny_pretraining_model.ems  # base_model_prefix = "ems"
    torch.testing.assert_close(output.pooler_output, tiny_pretraining_model.ems(ids).pooler_output)
    with pytest.raises(ValueError, match="needs target_language_ids"):
        tiny_pretraining_model(ids)
    contrastive_only = tiny_pretraining_model(ids, return_xtr_logits=False)  # the XTR head is skipped
    assert contrastive_only.xtr_logits is None
    torch.testing.assert_close(contrastive_only.contrastive_embeddings, output.contrastive_embeddings)


def test_heads_hold_a_third_of_the_paper_model():
    """The paper-size model: the XTR output embedding over 60k pieces is large; inference need not carry it."""
    with torch.device("meta"):
        full = EMSForPreTraining(EMSConfig())
    total = sum(p.numel() for p in full.parameters())
    encoder = sum(p.numel() for p in full.ems.parameters())
    assert 0.30 < 1 - encoder / total < 0.40, (encoder, total)


def test_too_long_input_is_an_error_that_says_to_truncate(tiny_model):
    with pytest.raises(ValueError, match="truncation=True"):
        tiny_model(torch.ones(1, 17, dtype=torch.long))


def test_save_load_round_trip_with_auto_classes(tiny_pretraining_model, tmp_path, caplog):
    from transformers import AutoModelForPreTraining

    tiny_pretraining_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    # the whole family is in auto_map, though the head class saved the folder
    assert config["auto_map"] == {"AutoConfig": "configuration_ems.EMSConfig", "AutoModel": "modeling_ems.EMSModel",
                                  "AutoModelForPreTraining": "modeling_ems.EMSForPreTraining",
                                  "AutoModelForSequenceClassification": "modeling_ems.EMSForSequenceClassification"}
    for name in ("modeling_ems.py", "configuration_ems.py", "layers.py"):
        assert (tmp_path / name).is_file(), name
    assert isinstance(AutoConfig.from_pretrained(tmp_path), EMSConfig)
    ids = torch.tensor([[5, 6, 7, 8]])
    with caplog.at_level("WARNING"):
        bare = AutoModel.from_pretrained(tmp_path).eval()
    assert type(bare) is EMSModel
    assert "UNEXPECTED" not in caplog.text and "MISSING" not in caplog.text, caplog.text  # heads skipped quietly
    torch.testing.assert_close(bare(ids).pooler_output, tiny_pretraining_model.ems(ids).pooler_output)
    with caplog.at_level("WARNING"):
        heads = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(heads) is EMSForPreTraining and "MISSING" not in caplog.text, caplog.text
    for key, value in tiny_pretraining_model.state_dict().items():
        torch.testing.assert_close(heads.state_dict()[key], value)


def test_folder_of_the_bare_encoder_before_the_split_loads_both_ways(tiny_model, tmp_path):
    """Folders saved before the heads moved out (`EMSModel` with `xtr_head.*` keys, no `ems.` prefix) still load."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(1)
    old_heads = EMSForPreTraining(tiny_model.config)
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.update({k: v.contiguous() for k, v in old_heads.state_dict().items() if not k.startswith("ems.")})
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ids = torch.tensor([[5, 6, 7, 8]])
    bare = AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(bare(ids).pooler_output, tiny_model(ids).pooler_output)
    heads = EMSForPreTraining.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(heads.ems(ids).pooler_output, tiny_model(ids).pooler_output)
    torch.testing.assert_close(heads.xtr_head.fc.weight, old_heads.xtr_head.fc.weight)


def test_a_folder_of_another_model_type_is_refused_by_name(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="type 'bert', but EMSForPreTraining needs model_type 'ems'"):
        EMSForPreTraining.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        EMSForPreTraining.from_pretrained(tmp_path)


BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_ems", "trainers"):
                raise ImportError(f"{name} is blocked: this process must not use the installed package")
    sys.meta_path.insert(0, Block())
    """
)


def run_without_package(code: str, cwd) -> str:
    """Run `code` in a fresh interpreter, offline, where importing this package fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", BLOCK_PACKAGE + code], capture_output=True, text=True,
                            cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_folder_loads_with_trust_remote_code_without_the_package(tiny_pretraining_model, tmp_path):
    folder = tmp_path / "model"
    tiny_pretraining_model.save_pretrained(folder)  # a training folder: encoder and heads
    ids = [[5, 6, 7, 8]]
    expected = tiny_pretraining_model.ems(torch.tensor(ids)).pooler_output[0].tolist()
    out = run_without_package(
        textwrap.dedent(
            f"""
            import json, torch
            from transformers import AutoModel
            try:
                import modeling_ems
                raise SystemExit("the package must not be importable here")
            except ImportError:
                pass
            model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            assert type(model).__name__ == "EMSModel", type(model).__name__  # the bare encoder
            assert not hasattr(model, "xtr_head")
            print(json.dumps(model(torch.tensor({ids})).pooler_output[0].tolist()))
            """
        ),
        tmp_path,
    )
    torch.testing.assert_close(torch.tensor(json.loads(out.strip().splitlines()[-1])), torch.tensor(expected))
