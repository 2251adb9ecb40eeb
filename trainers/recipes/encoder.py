"""The second tier: recipes that train a sentence encoder on parallel pairs.

`EncoderRecipe(Recipe)`: pair data (`data.train`, `data.heldout`, `data.out_of_domain`, no evaluation pair sharing
a text with the training data), held-out retrieval P@1 in and out of domain beside the char 2-4-gram TF-IDF
baseline, the sentence-transformers files of the saved folder and the encoder card. `ScratchEncoderRecipe` adds
what the encoders trained from scratch share: a SentencePiece vocabulary trained on the pairs (`tokenizer` section)
and the model config built from the `model` section and that tokenizer.
"""

import inspect
import logging
from dataclasses import dataclass
from typing import ClassVar

import datasets
from transformers import AutoTokenizer, TrainingArguments

from hub_cards import template

from ..cards import render_section, retrieval_card_context, sentence_encoder_card_data
from ..config import check_known_settings
from ..data import (
    add_token_lengths,
    check_languages,
    describe_data,
    drop_seen_pairs,
    load_parallel_dataset,
    pair_languages,
    texts_of,
    validate_pairs,
)
from ..encoding import encode
from ..evaluation.retrieval import retrieval_by_language
from ..hub import write_sentence_transformers_config
from ..tokenizer import tokenizer_languages, train_tokenizer
from .base import Recipe

logger = logging.getLogger(__name__)

# The evaluation sets of `EncoderRecipe.load_data`: data setting -> card title.
EVALUATION_SETS = {"heldout": "In domain", "out_of_domain": "Out of domain"}
EVAL_DESCRIPTION = ("Translation retrieval P@1 (Tatoeba protocol: cosine, mean of both directions), each language pair "
                    "retrieved among its own held-out sentences, none of whose texts occurs in the training data")


class EncoderRecipe(Recipe):
    """A recipe whose model is a sentence encoder trained on parallel pairs (`src, tgt, src_lang, tgt_lang`)."""

    dataset_type: ClassVar[str] = "parallel"  # the `model-index` dataset type of the in-domain held-out data
    card_tags: ClassVar[tuple[str, ...]] = ()  # the method's own tags on the card
    card_license: ClassVar[str | None] = "mpl-2.0"  # the license the card states; None: none

    def load_data(self) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
        """Training pairs and the evaluation sets `{"heldout": in domain, "out_of_domain": ...}` the data section
        names. No evaluation pair may share a text with the training data: such pairs are removed (the count is
        logged and recorded in `self.data_report`) or, with `data.on_training_overlap: error`, refused."""
        data = self.run_config.data
        unset = [name for name in ("train", *EVALUATION_SETS) if getattr(data, name) is None]
        if unset:
            raise ValueError(f"{self.run_config.source}: data.{unset[0]} is not set; recipe {self.name!r} trains on "
                             "parallel pairs and measures them in and out of domain. Name a file, folder or Hub "
                             "dataset for each of data.train, data.heldout and data.out_of_domain; the package ships "
                             "default/train.jsonl.gz, default/heldout.jsonl.gz and debian (see configs/ems_default).")
        train = load_parallel_dataset(data.train)
        if data.max_train_pairs is not None:
            train = train.select(range(min(data.max_train_pairs, len(train))))
        validate_pairs(train, name=self.train_name)
        seen = texts_of(train)
        evaluation = {}
        for name in EVALUATION_SETS:
            source = getattr(data, name)
            pairs = load_parallel_dataset(source)
            validate_pairs(pairs, name=str(source))
            pairs, dropped = drop_seen_pairs(pairs, seen)
            if dropped and data.on_training_overlap == "error":
                raise ValueError(f"{dropped} of the {name} pairs in {source} share a text with the training data "
                                 f"{self.train_name}; evaluate on unseen pairs, or set data.on_training_overlap: "
                                 "remove to drop them.")
            if dropped:
                logger.warning("Removed %d %s pairs of %s whose text occurs in the training data.", dropped, name,
                               source)
            if len(pairs) == 0:
                raise ValueError(f"Every {name} pair in {source} occurs in the training data {self.train_name}: "
                                 "there is nothing unseen to evaluate on.")
            evaluation[name] = pairs
            self.data_report[name] = {"source": str(source), "pairs": len(pairs), "removed_seen_in_training": dropped}
        self.data_report["train"] = {"source": self.train_name, "pairs": len(train)}
        return train, evaluation

    @property
    def train_name(self) -> str:
        return str(self.run_config.data.train)

    def evaluation_sets(self) -> dict[str, dict]:
        """How the card names each evaluation set of `load_data`: `title`, `dataset_name`, `dataset_type`."""
        data = self.run_config.data
        return {name: {"title": title, "dataset_name": describe_data(getattr(data, name)),
                       "dataset_type": self.dataset_type if name == "heldout" else "out-of-domain-parallel"}
                for name, title in EVALUATION_SETS.items()}

    def prepare_train_data(self, train, tokenizer, args: TrainingArguments):
        """Pairs with their token lengths when batches are grouped by length (less padding)."""
        if args.train_sampling_strategy == "group_by_length":
            train = add_token_lengths(train, tokenizer, args.length_column_name)
        return train

    def save(self, model, tokenizer):
        """The sentence-transformers files (Transformer -> mean pooling) beside the saved encoder."""
        write_sentence_transformers_config(self.output_dir, model.config.hidden_size,
                                           model.config.max_position_embeddings)
        return model

    def evaluate(self, model, tokenizer, evaluation: dict[str, datasets.Dataset]) -> dict:
        """Retrieval P@1 per language on each evaluation set, for the model and the char 2-4-gram TF-IDF baseline:
        `{set name: {"model": ..., "tfidf_baseline": ...}}`."""
        embed = lambda texts: encode(model, tokenizer, texts, batch_size=128)  # noqa: E731
        return {
            name: {"model": retrieval_by_language(pairs, embed, progress=f"{name}: model"),
                   "tfidf_baseline": retrieval_by_language(pairs, progress=f"{name}: TF-IDF")}
            for name, pairs in evaluation.items()
        }

    def summary(self, results: dict) -> dict:
        """Average P@1 of the model and of TF-IDF on each evaluation set."""
        return {name: {"model_p@1": results[name]["model"]["average"]["p@1"],
                       "tfidf_baseline_p@1": results[name]["tfidf_baseline"]["average"]["p@1"]}
                for name in EVALUATION_SETS}

    def card_languages(self, model, results: dict) -> list[str]:
        """The card's `language` list: the languages the model was trained on."""
        return sorted({code.split("_")[0] for code in model.config.languages})

    def card_data(self, model, results: dict) -> dict:
        """The encoder card's metadata: the sentence-transformers library fields, the languages, the method's tags,
        the license (`card_license`) and the retrieval results of every evaluation set."""
        card_data = sentence_encoder_card_data(self.output_dir)  # the folder carries modules.json by now
        retrieval = retrieval_card_context(results, self.evaluation_sets())
        card_data.update(language=self.card_languages(model, results),
                         tags=card_data["tags"] + ["sentence-embeddings", "multilingual", *self.card_tags],
                         eval_results=retrieval["eval_results"])
        if self.card_license:
            card_data["license"] = self.card_license
        return card_data

    def card_context(self, model, results: dict) -> dict:
        """The languages, the training data and the evaluation section (`hub_cards/_encoder_evaluation.md`: the
        retrieval tables of every evaluation set beside TF-IDF)."""
        evaluation = render_section(
            template("_encoder_evaluation"), command=self.reproduction(results)["command"],
            eval_description=f"{EVAL_DESCRIPTION}; beside it the character 2-4-gram TF-IDF baseline on the same "
                             "sentences.",
            retrieval_sections=retrieval_card_context(results, self.evaluation_sets())["retrieval_sections"])
        return {"languages": model.config.languages, "training_data": describe_data(self.train_name),
                "evaluation_section": evaluation}


