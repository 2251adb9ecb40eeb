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
_UNBOUNDED = 1_000_000


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
    pooled by `pooling` (mean over real tokens by default, `"cls"`: the first token's state, `"max"`: each
    dimension's maximum over real tokens, as sentence-transformers' Pooling computes them)."""
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r}: use one of {POOLING_MODES}, or None for the model's own.")
    output = _encoder_to_call(model)(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    if pooling is None and getattr(bare_encoder(model), "produces_sentence_embedding", False):
        return output.pooler_output
    if pooling == "cls":
        return output.last_hidden_state[:, 0]
    if pooling == "max":
        states, padding = output.last_hidden_state, encoded["attention_mask"].unsqueeze(-1) == 0
        return states.masked_fill(padding, torch.finfo(states.dtype).min).max(dim=1).values
    return mean_pool(output.last_hidden_state, encoded["attention_mask"])


def check_texts(texts: list[str]) -> None:
    """Refuse an empty or missing text, naming its position: nothing can embed it."""
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {index} is {text!r}: cannot embed an empty or missing text.")


def truncation_length(model, tokenizer, max_length: int | None = None) -> int | None:
    """Tokens kept per text: `max_length` when given, else the tokenizer's `model_max_length` (512 for XLM-R, whose
    config has 514 positions of which 2 are offsets), else the model's `max_position_embeddings`."""
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length}: keep at least one token per text.")
        return max_length
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _UNBOUNDED:
        return int(limit)
    return getattr(bare_encoder(model).config, "max_position_embeddings", None)


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
    sentence embedding passed through `head` when one is given (on the model's device).

    Texts are tokenized once, truncated at `truncation_length`, and batched longest first by token count, so that a
    batch pads little. The model runs on its own device and dtype (load it in bf16 for bf16 encoding).
    """
    check_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: encode at least one text per batch.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    limit = truncation_length(model, tokenizer, max_length)
    ids = tokenizer(list(texts), truncation=limit is not None, max_length=limit, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    chunks = []
    for start in tqdm(range(0, len(order), batch_size), desc="encoding", disable=not show_progress):
        batch = [{"input_ids": ids[i]} for i in order[start : start + batch_size]]
        encoded = tokenizer.pad(batch, padding=True, return_tensors="pt").to(device)
        embeddings = sentence_embeddings(model, encoded, pooling)
        chunks.append((embeddings if head is None else head(embeddings)).float().cpu())
    model.train(was_training)
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, bare_encoder(model).config.hidden_size)
    result = torch.empty_like(embeddings)
    result[torch.tensor(order, dtype=torch.long)] = embeddings
    return result.numpy()
