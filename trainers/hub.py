"""Hub-ready output folders: sentence-transformers configuration and publishing through `huggingface_hub`."""

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoModel

from .encoding import POOLING_MODES

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")
# Training state stays local (the run's config too, with its local paths: the card shows it without them);
# everything else in the folder is the model repository, less what the recipe that wrote it keeps beside the model
# (its `publish_ignore`, passed as `ignore`).
PUBLISH_IGNORE = ["checkpoint-*/**", "checkpoint-*", "training_args.bin", "training_config.yaml", ".git/**",
                  ".cache/**"]


def ignore_patterns(ignore: Sequence[str] = ()) -> list[str]:
    """`PUBLISH_IGNORE` and a recipe's own intermediate files (`stage1` -> `stage1`, `stage1/**`)."""
    return PUBLISH_IGNORE + [pattern for name in ignore for pattern in (name, f"{name}/**")]


# Module paths and file formats that sentence-transformers 5.0 to 6.x all read: 5.x imports
# `sentence_transformers.models` itself, 6.x maps those paths onto its own modules (the format of the most downloaded
# folders, all-MiniLM-L6-v2 among them). What sentence-transformers 6 saves itself
# (`...base.modules.transformer.Transformer`, `embedding_dimension`, a `transformer_task`) does not load in 5.0.
ST_MODULE_TYPES = {"Transformer": "sentence_transformers.models.Transformer",
                   "Pooling": "sentence_transformers.models.Pooling",
                   "Normalize": "sentence_transformers.models.Normalize"}


def record_matryoshka_dims(folder: str | Path, dims: list[int] | None) -> None:
    """Name the Matryoshka dimensions a model was trained with in its `config_sentence_transformers.json`
    (`matryoshka_dims`, a key sentence-transformers reads past; `truncate_dim` stays unset, so the full embedding
    is the default). Nothing without dims."""
    if not dims:
        return
    path = Path(folder) / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.is_file() else {"model_type": "SentenceTransformer"}
    path.write_text(json.dumps({**config, "matryoshka_dims": list(dims)}, indent=2))


def write_sentence_transformers_config(folder: str | Path, embedding_dimension: int, max_seq_length: int,
                                       pooling: str = "mean") -> None:
    """Write `modules.json` and the module configs so that `SentenceTransformer(folder, trust_remote_code=True)` of
    sentence-transformers 5 and 6 loads the folder as Transformer -> `pooling`: `"mean"` over real tokens (the same
    embedding as this package's `pooler_output`), `"cls"` (the first token's state) or `"max"` (see
    `ST_MODULE_TYPES`)."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r}: write a sentence-transformers config with one of {POOLING_MODES} "
                         "pooling.")
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_TYPES["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_MODULE_TYPES["Pooling"]}]
    transformer = {"max_seq_length": max_seq_length, "do_lower_case": False}
    pooling_config = {"word_embedding_dimension": embedding_dimension, "pooling_mode": pooling, "include_prompt": True}
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(transformer, indent=2))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"model_type": "SentenceTransformer", "similarity_fn_name": "cosine", "prompts": {},
                    "default_prompt_name": None}, indent=2)
    )


def append_normalize(folder: str | Path) -> None:
    """Add sentence-transformers' `Normalize` module (no settings, no folder) after the last module of `folder`'s
    `modules.json`, unless it already ends with one."""
    modules_file = Path(folder) / "modules.json"
    modules = json.loads(modules_file.read_text())
    if modules[-1]["type"].rsplit(".", 1)[-1] == "Normalize":
        return
    index = len(modules)
    modules.append({"idx": index, "name": str(index), "path": f"{index}_Normalize",
                    "type": ST_MODULE_TYPES["Normalize"]})
    modules_file.write_text(json.dumps(modules, indent=2))


def files_to_publish(folder: str | Path, ignore: Sequence[str] = ()) -> list[str]:
    """The files `publish` uploads: the folder minus checkpoints, training state and `ignore`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; publish the output_dir of a finished training run.")
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=ignore_patterns(ignore)))


@contextmanager
def publishable_folder(folder: str | Path, heads: bool = False, ignore: Sequence[str] = ()) -> Iterator[Path]:
    """The folder to upload. With `heads=True`, the folder itself. With `heads=False` (the default), a staged copy
    whose weights and config are those of the bare encoder that `AutoModel` loads (what inference needs), so a folder
    saved from a head class (e.g. `EMSForPreTraining`) is published without its training heads."""
    import modeling_ems  # noqa: F401  (registers the package's Auto classes)

    folder = Path(folder)
    files = files_to_publish(folder, ignore)
    if heads or is_classifier(folder):  # a classifier's head is the model it publishes
        yield folder
        return
    encoder = AutoModel.from_pretrained(folder)
    weights = {"config.json"} | {name for name in files if name.endswith(WEIGHT_SUFFIXES)}
    with tempfile.TemporaryDirectory() as staging:
        for name in files:
            if name not in weights:
                (Path(staging) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, Path(staging) / name)
        encoder.save_pretrained(staging)
        yield Path(staging)


def is_classifier(folder: Path) -> bool:
    """Whether the folder's model is a sequence classifier (its config's `architectures`)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or ())


def upload(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
           commit_message: str = "Upload sentence encoder", api: HfApi | None = None, ignore: Sequence[str] = ()):
    """Create `repo_id` on the Hub if needed and upload `folder` as it is, minus `PUBLISH_IGNORE` and `ignore`."""
    files_to_publish(folder, ignore)  # validates the folder
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=ignore_patterns(ignore),
                                 commit_message=commit_message)
    except Exception as error:  # offline, no token, no right to the repository, a network error
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"Uploading {folder} to {repo_id} failed ({type(error).__name__}: {first_line}). Check the "
                         "connection to the Hub, log in (`hf auth login`, or set HF_TOKEN) with a token that may "
                         "write to that repository, and run again; --dry_run lists the files without uploading."
                         ) from None


def publish(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None, heads: bool = False,
            api: HfApi | None = None, ignore: Sequence[str] = ()):
    """Upload a trained model folder (model, tokenizer, code, card); the training heads only with `heads=True`
    (see `publishable_folder`)."""
    with publishable_folder(folder, heads=heads, ignore=ignore) as source:
        return upload(source, repo_id, private=private, token=token, api=api, ignore=ignore)
