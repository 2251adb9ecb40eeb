"""ONNX export of a sentence encoder: this package's models (EMS, DualEncoderMultiTask), sentence-transformers folders
that the package embeds itself (Transformer, Pooling, Dense, Normalize) and plain transformers encoders (with a stated
pooling). The graph takes `input_ids` and `attention_mask` of any batch size and length and returns the token states
(`last_hidden_state`, what sentence-transformers' ONNX backend pools) and the sentence embedding
(`sentence_embedding`: what `load_embedder` gives for the folder). The folder keeps the sentence-transformers layout
(`onnx/model.onnx` beside the tokenizer, config and modules) and loads with `load_embedder(OUT, backend="onnx")`,
onnxruntime directly, and `SentenceTransformer(OUT, backend="onnx")` where Optimum runs (see README)."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from .encoding import POOLING_MODES, bare_encoder, pool, truncation_length
from .hub import WEIGHT_SUFFIXES, write_sentence_transformers_config
from .loading import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    PlainSentenceTransformer,
    load_encoder,
    onnx_embedder,
    plain_sentence_transformer,
    read_json,
    resolve_model,
)

FORMATS = ("onnx",)
DEFAULT_OPSET = 17  # torch.onnx's TorchScript exporter: 7 to 20; attention (scaled_dot_product_attention) needs 14
INPUTS, OUTPUTS = ["input_ids", "attention_mask"], ["last_hidden_state", "sentence_embedding"]
# A batch with padding and texts of unequal length: traced once, checked against PyTorch at another batch size
TRACE_TEXTS = ["a short text", "a somewhat longer text, with a few more words in it than the first"]
CHECK_TEXTS = ["one", "a text of middling length here", "and the longest of the three texts, with padding beside the "
               "others in the batch", "two words"]
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| of a sentence embedding element accepted at export


class SentenceEmbeddingGraph(torch.nn.Module):
    """What the ONNX graph computes: the encoder's token states, and the sentence embedding as `encode` computes it
    (the model's own `pooler_output`, or the stated pooling, then the head of a sentence-transformers folder)."""

    def __init__(self, encoder, pooling: str | None, head: torch.nn.Module | None):
        super().__init__()
        self.encoder, self.pooling, self.head = encoder, pooling, head or torch.nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return output.last_hidden_state, self.head(pool(self.encoder, output, attention_mask, self.pooling))


def export_graph(folder: Path, pooling: str | None, trust_remote_code: bool):
    """`(graph, tokenizer, max_length, transformer_folder)` of the encoder in `folder` (see `SentenceEmbeddingGraph`),
    on the CPU in float32."""
    plain = plain_sentence_transformer(folder)
    if isinstance(plain, list):
        raise ValueError(f"{folder} is a sentence-transformers folder with parts this package does not reproduce "
                         f"({'; '.join(plain)}), so its embedding cannot be exported as one graph here.")
    transformer = plain.transformer if plain else folder
    if plain and pooling not in (None, plain.pooling):
        raise ValueError(f"pooling={pooling!r}, but {folder} is a sentence-transformers folder that pools by "
                         f"{plain.pooling!r}; drop --pooling.")
    if read_json(transformer / "config.json").get("is_encoder_decoder"):
        raise ValueError(f"{transformer} holds an encoder-decoder model (is_encoder_decoder in config.json), not a "
                         "sentence encoder; export the encoder of a sentence embedding model.")
    encoder, tokenizer = load_encoder(transformer, device="cpu", dtype="float32", trust_remote_code=trust_remote_code)
    encoder = bare_encoder(encoder)
    if isinstance(plain, PlainSentenceTransformer):
        return (SentenceEmbeddingGraph(encoder, plain.pooling, plain.head.float()).eval(), tokenizer,
                plain.max_seq_length or truncation_length(encoder, tokenizer), transformer)
    stated = pooling if pooling is not None or getattr(encoder, "produces_sentence_embedding", False) else "mean"
    graph = SentenceEmbeddingGraph(encoder, stated, None).eval()
    return graph, tokenizer, truncation_length(encoder, tokenizer), folder


def copy_folder_files(folder: Path, transformer: Path, output: Path) -> None:
    """Everything of `folder` (and of its sentence-transformers `transformer` folder) that is not PyTorch weights:
    tokenizer, config, the code files the config names, sentence-transformers files and module folders, the card; into
    `output`, where the ONNX graph replaces the weights and the transformer sits at the root."""
    modules = read_json(folder / "modules.json") or []
    folders = {module.get("path") for module in modules[1:]} - {"", None}
    for source in dict.fromkeys([folder, transformer]):
        for path in source.iterdir():
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and path.name != "training_args.bin":
                shutil.copy2(path, output / path.name)
            elif path.is_dir() and source == folder and path.name in folders:
                shutil.copytree(path, output / path.name)
    if modules and modules[0].get("path"):
        modules[0]["path"] = ""
        (output / "modules.json").write_text(json.dumps(modules, indent=2))


@torch.inference_mode()
def export_onnx(model: str | Path, output_dir: str | Path, opset: int = DEFAULT_OPSET, pooling: str | None = None,
                quantize: bool = False, trust_remote_code: bool = False) -> dict:
    """Export the encoder of `model` (a folder or Hub id) to `output_dir/onnx/model.onnx` with dynamic batch size and
    length (and `onnx/model_qint8.onnx`, onnxruntime's dynamic int8 quantization, with `quantize`), beside what
    loading it needs. The float graph is checked against PyTorch on a padded batch of another size than the traced
    one (largest difference at most `TOLERANCE`); returns what was written and measured. `output_dir` must not hold
    an export already; a folder that is not an encoder and an opset that cannot express an operator are refused."""
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r}: use one of {POOLING_MODES} (or leave it unset: the model's own).")
    if not 7 <= opset <= 20:
        raise ValueError(f"opset={opset}: torch.onnx exports opsets 7 to 20; use {DEFAULT_OPSET} (the default).")
    folder, output = resolve_model(model), Path(output_dir)
    if (output / ONNX_FILE).exists() or (output.is_dir() and any(output.iterdir())):
        raise ValueError(f"{output} is not empty; export into a new folder (nothing is overwritten).")
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise ValueError(f"{folder} holds no model (no config.json or modules.json), so there is no encoder to export.")
    graph, tokenizer, max_length, transformer = export_graph(folder, pooling, trust_remote_code)
    traced = tokenizer(TRACE_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    (output / "onnx").mkdir(parents=True, exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    try:
        torch.onnx.export(graph, (traced["input_ids"], traced["attention_mask"]), str(output / ONNX_FILE),
                          input_names=INPUTS, output_names=OUTPUTS, dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    except Exception as error:  # torch.onnx's errors for an operator the opset lacks, or a model it cannot trace
        shutil.rmtree(output / "onnx")
        first_line = (str(error).strip().splitlines() or [""])[0]
        hint = (f" opset {opset} cannot express an operator of this model; use a later opset (--opset "
                f"{DEFAULT_OPSET}, the default)." if "opset" in str(error).lower() else "")
        raise ValueError(f"Exporting {folder} to ONNX failed ({type(error).__name__}: {first_line}).{hint}") from None
    copy_folder_files(folder, transformer, output)
    if not (folder / "modules.json").is_file():
        write_sentence_transformers_config(output, graph.encoder.config.hidden_size, max_length,
                                           pooling=graph.pooling if graph.pooling in POOLING_MODES else "mean")
    report = {"onnx": ONNX_FILE, "opset": opset, "pooling": graph.pooling,
              "max_abs_difference": check_against_pytorch(graph, tokenizer, max_length, output, ONNX_FILE)}
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(output / ONNX_FILE, output / ONNX_INT8_FILE, weight_type=QuantType.QInt8)
        report["onnx_int8"] = ONNX_INT8_FILE
    (output / "onnx" / "export.json").write_text(json.dumps({"source": str(model), **report}, indent=2))
    return report


def check_against_pytorch(graph: SentenceEmbeddingGraph, tokenizer, max_length: int | None, output: Path,
                          file: str) -> float:
    """The largest |ONNX - PyTorch| over the sentence embeddings of `CHECK_TEXTS` (a padded batch of another size and
    length than the traced one); above `TOLERANCE` the export is refused."""
    encoded = tokenizer(CHECK_TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    expected = graph(encoded["input_ids"], encoded["attention_mask"])[1].numpy()
    embed = onnx_embedder(output, file, batch_size=len(CHECK_TEXTS))
    difference = float(np.abs(embed(CHECK_TEXTS) - expected).max())
    if not difference <= TOLERANCE:
        raise ValueError(f"The ONNX graph in {output / file} gives sentence embeddings up to {difference:.2e} away "
                         f"from PyTorch's (more than {TOLERANCE}): the model does not trace to a general graph.")
    return difference
