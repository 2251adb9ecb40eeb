"""The student of EMA alignment: the `student` section (a model folder, a Hub id or `minilm`, or a new EMS model; its
pooling; peft LoRA adapters or full fine-tuning) and how a resolved student embeds a sentence."""

from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig

from ...encoding import POOLING_MODES
from ...loading import MINILM, read_sentence_transformer, resolve_model_setting

NEW_EMS = "ems"  # student.model: a new EMS model with a vocabulary trained on the run's pairs


@dataclass
class StudentSettings:
    """The `student` section."""

    model: str  # a model folder, a Hub id (owner/name), `minilm` (all-MiniLM-L6-v2), or `ems`: a new EMS model
    pooling: str | None = None  # None: a sentence-transformers folder's own, else the model's own (mean)
    lora: dict | None = None  # peft LoraConfig fields (r, lora_alpha, target_modules, ...); null: full fine-tuning
    max_length: int | None = None  # tokens per training text; None: the folder's max_seq_length / tokenizer limit
    config: dict | None = None  # `model: ems` only: EMSConfig fields of the new model (hidden_size, ...)
    vocab_size: int = 8000  # `model: ems` only: SentencePiece pieces of the vocabulary trained on the pairs

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"student.model={self.model!r}: name a model folder, a Hub id, `{MINILM}` or `{NEW_EMS}` "
                             "(a new EMS model on a SentencePiece vocabulary trained on the pairs).")
        if self.config is not None and not self.fresh:
            raise ValueError(f"student.config is set, but student.model={self.model!r} is a trained model whose "
                             f"config is its own; student.config builds a new model (student.model: {NEW_EMS}).")
        if self.fresh and not isinstance(self.config or {}, dict):
            raise ValueError(f"student.config={self.config!r}: give a mapping of EMSConfig fields (hidden_size, "
                             "num_hidden_layers, ...).")
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise ValueError(f"student.pooling={self.pooling!r}: use one of {POOLING_MODES}, or null for the "
                             "student's own.")
        if self.lora is not None:
            if not isinstance(self.lora, dict):
                raise ValueError(f"student.lora={self.lora!r}: give a mapping of peft LoraConfig fields (r, "
                                 "lora_alpha, target_modules, ...), or null for full fine-tuning.")
            self.lora_config()  # unknown fields fail here, before anything loads
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"student.max_length={self.max_length}: keep at least one token per text.")

    @property
    def fresh(self) -> bool:
        """Whether the student is a new EMS model (`model: ems`) rather than a trained one."""
        return self.model.strip().lower() == NEW_EMS

    def lora_config(self) -> LoraConfig | None:
        if self.lora is None:
            return None
        try:
            return LoraConfig(**self.lora)
        except (TypeError, ValueError) as error:
            raise ValueError(f"student.lora: {error}") from None


@dataclass
class Student:
    """A resolved student: where its transformer and tokenizer are, and how it embeds a sentence."""

    folder: Path | None  # the resolved folder; None for a new model
    transformer: Path | None  # the folder of its transformer weights and tokenizer; None for a new model
    source: str  # what to name it by: the Hub id when known, else the folder
    hub_id: str | None
    modules: list[dict] | None  # its sentence-transformers modules; None for a plain transformers folder
    pooling: str | None  # None: the model's own sentence embedding (this package's models) or mean
    max_seq_length: int | None  # the folder's sentence-transformers truncation


def inspect_student(settings: StudentSettings, config_source: str = "the config") -> Student:
    """Resolve the student and read how it embeds: a sentence-transformers folder must be Transformer -> Pooling
    (mean or cls) [-> Normalize], what the alignment loss and the evaluation reproduce. A new EMS model (`ems`) has
    no folder: it embeds by its own mean pooling."""
    if settings.fresh:
        return Student(None, None, f"a new EMS model ({NEW_EMS})", None, None, settings.pooling, None)
    folder, hub_id = resolve_model_setting(settings.model, "student.model", config_source)
    source = hub_id or str(folder)
    layout = read_sentence_transformer(folder)
    if layout is None:
        if not (folder / "config.json").is_file():
            raise ValueError(f"student.model={settings.model!r}: {folder} has no config.json (nor modules.json), so "
                             "it holds no transformers model.")
        return Student(folder, folder, source, hub_id, None, settings.pooling, None)
    kinds = list(layout.kinds)
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"student.model={settings.model!r}: its sentence-transformers modules are {kinds}; the "
                         "recipe aligns the pooled transformer output, so it takes Transformer -> Pooling (mean or "
                         "cls), optionally -> Normalize. Use the transformer folder alone with a student.pooling.")
    if layout.do_lower_case:
        raise ValueError(f"student.model={settings.model!r} lowercases its input in sentence-transformers "
                         "(do_lower_case), which the recipe's tokenization does not reproduce.")
    stated = layout.pooling
    if stated not in POOLING_MODES:
        raise ValueError(f"student.model={settings.model!r} pools by {stated!r}; the recipe trains and evaluates "
                         f"{POOLING_MODES} pooling only.")
    if settings.pooling not in (None, stated):
        raise ValueError(f"student.pooling={settings.pooling!r}, but {folder} is a sentence-transformers folder "
                         f"that pools by {stated!r}: drop student.pooling (or set it to {stated!r}).")
    if not (layout.transformer / "config.json").is_file():
        raise ValueError(f"student.model={settings.model!r}: its transformer folder {layout.transformer} has no "
                         "config.json.")
    return Student(folder, layout.transformer, source, hub_id, layout.modules, stated, layout.max_seq_length)
