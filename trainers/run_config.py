"""Run configuration as data: a YAML file with `model`, `tokenizer`, `data` and `training` sections."""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

SECTIONS = ("model", "tokenizer", "data", "training")
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ems_default.yaml"


@dataclass
class TokenizerSettings:
    vocab_size: int = 8000
    path: str | None = None  # an existing tokenizer folder instead of training one


@dataclass
class DataSettings:
    train: str | None = None  # file, folder or Hub name; None: the embedded default corpus
    heldout: str | None = None
    max_train_pairs: int | None = None


@dataclass
class RunConfig:
    model: dict = field(default_factory=dict)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: dict = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict:
        return {
            "model": dict(self.model),
            "tokenizer": vars(self.tokenizer).copy(),
            "data": vars(self.data).copy(),
            "training": dict(self.training),
        }


def apply_override(raw: dict, override: str) -> None:
    """Apply `section.key=value` (value parsed as YAML) to a raw config dict."""
    key, sep, value = override.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or section not in SECTIONS or not name:
        raise ValueError(f"Override {override!r} is not of the form SECTION.KEY=VALUE with SECTION in {SECTIONS}.")
    raw.setdefault(section, {})[name] = yaml.safe_load(value)


def load_run_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist; see configs/ for examples.")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping with sections {SECTIONS}, got {type(raw).__name__}.")
    for override in overrides:
        apply_override(raw, override)
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected {SECTIONS}.")
    try:
        return RunConfig(
            model=dict(raw.get("model") or {}),
            tokenizer=TokenizerSettings(**(raw.get("tokenizer") or {})),
            data=DataSettings(**(raw.get("data") or {})),
            training=dict(raw.get("training") or {}),
            source=str(path),
        )
    except TypeError as error:
        raise ValueError(f"{path}: {error}") from None
