"""Load a saved encoder folder with clear errors for missing, corrupt or foreign checkpoints."""

import json
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

import modeling_ems  # noqa: F401  (registers the EMS Auto classes)


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
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"Cannot load an encoder from {folder} (model_type {model_type!r}): {error}") from error
    if not hasattr(model.config, "hidden_size"):
        raise ValueError(f"{folder} holds a {model_type!r} model without hidden states; it is not a text encoder.")
    return model.to(device).eval(), tokenizer
