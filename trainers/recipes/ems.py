"""`recipe: ems`: the EMS encoder trained from scratch on parallel pairs (XTR + contrastive, eq. 12).

What is EMS's own: a SentencePiece vocabulary with `<2xx>` language tokens, `EMSForPreTraining` built from the
`model` section and the tokenizer, `EMSTrainer`, held-out retrieval P@1 beside the char 2-4-gram TF-IDF baseline,
and the card `hub_cards/ems.md`. Everything else is `Recipe`'s.
"""

from dataclasses import dataclass


from modeling_ems import EMSConfig, EMSForPreTraining

from ..cards import render_model_card, retrieval_card_context, sentence_encoder_card_data
from ..collators import ParallelPairCollator
from ..data import check_languages, pair_languages
from ..ems_trainer import EMSTrainer, EMSTrainingArguments
from ..tokenizer import tokenizer_languages
from .base import Recipe, register_recipe


@dataclass
class TokenizerSettings:
    vocab_size: int = 8000
    path: str | None = None  # an existing tokenizer folder instead of training one


@register_recipe
class EMSRecipe(Recipe):
    name = "ems"
    sections = {"model": dict, "tokenizer": TokenizerSettings}  # model: EMSConfig fields
    arguments_class = EMSTrainingArguments
    example_config = "ems_default"
    dataset_type = "libreoffice-parallel"

    def prepare_tokenizer(self, train, args):
        settings = self.run_config.tokenizer
        max_length = self.run_config.model.get("max_position_embeddings", EMSConfig.max_position_embeddings)
        tokenizer = self.sentencepiece_tokenizer(train, args, settings.vocab_size, pair_languages(train), max_length,
                                                 path=settings.path)
        languages = tokenizer_languages(tokenizer)
        check_languages(train, languages, name=self.train_name)
        return tokenizer

    def build_model(self, tokenizer) -> EMSForPreTraining:
        return EMSForPreTraining(self.model_config(tokenizer))

    def model_config(self, tokenizer) -> EMSConfig:
        return self.model_config_from_tokenizer(EMSConfig, tokenizer)

    def make_trainer(self, model, args, train, tokenizer) -> EMSTrainer:
        collator = ParallelPairCollator(tokenizer, model.config.max_position_embeddings,
                                        languages=model.config.languages, translation_tokens=True)
        return EMSTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                          processing_class=tokenizer)

    def card(self, model, results: dict) -> None:
        config = model.config
        retrieval = retrieval_card_context(results, self.evaluation_sets())
        card_data = sentence_encoder_card_data(self.output_dir)  # the folder carries modules.json by now
        card_data.update(language=sorted({code.split("_")[0] for code in config.languages}), license="mpl-2.0",
                         tags=card_data["tags"] + ["sentence-embeddings", "multilingual", "ems"],
                         eval_results=retrieval.pop("eval_results"))
        render_model_card(
            self.output_dir, config, card_data,
            languages=config.languages,
            eval_description=(
                "Translation retrieval P@1 (Tatoeba protocol: cosine, mean of both directions), each language pair "
                "retrieved among its own held-out sentences, none of whose texts occurs in the training data; beside "
                "it the character 2-4-gram TF-IDF baseline on the same sentences."
            ),
            **self.reproduction(results),
            training_data=str(self.run_config.data.train or
                              "the embedded LibreOffice parallel corpus (trainers/data/default, MPL-2.0)"),
            **retrieval,
        )
