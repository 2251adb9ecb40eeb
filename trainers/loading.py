"""Load a saved encoder folder with clear errors for missing, corrupt or foreign checkpoints."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer

import modeling_ems  # noqa: F401  (registers the EMS Auto classes)

from .encoding import encode


def load_encoder(folder: str | Path, device: str = "cpu"):
    """Return `(model, tokenizer)` for a saved encoder folder: an EMS model or any `AutoModel` encoder."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder; pass the output_dir of a training run.")
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json, so it is not a saved transformers model.")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}); the checkpoint is corrupt.") from None
    if not model_type:
        raise ValueError(f"{config_file} names no model_type; it is not a transformers model config.")
    try:
        model = AutoModel.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        raise ValueError(f"Cannot load an encoder from {folder} (model_type {model_type!r}): {error}") from error
    if not hasattr(model.config, "hidden_size"):
        raise ValueError(f"{folder} holds a {model_type!r} model without hidden states; it is not a text encoder.")
    return model.to(device).eval(), tokenizer


def load_embedder(folder: str | Path, backend: str = "auto", batch_size: int = 128
                  ) -> tuple[Callable[[list[str]], np.ndarray], list[str] | None]:
    """An embedding function for a saved folder and the languages it was trained on (None when unknown).

    `backend="transformers"` (the default for folders with a config.json) mean-pools through `encode`;
    `"sentence-transformers"` uses `SentenceTransformer(folder).encode`, for sentence-transformers folders."""
    folder = Path(folder)
    if backend == "auto":
        backend = "sentence-transformers" if (folder / "modules.json").is_file() and not (
            folder / "config.json").is_file() else "transformers"
    if backend == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        if not (folder / "modules.json").is_file():
            raise ValueError(f"{folder} has no modules.json: it is not a sentence-transformers folder.")
        model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
        return (lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True)), None
    if backend != "transformers":
        raise ValueError(f"backend={backend!r}: use 'auto', 'transformers' or 'sentence-transformers'.")
    model, tokenizer = load_encoder(folder)
    embed = lambda texts: encode(model, tokenizer, texts, batch_size=batch_size)  # noqa: E731
    return embed, getattr(model.config, "languages", None)
