"""ONNX export (`ems-export --format onnx`): the package's EMS and DualEncoderMultiTask encoders and a plain BERT-style
folder give the PyTorch embeddings within 1e-4 through onnxruntime, at batch sizes and lengths other than the traced
ones, with padding; the graph's batch and sequence axes are symbolic; the int8 graph runs; bad input is refused."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

from trainers.export import ONNX_FILE, export_onnx
from trainers.loading import ONNX_INT8_FILE, load_embedder

from .test_dual_encoder import tiny_config as tiny_dual_encoder_config
from .test_loading import SOURCES, TARGETS, WORDS

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install '.[onnx]'")
onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install '.[onnx]'")

TEXTS = SOURCES + TARGETS + ["open the file and close the window then save the sheet and print the page " * 3, "a"]


@pytest.fixture
def ems_folder(saved_model):
    return saved_model[0]


def save_dual_encoder(tmp_path, tokenizer_dir, input_type):
    """A DualEncoderMultiTask with its task heads, saved as training leaves it."""
    from modeling_ems import DualEncoderMultiTaskForPreTraining
    from trainers.hub import write_sentence_transformers_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(tiny_dual_encoder_config(
        vocab_size=len(tokenizer), input_type=input_type, max_position_embeddings=32)).eval()
    if input_type == "char_ngram":
        model.encoder.set_ngram_vocabulary(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    folder = tmp_path / "dual"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_sentence_transformers_config(folder, 16, 32)
    return folder


@pytest.fixture
def dual_encoder_folder(tmp_path, tokenizer_dir):
    return save_dual_encoder(tmp_path, tokenizer_dir, "subword")


@pytest.fixture
def bert_folder(tmp_path):
    """A tiny random BERT with its WordPiece tokenizer: a plain transformers folder (no modules.json)."""
    folder = tmp_path / "bert"
    folder.mkdir()
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
                                *"abcdefghijklmnopqrstuvwxyzäöüß"]))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=70, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab), model_max_length=48).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["ems_folder", "dual_encoder_folder", "bert_folder"])
def test_onnx_export_gives_the_pytorch_embeddings_at_any_batch_size_and_length(request, tmp_path, kind):
    folder = request.getfixturevalue(kind)
    output = tmp_path / "onnx"
    report = export_onnx(folder, output, quantize=True)
    assert report["max_abs_difference"] <= 1e-4

    graph = onnx.load(output / ONNX_FILE)
    for value in list(graph.graph.input) + [graph.graph.output[1]]:  # symbolic: batch (and sequence) axes
        dims = [dim.dim_param for dim in value.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and (value.name == "sentence_embedding" or dims[1] == "sequence"), value
    session = onnxruntime.InferenceSession(str(output / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]

    pytorch, _ = load_embedder(folder, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(output)
    for texts in (TEXTS, [TEXTS[0], TEXTS[-1], TEXTS[1]], TEXTS[-2:]):  # padded, unlike the trace
        encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
        assert (encoded["attention_mask"] == 0).any()
        _, direct = session.run(None, {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
        np.testing.assert_allclose(direct, pytorch(texts), atol=1e-4)

    exported, _ = load_embedder(output, backend="onnx", batch_size=4)  # the package's onnx backend
    np.testing.assert_allclose(exported(TEXTS), pytorch(TEXTS), atol=1e-4)
    quantized, _ = load_embedder(output, backend="onnx", onnx_file=ONNX_INT8_FILE)
    assert quantized(TEXTS).shape == pytorch(TEXTS).shape
    assert json.loads((output / "onnx" / "export.json").read_text())["onnx_int8"] == ONNX_INT8_FILE


def test_a_sentence_transformers_folder_exports_its_dense_and_normalize(tmp_path, bert_folder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    transformer = st_models.Transformer(str(bert_folder))
    torch.manual_seed(3)
    reference = SentenceTransformer(modules=[transformer, st_models.Pooling(32, pooling_mode="max"),
                                             st_models.Dense(32, 8), st_models.Normalize()], device="cpu")
    reference.save(str(tmp_path / "st"))
    export_onnx(tmp_path / "st", tmp_path / "onnx")
    exported, _ = load_embedder(tmp_path / "onnx", backend="onnx")
    np.testing.assert_allclose(exported(TEXTS), reference.encode(TEXTS), atol=1e-4)
    assert json.loads((tmp_path / "onnx" / "modules.json").read_text())[2]["path"] == "2_Dense"  # ST's own layout


def test_sentence_transformers_onnx_backend_loads_the_export(tmp_path, ems_folder):
    pytest.importorskip("optimum.onnxruntime", reason="sentence-transformers' ONNX backend runs through Optimum, "
                        "whose optimum-onnx 0.1.0 needs transformers < 4.58")
    from sentence_transformers import SentenceTransformer

    export_onnx(ems_folder, tmp_path / "onnx")
    pytorch, _ = load_embedder(ems_folder, device="cpu")
    model = SentenceTransformer(str(tmp_path / "onnx"), backend="onnx", trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS), pytorch(TEXTS), atol=1e-4)


def test_the_export_command_writes_the_folder(tmp_path, ems_folder, capsys):
    from trainers.cli import export

    export(["--format", "onnx", str(ems_folder), str(tmp_path / "out")])
    assert (tmp_path / "out" / ONNX_FILE).is_file() and "ONNX export ->" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not empty"):  # nothing is overwritten
        export(["--format", "onnx", str(ems_folder), str(tmp_path / "out")])


def test_char_ngram_input_is_refused_by_the_exporter_with_the_operator(tmp_path, tokenizer_dir):
    """The paper's char n-gram input sums n-gram embeddings with `nn.EmbeddingBag(padding_idx=...)`, which torch.onnx's
    TorchScript exporter cannot express: a clear error, and nothing half-written."""
    folder = save_dual_encoder(tmp_path, tokenizer_dir, "char_ngram")
    with pytest.raises(ValueError, match="embedding_bag with padding_idx"):
        export_onnx(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "onnx").exists()


def test_bad_exports_are_refused_with_the_reason(tmp_path, bert_folder):
    from transformers import T5Config, T5Model

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="holds no model"):
        export_onnx(tmp_path / "notes", tmp_path / "a")
    T5Model(T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "t5")
    with pytest.raises(ValueError, match="encoder-decoder"):
        export_onnx(tmp_path / "t5", tmp_path / "b")
    with pytest.raises(ValueError, match=r"opset 12 cannot express.*scaled_dot_product_attention|"
                                         r"scaled_dot_product_attention.*opset 12 cannot express"):
        export_onnx(bert_folder, tmp_path / "c", opset=12)
    assert not (tmp_path / "c" / "onnx").exists()  # nothing half-written
    with pytest.raises(ValueError, match="opset=30"):
        export_onnx(bert_folder, tmp_path / "d", opset=30)
    with pytest.raises(FileNotFoundError, match="export the model first"):
        load_embedder(bert_folder, backend="onnx")
