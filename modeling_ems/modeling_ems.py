"""EMS sentence encoder (Mao, Chu & Kurohashi, "EMS: Efficient and Effective Massively Multilingual Sentence
Representation Learning").

A transformer encoder whose mean-pooled token states (eq. 1) are the language-agnostic sentence embedding. Two
training heads live in the model so that they are saved, loaded and wrapped by DDP with it, and run only when the
caller asks for them by passing `target_language_ids`:

* `xtr_head`: cross-lingual token-level reconstruction (XTR, eqs. 2-5): language embedding, `L_fc` with swish and an
  output embedding `L_emb` that is not shared with the input embedding;
* `contrastive_head`: the two-layer projection of the sentence-level contrastive objective (eqs. 10-11).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_ems import EMSConfig


@dataclass
class EMSModelOutput(BaseModelOutputWithPooling):
    """`BaseModelOutputWithPooling` plus the training heads' outputs (set only when `target_language_ids` is given).

    Args:
        last_hidden_state: token states, `(batch, seq_len, hidden_size)`.
        pooler_output: mean-pooled sentence embedding `u` (eq. 1), `(batch, hidden_size)`.
        xtr_logits: unnormalised log-probabilities of `q_S` over the vocabulary (eqs. 4-5), `(batch, vocab_size)`.
        contrastive_embeddings: `h(S)` of eqs. 10-11, `(batch, contrastive_projection_size)`.
    """

    xtr_logits: torch.FloatTensor | None = None
    contrastive_embeddings: torch.FloatTensor | None = None


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # eq. 1


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


class EMSEmbeddings(nn.Module):
    """Token embeddings plus learned absolute positions."""

    def __init__(self, config: EMSConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class EMSAttention(nn.Module):
    """Multi-head self-attention over the padding mask, dispatched to eager / sdpa / flash like transformers' models."""

    def __init__(self, config: EMSConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq_len, _ = hidden_states.shape
        shape = (batch, seq_len, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
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
        return self.out_proj(attn_output.reshape(batch, seq_len, -1))


class EMSLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer: self-attention and a feed-forward block, each residual."""

    def __init__(self, config: EMSConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EMSAttention(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask))
        feed_forward = self.fc2(self.dropout(self.activation(self.fc1(self.final_layer_norm(hidden_states)))))
        return hidden_states + self.dropout(feed_forward)


class EMSXTRHead(nn.Module):
    """XTR head: predicts the bag of tokens of the translation from `u` and the target language (eqs. 2-5).

    `W_la h_l'` with a one-hot `h_l'` over the vocabulary (eqs. 2-3) selects one column of `W_la`, and only the
    `<2xx>` columns are ever selected, so the language embedding stores exactly those rows (`config.languages`).
    """

    def __init__(self, config: EMSConfig):
        super().__init__()
        width = config.language_embedding_size + config.hidden_size
        self.language_embedding = nn.Embedding(config.num_languages, config.language_embedding_size)  # L_la
        self.fc = nn.Linear(width, width)  # L_fc
        self.activation = ACT2FN[config.xtr_activation]  # sigma_xtr: swish
        self.output_embedding = nn.Linear(width, config.vocab_size)  # L_emb, not tied to the input embedding

    def forward(self, sentence_embedding: torch.Tensor, target_language_ids: torch.Tensor) -> torch.Tensor:
        language = self.language_embedding(target_language_ids)  # eqs. 2-3
        features = torch.cat([language, sentence_embedding], dim=-1)
        return self.output_embedding(self.activation(self.fc(features)))  # eqs. 4-5, before the softmax


class EMSContrastiveHead(nn.Module):
    """Two-layer projection `h(S) = W_1 relu(W_2 u)` of the contrastive objective (eqs. 10-11)."""

    def __init__(self, config: EMSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # W_2
        self.activation = ACT2FN[config.contrastive_activation]  # sigma_cntrs: ReLU
        self.projection = nn.Linear(config.hidden_size, config.contrastive_projection_size)  # W_1

    def forward(self, sentence_embedding: torch.Tensor) -> torch.Tensor:
        return self.projection(self.activation(self.dense(sentence_embedding)))  # eqs. 10-11


class EMSPreTrainedModel(PreTrainedModel):
    config: EMSConfig
    config_class = EMSConfig
    base_model_prefix = "ems"
    main_input_name = "input_ids"
    _no_split_modules = ["EMSLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    # forward() takes **kwargs for callers that pass extra tokenizer outputs, not loss arguments.
    accepts_loss_kwargs = False


class EMSModel(EMSPreTrainedModel):
    """The EMS encoder with its XTR and contrastive training heads.

    `forward(input_ids, attention_mask)` returns token states and the mean-pooled sentence embedding; pass
    `target_language_ids` (one row of `config.languages` per sentence: the language of its translation) to also get
    `xtr_logits` and `contrastive_embeddings` for training.
    """

    def __init__(self, config: EMSConfig):
        super().__init__(config)
        self.embeddings = EMSEmbeddings(config)
        self.layers = nn.ModuleList(EMSLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.xtr_head = EMSXTRHead(config)
        self.contrastive_head = EMSContrastiveHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_language_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> EMSModelOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens but this model has {self.config.max_position_embeddings} "
                "positions; tokenize with truncation=True (the tokenizer's model_max_length truncates as the paper does)."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden_states = self.embeddings(input_ids)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        hidden_states = self.layer_norm(hidden_states)
        sentence_embedding = mean_pool(hidden_states, attention_mask)
        output = EMSModelOutput(last_hidden_state=hidden_states, pooler_output=sentence_embedding)
        if target_language_ids is not None:
            output.xtr_logits = self.xtr_head(sentence_embedding, target_language_ids)
            output.contrastive_embeddings = self.contrastive_head(sentence_embedding)
        return output


__all__ = ["EMSModel", "EMSPreTrainedModel", "EMSModelOutput", "mean_pool"]
