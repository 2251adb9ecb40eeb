"""Encoder blocks shared by every model of this package: token + position embeddings, self-attention dispatched
through transformers' attention interface, the pre-LayerNorm transformer layer, mean pooling (EMS eq. 1), and the
`PreTrainedModel` base that gives each model family its save / load behaviour.

Model files import this module relatively (`from .layers import ...`), so `save_pretrained` copies it into the
folder and a Hub repository loads with `trust_remote_code=True` where this package is not installed.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import is_tracing


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # EMS eq. 1


class TokenPacking:
    """The real (non-padding) tokens of a padded batch, packed into one `(tokens, ...)` tensor.

    Every position-wise part of a layer (layer norms, the q / k / v / output projections, the feed-forward block,
    dropout) gives a real token the same result whatever the padding beside it, so the layers run those on the packed
    tokens alone and skip the padding's share of the work; only attention, which mixes positions, needs the padded
    `(batch, seq_len, ...)` shape, with zeros at the padding (masked out as keys, discarded as queries). Real
    tokens get the states they would get padded.

    Packing needs the number of real tokens on the host (`nonzero`, a sync): a graph being captured (`torch.compile`,
    `torch.export`, the ONNX exporters, `torch.jit.trace`, CUDA graphs; transformers' `is_tracing`) runs the layers
    on the padded batch instead, with one graph for every batch of a shape and the same results.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.shape = tuple(attention_mask.shape)
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> "TokenPacking | None":
        """A packing of the batch, or None when it has no padding to skip or a graph is being captured."""
        if is_tracing(attention_mask) or bool(attention_mask.all()):
            return None
        return cls(attention_mask)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """`(batch, seq_len, ...)` -> `(tokens, ...)`: the real tokens, in batch-major order."""
        return padded.reshape(-1, *padded.shape[2:]).index_select(0, self.index)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """`(tokens, ...)` -> `(batch, seq_len, ...)`, zeros at the padding."""
        padded = packed.new_zeros(self.shape[0] * self.shape[1], *packed.shape[1:])
        return padded.index_copy(0, self.index, packed).view(*self.shape, *packed.shape[1:])


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class EncoderEmbeddings(nn.Module):
    """Token embeddings plus learned absolute positions."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class EncoderAttention(nn.Module):
    """Multi-head self-attention over the padding mask, dispatched to eager / sdpa / flash like transformers' models.
    Plain `nn.Linear` projections, so peft adapters (LoRA on `q_proj`, `v_proj`, ...) take effect."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                packing: TokenPacking | None = None) -> torch.Tensor:
        """`hidden_states`: `(batch, seq_len, hidden)`, or with `packing` the packed `(tokens, hidden)`, as returned."""
        projections = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        if packing is not None:  # attention mixes positions: padded shape, zeros at the padding
            projections = tuple(packing.unpack(projection) for projection in projections)
        batch, seq_len, _ = projections[0].shape
        shape = (batch, seq_len, -1, self.head_dim)
        query, key, value = (projection.view(shape).transpose(1, 2) for projection in projections)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            scaling=self.scaling,
        )
        attn_output = attn_output.reshape(batch, seq_len, -1)
        return self.out_proj(attn_output if packing is None else packing.pack(attn_output))


class EncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer encoder layer: self-attention and a feed-forward block, each residual.

    A `GradientCheckpointingLayer`: with `activation_checkpointing: true` (alias `gradient_checkpointing`; the model's
    `activation_checkpointing_enable()`) each layer keeps only its input for the backward pass and runs again there,
    dropout masks replayed."""

    def __init__(self, config):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EncoderAttention(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
                packing: TokenPacking | None = None) -> torch.Tensor:
        """Padded `(batch, seq_len, hidden)` states, or with `packing` the packed `(tokens, hidden)` ones."""
        attention = self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask, packing)
        hidden_states = hidden_states + self.dropout(attention)
        feed_forward = self.fc2(self.dropout(self.activation(self.fc1(self.final_layer_norm(hidden_states)))))
        return hidden_states + self.dropout(feed_forward)


class SentenceEncoderPreTrainedModel(PreTrainedModel):
    """Base of every model in this package, bare encoders and head classes alike.

    * A bare encoder (what `AutoModel` loads, built on `SentenceEncoderMixin`) has `produces_sentence_embedding =
      True`: its `pooler_output` is the sentence embedding. Head classes hold it under `base_model_prefix`, as
      `BertForPreTraining` holds `BertModel`.
    * `save_pretrained` writes the `auto_map` of the whole family (the bare encoder and every head class), so a folder
      saved from a head class still loads with `AutoModel` through `trust_remote_code`.
    * `from_pretrained` refuses a folder of another model type, naming it, instead of building a random model.
    """

    main_input_name = "input_ids"
    # transformers' get/set_input_embeddings find `embeddings.word_embeddings` in a bare encoder and recurse into
    # `base_model` in a head class: no class of the package overrides them.
    _input_embed_layer = "word_embeddings"
    _no_split_modules = ["EncoderLayer"]
    supports_gradient_checkpointing = True  # EncoderLayer is a GradientCheckpointingLayer
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # forward() takes **kwargs for callers that pass extra tokenizer outputs, not loss arguments.
    accepts_loss_kwargs = False
    produces_sentence_embedding = False

    @classmethod
    def _family_auto_map(cls) -> dict[str, str]:
        """`auto_map` entries of every registered class of this model family (subclasses of its own base)."""
        root = [base for base in cls.__mro__ if issubclass(base, SentenceEncoderPreTrainedModel)][-2]
        family, pending = {}, [root]
        while pending:
            klass = pending.pop()
            pending += klass.__subclasses__()
            if getattr(klass, "_auto_class", None):
                family[klass._auto_class] = f"{klass.__module__.split('.')[-1]}.{klass.__name__}"
        return family

    def save_pretrained(self, save_directory, *args, **kwargs):
        family = self._family_auto_map()
        if family:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **family}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        config_file = Path(str(pretrained_model_name_or_path)) / "config.json"
        if kwargs.get("config") is None and config_file.is_file():
            try:
                found = json.loads(config_file.read_text()).get("model_type")
            except json.JSONDecodeError as error:
                raise ValueError(f"{config_file} is not valid JSON ({error}); the checkpoint is corrupt.") from None
            expected = cls.config_class.model_type
            if found != expected:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a model of type {found!r}, but {cls.__name__} needs "
                    f"model_type {expected!r}. Load it with the class of its own type (AutoModel picks it)."
                )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def encode_embeddings(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor
    ) -> BaseModelOutputWithPooling:
        """Run `self.layers` and `self.layer_norm` over embedded tokens and mean-pool the result (eq. 1).

        The layers run on the real tokens alone (`TokenPacking`): the padding costs no projection or feed-forward
        work. `last_hidden_state` is zero at the padding, packed or not (under graph capture)."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        packing = TokenPacking.of(attention_mask)
        if packing is not None:
            hidden_states = packing.pack(hidden_states)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, packing)
        hidden_states = self.layer_norm(hidden_states)
        if packing is not None:
            hidden_states = packing.unpack(hidden_states)
        else:
            hidden_states = hidden_states * attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states,
                                          pooler_output=mean_pool(hidden_states, attention_mask))


class SentenceEncoderMixin:
    """The bare encoder of a model family: `embeddings` (`build_embeddings`, token + position embeddings by default),
    the pre-LayerNorm `layers`, a final `layer_norm`; `forward(input_ids, attention_mask)` returns the token states
    and the mean-pooled sentence embedding (`pooler_output`, EMS eq. 1).

    A family plugs in with `class XModel(SentenceEncoderMixin, XPreTrainedModel)`; it overrides `build_embeddings`
    where its input differs (e.g. word + character n-gram embeddings).
    """

    produces_sentence_embedding = True

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = self.build_embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def build_embeddings(self, config) -> EncoderEmbeddings:
        return EncoderEmbeddings(config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens but this model has {self.config.max_position_embeddings} "
                "positions; tokenize with truncation=True "
                "(the tokenizer's model_max_length truncates as the paper does)."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encode_embeddings(self.embeddings(input_ids), attention_mask)


class SentenceClassificationMixin:
    """Sequence-classification head for any bare encoder of this package: its sentence embedding (`pooler_output`)
    -> dropout -> linear, trained with the transformers loss of `config.problem_type` (cross-entropy for integer
    labels), as `BertForSequenceClassification` does on BERT's pooled output.

    A family plugs in with `class XForSequenceClassification(SentenceClassificationMixin, XPreTrainedModel)` and
    `encoder_class = XModel`: the encoder sits under the family's `base_model_prefix`, so a folder of the bare
    encoder or of another head class of the family loads into it with only `classifier` newly initialised.
    Dropout is `config.classifier_dropout` when the config sets it, else `config.hidden_dropout_prob`.
    """

    encoder_class: type[PreTrainedModel]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self.encoder_class(config))
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        encoded = getattr(self, self.base_model_prefix)(input_ids, attention_mask)
        logits = self.classifier(self.dropout(encoded.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits)


__all__ = [
    "EncoderAttention",
    "EncoderEmbeddings",
    "EncoderLayer",
    "SentenceClassificationMixin",
    "SentenceEncoderMixin",
    "SentenceEncoderPreTrainedModel",
    "TokenPacking",
    "eager_attention_forward",
    "mean_pool",
]
