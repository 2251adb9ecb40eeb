"""Hub-ready output folders: sentence-transformers configuration and publishing through `huggingface_hub`."""

import json
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects

# Training state stays local; everything else in the folder is the model repository.
PUBLISH_IGNORE = ["checkpoint-*/**", "checkpoint-*", "training_args.bin", ".git/**", ".cache/**"]


def write_sentence_transformers_config(folder: str | Path, embedding_dimension: int, max_seq_length: int) -> None:
    """Write `modules.json` and the pooling config so that `SentenceTransformer(folder, trust_remote_code=True)`
    loads the folder as Transformer -> mean pooling over real tokens, the same embedding as `pooler_output`."""
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
    ]
    transformer = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        "module_output_name": "token_embeddings",
        "max_seq_length": max_seq_length,
    }
    pooling = {"embedding_dimension": embedding_dimension, "pooling_mode": "mean", "include_prompt": True}
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(transformer, indent=2))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"model_type": "SentenceTransformer", "similarity_fn_name": "cosine",
                    "prompts": {"query": "", "document": ""}, "default_prompt_name": None}, indent=2)
    )


def files_to_publish(folder: str | Path) -> list[str]:
    """The files `publish` uploads: the folder minus checkpoints and training state."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; publish the output_dir of a finished training run.")
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=PUBLISH_IGNORE))


def publish(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
            commit_message: str = "Upload EMS sentence encoder", api: HfApi | None = None):
    """Create `repo_id` on the Hub if needed and upload the model folder (model, tokenizer, code, card)."""
    files_to_publish(folder)  # validates the folder
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=PUBLISH_IGNORE,
                             commit_message=commit_message)