@dataclass
class TokenizerSettings:
    """The `tokenizer` section of a recipe that trains its vocabulary."""

    vocab_size: int = 8000
    path: str | None = None  # an existing tokenizer folder instead of training one


class ScratchEncoderRecipe(EncoderRecipe):
    """An encoder trained from scratch: a SentencePiece vocabulary with `<2xx>` language tokens trained on the pairs
    (or loaded from `tokenizer.path`), and `config_class` built from the `model` section and that tokenizer."""

    config_class: ClassVar[type]  # the model's `PretrainedConfig`
    # the vocabulary an earlier run trained in the output folder, which `prepare_tokenizer` would load
    restart_files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.model")
    # set by the tokenizer, never by the model section
    tokenizer_fixed: ClassVar[tuple[str, ...]] = ("vocab_size", "languages", "pad_token_id", "bos_token_id",
                                                  "eos_token_id")

    def __init__(self, run_config, output_dir):
        super().__init__(run_config, output_dir)
        fields = [name for name in inspect.signature(self.config_class.__init__).parameters if name != "self"]
        check_known_settings(run_config.model, fields, f"model section of {run_config.source} "
                                                       f"({self.config_class.__name__} fields)")

    def prepare_tokenizer(self, train, args):
        """Load the tokenizer an earlier run saved in the output folder (or `tokenizer.path`), or train one on the
        pairs (the main process first; the others load what it saved); then check that it covers every language of
        the pairs."""
        settings = self.run_config.tokenizer
        max_length = (self.run_config.model.get("max_position_embeddings")
                      or self.config_class().max_position_embeddings)
        with args.main_process_first(desc="tokenizer"):
            source = settings.path or (self.output_dir if (self.output_dir / "tokenizer.json").is_file() else None)
            if source is not None:
                tokenizer = AutoTokenizer.from_pretrained(source)
            else:
                texts = (text for row in train for text in (row["src"], row["tgt"]))
                tokenizer = train_tokenizer(texts, pair_languages(train), settings.vocab_size, max_length,
                                            self.output_dir)
        check_languages(train, tokenizer_languages(tokenizer), name=self.train_name)
        return tokenizer

    def model_config(self, tokenizer, **defaults):
        """`config_class` from the `model` section (and `defaults` where it is silent) with what the tokenizer
        fixes: vocabulary size, languages, and its special token ids (the Trainer would otherwise warn that it
        realigns them)."""
        section = dict(self.run_config.model)
        clash = sorted(set(self.tokenizer_fixed) & set(section))
        if clash:
            raise ValueError(f"model section of {self.run_config.source} sets {clash}; these come from the tokenizer.")
        try:
            return self.config_class(**{**defaults, **section}, vocab_size=len(tokenizer),
                                     languages=tokenizer_languages(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        except TypeError as error:
            raise ValueError(f"model section of {self.run_config.source}: {error}") from None
