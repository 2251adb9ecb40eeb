"""EMS sentence encoder (Mao, Chu & Kurohashi, "EMS: Efficient and Effective Massively Multilingual Sentence
Representation Learning").

* `EMSModel`: the bare encoder (embeddings, pre-LayerNorm layers, final norm) whose mean-pooled token states
  (eq. 1) are the language-agnostic sentence embedding. This is what `AutoModel` loads and what inference uses.
* `EMSForPreTraining`: `EMSModel` plus the two training heads, as `BertForPreTraining` holds `BertModel`:
  `xtr_head`, cross-lingual token-level reconstruction (XTR, eqs. 2-5), and `contrastive_head`, the two-layer
  projection of the sentence-level contrastive objective (eqs. 10-11). This is what the EMS trainer trains.
* `EMSForSequenceClassification`: `EMSModel` plus a classifier on its sentence embedding, for fine-tuning on
  labelled texts (`AutoModelForSequenceClassification`).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_ems import EMSConfig
from .layers import SentenceClassificationMixin, SentenceEncoderMixin, SentenceEncoderPreTrainedModel


@dataclass
class EMSForPreTrainingOutput(BaseModelOutputWithPooling):
    """The encoder's outputs plus the training heads' outputs.

    Args:
        last_hidden_state: token states, `(batch, seq_len, hidden_size)`.
        pooler_output: mean-pooled sentence embedding `u` (eq. 1), `(batch, hidden_size)`.
        xtr_logits: unnormalised log-probabilities of `q_S` over the vocabulary (eqs. 4-5), `(batch, vocab_size)`.
        contrastive_embeddings: `h(S)` of eqs. 10-11, `(batch, contrastive_projection_size)`.
    """

    xtr_logits: torch.FloatTensor | None = None
    contrastive_embeddings: torch.FloatTensor | None = None


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


class EMSPreTrainedModel(SentenceEncoderPreTrainedModel):
    config: EMSConfig
    config_class = EMSConfig
    base_model_prefix = "ems"


class EMSModel(SentenceEncoderMixin, EMSPreTrainedModel):
    """The bare EMS encoder: `forward(input_ids, attention_mask)` returns the token states and the mean-pooled
    sentence embedding (`pooler_output`, eq. 1)."""

    # A folder saved from `EMSForPreTraining` also holds the training heads; inference does not need them.
    _keys_to_ignore_on_load_unexpected = [r"^(xtr_head|contrastive_head)\."]


class EMSForPreTraining(EMSPreTrainedModel):
    """`EMSModel` with the XTR and contrastive heads, trained by `EMSTrainer`.

    `forward(input_ids, attention_mask, target_language_ids)` takes one target-language row of `config.languages`
    per sentence (the language of its translation) and returns `xtr_logits` and `contrastive_embeddings` beside the
    encoder's outputs; `return_xtr_logits=False` skips the XTR head (a contrastive-only objective).
    """

    def __init__(self, config: EMSConfig):
        super().__init__(config)
        self.ems = EMSModel(config)
        self.xtr_head = EMSXTRHead(config)
        self.contrastive_head = EMSContrastiveHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_language_ids: torch.Tensor | None = None,
        return_xtr_logits: bool = True,
        **kwargs,
    ) -> EMSForPreTrainingOutput:
        if return_xtr_logits and target_language_ids is None:
            raise ValueError(
                "EMSForPreTraining needs target_language_ids (the language of each sentence's translation) for the "
                "XTR head; for sentence embeddings use EMSModel (AutoModel) or `model.ems`."
            )
        encoded = self.ems(input_ids, attention_mask)
        sentence_embedding = encoded.pooler_output
        return EMSForPreTrainingOutput(
            last_hidden_state=encoded.last_hidden_state,
            pooler_output=sentence_embedding,
            xtr_logits=self.xtr_head(sentence_embedding, target_language_ids) if return_xtr_logits else None,
            contrastive_embeddings=self.contrastive_head(sentence_embedding),
        )


class EMSForSequenceClassification(SentenceClassificationMixin, EMSPreTrainedModel):
    """`EMSModel` (as `.ems`) with a classifier on its mean-pooled sentence embedding (eq. 1): `forward(input_ids,
    attention_mask, labels)` returns `SequenceClassifierOutput`. A folder of `EMSModel` or `EMSForPreTraining` loads
    into it with only the classifier newly initialised (the pre-training heads are dropped)."""

    encoder_class = EMSModel
    _keys_to_ignore_on_load_unexpected = EMSModel._keys_to_ignore_on_load_unexpected


__all__ = ["EMSForPreTraining", "EMSForPreTrainingOutput", "EMSForSequenceClassification", "EMSModel",
           "EMSPreTrainedModel"]
