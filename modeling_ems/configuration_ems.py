"""Configuration of the EMS sentence encoder (Mao, Chu & Kurohashi, "EMS: Efficient and Effective Massively
Multilingual Sentence Representation Learning"). Defaults are the paper's model (sec. 4.3, table 2)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "gelu_new", "tanh")


@strict
class EMSConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: SentencePiece vocabulary plus the `<2xx>` language tokens (paper: 60k pieces).
        hidden_size: `d`, the width of the encoder and of the sentence embedding.
        num_hidden_layers / num_attention_heads / intermediate_size: the transformer encoder (6 / 16 / 4096).
        hidden_act: activation of the encoder's feed-forward layers.
        max_position_embeddings: learned positions; inputs are truncated to this many tokens (paper: 120).
        language_embedding_size: `d_la`, width of the target-language embedding `L_la` (eqs. 2-3).
        languages: language codes, in the order of the language embedding rows; `None` until a tokenizer
            fixes them (then `num_languages` rows are allocated).
        num_languages: rows of the language embedding (paper: 62).
        xtr_activation: `sigma_xtr` of `L_fc` (eqs. 4-5), swish in the paper.
        contrastive_projection_size: `d_cntrs`, output of the two-layer contrastive head (eqs. 10-11).
        contrastive_activation: `sigma_cntrs` of the contrastive head, ReLU in the paper.
        temperature: `T` of the contrastive objective (eq. 8).
    """

    model_type = "ems"

    vocab_size: int = 60000
    hidden_size: int = 1024
    num_hidden_layers: int = 6
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "relu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 120
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    language_embedding_size: int = 128
    languages: list[str] | None = None
    num_languages: int = 62
    xtr_activation: str = "silu"
    contrastive_projection_size: int = 128
    contrastive_activation: str = "relu"
    temperature: float | int = 0.1
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.languages is not None:
            self.languages = list(self.languages)
            self.num_languages = len(self.languages)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: reject settings that cannot build a working EMS model."""
        super().validate_architecture()
        sizes = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "language_embedding_size", "num_languages", "contrastive_projection_size",
        )
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"EMSConfig.{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"EMSConfig.hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads}); pick e.g. num_attention_heads={self._divisor_hint()}."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"EMSConfig.{name} must be in [0, 1), got {value!r}.")
        if not self.temperature > 0:
            raise ValueError(f"EMSConfig.temperature must be > 0, got {self.temperature!r} (the paper uses 0.1).")
        for name in ("hidden_act", "xtr_activation", "contrastive_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                raise ValueError(f"EMSConfig.{name}={getattr(self, name)!r} is not one of {_ACTIVATIONS}.")
        if self.languages is not None:
            duplicated = sorted({code for code in self.languages if self.languages.count(code) > 1})
            if duplicated:
                raise ValueError(f"EMSConfig.languages lists these codes more than once: {duplicated}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"EMSConfig.pad_token_id={self.pad_token_id} is outside the vocabulary (size {self.vocab_size})."
            )

    def _divisor_hint(self) -> int:
        return max(h for h in range(1, min(self.hidden_size, self.num_attention_heads) + 1)
                   if self.hidden_size % h == 0)

    def language_id(self, code: str) -> int:
        """Row of the language embedding for a language code such as `"de"` or `"pt_BR"`."""
        if self.languages is None:
            raise ValueError("This EMSConfig has no `languages` list; set it from the tokenizer's <2xx> tokens.")
        try:
            return self.languages.index(code)
        except ValueError:
            raise ValueError(
                f"Unknown language code {code!r}; this model knows {len(self.languages)} languages: "
                f"{', '.join(self.languages)}."
            ) from None


__all__ = ["EMSConfig"]
