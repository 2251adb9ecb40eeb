"""Sentence encoding with any transformers encoder: the package's models (bare or with their training heads) give
their sentence embedding as `pooler_output`; any other encoder is mean-pooled over its token states."""

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_ems import mean_pool


@torch.inference_mode()
def encode(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 64,
    max_length: int | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed `texts` as a `(len(texts), dim)` float32 array, in input order.

    Texts are encoded longest first so that batches carry little padding. A head class (e.g. `EMSForPreTraining`)
    is encoded through its bare encoder (`model.base_model`). The embedding is that encoder's `pooler_output` when it
    declares `produces_sentence_embedding` (the package's models), otherwise the mean of the token states over real
    tokens.
    """
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {index} is {text!r}: cannot embed an empty or missing text.")
    was_training = model.training
    model.eval()
    encoder = getattr(model, "base_model", model)
    pooled = getattr(encoder, "produces_sentence_embedding", False)
    device = next(model.parameters()).device
    max_length = max_length or getattr(model.config, "max_position_embeddings", None)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    for start in tqdm(range(0, len(order), batch_size), desc="encoding", disable=not show_progress):
        batch = [texts[i] for i in order[start : start + batch_size]]
        encoded = tokenizer(
            batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
            return_token_type_ids=False,
        ).to(device)
        output = encoder(**encoded)
        embeddings = output.pooler_output if pooled else mean_pool(output.last_hidden_state, encoded["attention_mask"])
        chunks.append(embeddings.float().cpu())
    model.train(was_training)
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, model.config.hidden_size)
    result = torch.empty_like(embeddings)
    result[torch.tensor(order, dtype=torch.long)] = embeddings
    return result.numpy()
