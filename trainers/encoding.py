"""Sentence encoding with any transformers encoder: the package's models (bare or with their training heads) give
their sentence embedding as `pooler_output`; any other encoder is pooled over its token states as stated (mean by
default, the first token's state, or the maximum over real tokens), optionally followed by a head (a
sentence-transformers folder's Dense and Normalize modules, see `trainers.loading`)."""

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_ems import mean_pool

POOLING_MODES = ("mean", "cls", "max")
# Tokenizers without a length limit report a huge model_max_length (transformers' VERY_LARGE_INTEGER).
UNBOUNDED_LENGTH = 1_000_000


def default_device() -> str:
    """Where encoding and search run when no device is named: cuda when present."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def bare_encoder(model):
    """The bare encoder of `model`, for its attributes: unwrapped from DDP / DataParallel (`.module`), then a head
    class's `base_model` (e.g. `EMSForPreTraining.ems`), else the model itself."""
    model = getattr(model, "module", model)
    return getattr(model, "base_model", model)


def _encoder_to_call(model):
    """What to run for token states: a head class's encoder (`base_model_prefix`, as transformers resolves
    `base_model`), else `model` itself, wrapper included, so that DDP's forward (which prepares its gradient
    all-reduce) and peft's run."""
    inner = getattr(model, "module", model)
    prefix = getattr(inner, "base_model_prefix", "")
    if prefix and hasattr(inner, prefix):
        if inner is not model:
            raise ValueError(f"{type(model).__name__} wraps the head class {type(inner).__name__}; a wrapper must hold "
                             "the bare encoder (its gradients would not be synchronised otherwise).")
        return getattr(inner, prefix)
    return model


def sentence_embeddings(model, encoded: dict, pooling: str | None = None) -> torch.Tensor:
    """`(batch, dim)` sentence embeddings of a tokenized batch, with gradients when enabled: the bare encoder's
    `pooler_output` when it declares `produces_sentence_embedding` and `pooling` is None; otherwise the token states
    pooled by `pooling` (see `pool`)."""
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r}: use one of {POOLING_MODES}, or None for the model's own.")
    output = _encoder_to_call(model)(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    return pool(model, output, encoded["attention_mask"], pooling)


def pool(model, output, attention_mask: torch.Tensor, pooling: str | None) -> torch.Tensor:
    """The sentence embedding of an encoder `output`: its `pooler_output` when `model` declares
    `produces_sentence_embedding` and `pooling` is None; else its token states pooled by `pooling`, as
    sentence-transformers' Pooling computes them: the mean over real tokens (default), `"cls"` the first token's
    state, `"max"` each dimension's maximum over real tokens."""
    if pooling is None and getattr(bare_encoder(model), "produces_sentence_embedding", False):
        return output.pooler_output
    states = output.last_hidden_state
    if pooling == "cls":
        return states[:, 0]
    if pooling == "max":
        return states.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(states.dtype).min).max(dim=1).values
    return mean_pool(states, attention_mask)


def check_texts(texts: list[str]) -> None:
    """Refuse an empty or missing text, naming its position: nothing can embed it."""
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {index} is {text!r}: cannot embed an empty or missing text.")


def model_token_limit(tokenizer, config=None) -> int | None:
    """The most tokens a model reads per text: the smaller of its tokenizer's `model_max_length` (512 for XLM-R,
    whose config has 514 positions of which 2 are offsets; none when unbounded) and its `config`'s
    `max_position_embeddings`, as sentence-transformers bounds `max_seq_length`; None when neither says."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(config, "max_position_embeddings", None)]
    return min((int(limit) for limit in limits if limit is not None and limit < UNBOUNDED_LENGTH), default=None)


def truncation_length(model, tokenizer, max_length: int | None = None) -> int | None:
    """Tokens kept per text: `max_length` when given, else the model's limit (`model_token_limit`)."""
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length}: keep at least one token per text.")
        return max_length
    return model_token_limit(tokenizer, bare_encoder(model).config)


@torch.inference_mode()
def encode(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 64,
    max_length: int | None = None,
    pooling: str | None = None,
    show_progress: bool = False,
    head: torch.nn.Module | None = None,
) -> np.ndarray:
    """Embed `texts` as a `(len(texts), dim)` float32 array, in input order (see `sentence_embeddings`), each
    sentence embedding passed through `head` when one is given (on the model's device). Texts are truncated at
    `truncation_length` and batched by `embed_in_batches`. The model runs on its own device and dtype (load it in
    bf16 for bf16 encoding)."""
    was_training = model.training
    model.eval()
    parameter = next(model.parameters())
    device = parameter.device
    if not texts:  # no batch to run: the embedding size from the model (and head)
        width = torch.zeros(1, bare_encoder(model).config.hidden_size, device=device, dtype=parameter.dtype)
        return np.empty((0, width.shape[-1] if head is None else head(width).shape[-1]), dtype=np.float32)

    def run(encoded) -> np.ndarray:
        embeddings = sentence_embeddings(model, encoded.to(device), pooling)
        return (embeddings if head is None else head(embeddings)).float().cpu().numpy()

    try:
        return embed_in_batches(tokenizer, texts, run, batch_size, truncation_length(model, tokenizer, max_length),
                                show_progress)
    finally:
        model.train(was_training)


def embed_in_batches(tokenizer, texts: list[str], run, batch_size: int = 64, max_length: int | None = None,
                     show_progress: bool = False) -> np.ndarray:
    """`run` (a padded batch of tokenized texts as torch tensors -> its `(batch, dim)` float32 array) over `texts`,
    as one array in input order. Texts are tokenized once, truncated at `max_length` (None: not truncated), and
    batched longest first by token count, so that a batch pads little."""
    check_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: encode at least one text per batch.")
    ids = tokenizer(list(texts), truncation=max_length is not None, max_length=max_length,
                    add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    chunks = []
    for start in tqdm(range(0, len(order), batch_size), desc="encoding", disable=not show_progress):
        batch = [{"input_ids": ids[i]} for i in order[start : start + batch_size]]
        chunks.append(np.asarray(run(tokenizer.pad(batch, padding=True, return_tensors="pt")), dtype=np.float32))
    result = np.empty_like(np.concatenate(chunks))
    result[np.array(order)] = np.concatenate(chunks)
    return result
