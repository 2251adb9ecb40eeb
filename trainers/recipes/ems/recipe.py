"""`recipe: ems`: the EMS encoder trained from scratch on parallel pairs (XTR + contrastive, eq. 12).

What is EMS's own: `EMSForPreTraining` built from the `model` section and the tokenizer, `EMSTrainer` on
`ParallelPairCollator` batches with target languages and translation tokens, and the card `hub_cards/ems.md`. The
SentencePiece vocabulary, held-out retrieval beside TF-IDF and the sentence-transformers files are
`ScratchEncoderRecipe`'s; checkpoints, resume and publishing `Recipe`'s.
"""

from modeling_ems import EMSConfig, EMSForPreTraining

from ...collators import ParallelPairCollator
from ..base import register_recipe
from ..encoder import ScratchEncoderRecipe, TokenizerSettings
from .trainer import EMSTrainer, EMSTrainingArguments


@register_recipe
class EMSRecipe(ScratchEncoderRecipe):
    name = "ems"
    sections = {"model": dict, "tokenizer": TokenizerSettings}  # model: EMSConfig fields
    arguments_class = EMSTrainingArguments
    example_config = "ems_default"
    config_class = EMSConfig
    card_tags = ("ems",)
    matryoshka_objective = "beside eq. 12, eq. 8's contrastive loss (on the sentence embedding, not h(S)) was taken"

    def build_model(self, tokenizer) -> EMSForPreTraining:
        return EMSForPreTraining(self.model_config(tokenizer))

    def make_trainer(self, model, args, train, tokenizer) -> EMSTrainer:
        collator = ParallelPairCollator(tokenizer, model.config.max_position_embeddings,
                                        languages=model.config.languages, translation_tokens=True)
        return EMSTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                          processing_class=tokenizer)
