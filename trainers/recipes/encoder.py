"""The second tier: recipes that train a sentence encoder on parallel pairs.

`EncoderRecipe(Recipe)`: pair data (`data.train`, `data.heldout`, `data.out_of_domain`, no evaluation pair sharing
a text with the training data), held-out retrieval P@1 in and out of domain beside the char 2-4-gram TF-IDF
baseline, the sentence-transformers files of the saved folder and the encoder card. `ScratchEncoderRecipe` adds
what the encoders trained from scratch share: a SentencePiece vocabulary trained on the pairs (`tokenizer` section)
and the model config built from the `model` section and that tokenizer.
"""

import inspect
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import datasets
from accelerate import PartialState
from transformers import AutoTokenizer, TrainingArguments

from hub_cards import template

from ..cards import render_section, retrieval_card_context, sentence_encoder_card_data, similarity_widget
from ..config import check_known_settings
from ..data import (
    PAIR_COLUMNS,
    add_token_lengths,
    check_languages,
    checked_stream,
    describe_data,
    drop_seen_pairs,
    load_parallel_dataset,
    pair_languages,
    texts_of,
    tokenize_pairs,
    validate_pairs,
)
from ..data.sources import dataset_ids, dataset_type
from ..encoding import encode
from ..evaluation.retrieval import retrieval_by_language
from ..full_weights import unsharded_class
from ..hub import record_matryoshka_dims, write_sentence_transformers_config
from ..losses import check_matryoshka_dims
from ..prepare import PREPARED_FOLDER, file_digest, load_prepared, save_prepared, source_stamp
from ..tokenizer import sample_sentences, tokenizer_languages, train_tokenizer
from .base import Recipe

logger = logging.getLogger(__name__)

# The evaluation sets of `EncoderRecipe.load_data`: data setting -> card title.
EVALUATION_SETS = {"heldout": "In domain", "out_of_domain": "Out of domain"}
EVAL_DESCRIPTION = ("Translation retrieval P@1 (Tatoeba protocol: cosine, mean of both directions), each language pair "
                    "retrieved among its own held-out sentences, none of whose texts occurs in the training data")


class EncoderRecipe(Recipe):
    """A recipe whose model is a sentence encoder trained on parallel pairs (`src, tgt, src_lang, tgt_lang`)."""

    card_tags: ClassVar[tuple[str, ...]] = ()  # the method's own tags on the card
    card_license: ClassVar[str | None] = "mpl-2.0"  # the license the card states; None: none
    # what the Matryoshka dimensions apply to, as the card says it (`matryoshka_section`)
    matryoshka_objective: ClassVar[str] = "the loss was applied"
    publish_ignore = (PREPARED_FOLDER,)  # the tokenized pairs `prepare_train_data` saves
    streams_train_data = True  # `data.streaming`: `load_data` and `prepare_train_data` read a stream

    def load_data(self) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
        """Training pairs and the evaluation sets `{"heldout": in domain, "out_of_domain": ...}` the data section
        names. No evaluation pair may share a text with the training data: such pairs are removed (the count is
        logged and recorded in `self.data_report`) or, with `data.on_training_overlap: error`, refused. Data that
        `ems-prepare` (or an earlier start) prepared in the output folder from the same data, settings and tokenizer
        is loaded instead (`trainers.prepare`). With `data.streaming`, the training pairs are a stream
        (`datasets.IterableDataset`), checked as training reads them (`prepare_train_data`), and the training pairs
        that share a text with the evaluation sets are skipped instead."""
        data = self.run_config.data
        unset = [name for name in ("train", *EVALUATION_SETS) if getattr(data, name) is None]
        if unset:
            raise ValueError(f"{self.run_config.source}: data.{unset[0]} is not set; recipe {self.name!r} trains on "
                             "parallel pairs and measures them in and out of domain. Name a file, folder or Hub "
                             "dataset for each of data.train, data.heldout and data.out_of_domain; the package ships "
                             "default/train.jsonl.gz, default/heldout.jsonl.gz and debian (see configs/ems_default).")
        key = self.preparation_key()
        prepared = load_prepared(self.output_dir, key) if key is not None else None
        if prepared is not None:
            train, evaluation, self.data_report = prepared
            self.evaluation_data = evaluation  # saved again if the tokenizer changes (`prepare_train_data`)
            logger.warning("Using the data prepared in %s/prepared.", self.output_dir)
            return train, evaluation
        if data.streaming:
            train = load_parallel_dataset(data.train, streaming=True)
            if data.max_train_pairs is not None:
                train = train.take(data.max_train_pairs)
        else:
            train = load_parallel_dataset(data.train)
            if data.max_train_pairs is not None:
                train = train.select(range(min(data.max_train_pairs, len(train))))
            validate_pairs(train, name=self.train_name)
        evaluation = {}
        for name in EVALUATION_SETS:
            source = getattr(data, name)
            pairs = load_parallel_dataset(source)
            validate_pairs(pairs, name=str(source))
            if data.streaming:  # training skips the pairs that share a text with these (`checked_stream`)
                evaluation[name] = pairs
                self.data_report[name] = {"source": str(source), "pairs": len(pairs)}
                continue
            pairs, dropped = drop_seen_pairs(pairs, train)
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
        self.data_report["train"] = ({"source": self.train_name, "streaming": True} if data.streaming
                                     else {"source": self.train_name, "pairs": len(train)})
        self.evaluation_data = evaluation  # saved beside the tokenized pairs (`prepare_train_data`)
        return train, evaluation

    @property
    def train_name(self) -> str:
        return str(self.run_config.data.train)

    def evaluation_sets(self) -> dict[str, dict]:
        """How the card names each evaluation set of `load_data`: `title`, `dataset_name` and `dataset_type` (the
        data's id: `trainers.data.sources`)."""
        data = self.run_config.data
        return {name: {"title": title, "dataset_name": describe_data(getattr(data, name)),
                       "dataset_type": dataset_type(getattr(data, name))}
                for name, title in EVALUATION_SETS.items()}

    def training_sources(self) -> list[str]:
        """The data the model was trained on, for the card's `datasets`: `data.train`."""
        return [self.train_name]

    def pretokenize_length(self) -> int | None:
        """The length the pairs are tokenized to once, when the data is prepared (the collator then only pads); None:
        the collator tokenizes each batch."""
        return None

    def preparation_key(self) -> dict | None:
        """What prepared data must have been made from to be used (`trainers.prepare`): the data section and its
        files, the tokenizer, the truncation length and the length column; None when the pairs are not tokenized
        once."""
        max_length = self.pretokenize_length()
        if max_length is None or self.run_config.data.streaming:
            return None
        data = self.run_config.to_dict()["data"]
        return {"recipe": self.name, "data": data, "max_length": max_length,
                "tokenizer": file_digest(self.tokenizer_file),
                "sources": [source_stamp(data[name]) for name in ("train", *EVALUATION_SETS)],
                "length_column": self.run_config.training.get("length_column_name", "length")}

    @property
    def tokenizer_file(self):
        """The `tokenizer.json` the run loads (that of the output folder)."""
        return self.output_dir / "tokenizer.json"

    def prepare_train_data(self, train, tokenizer, args: TrainingArguments):
        """Pairs with their token lengths when batches are grouped by length (less padding). With
        `pretokenize_length`, the pairs tokenized once (`tokenize_pairs`, with the lengths) and saved with the
        evaluation sets to the output folder's `prepared/`: the main process of the job first, the others then load
        what it saved (a process that cannot see it tokenizes for itself). A stream is checked, tokenized and
        shuffled (`data.shuffle_buffer`) as training reads it: accelerate's data loader then gives each process its
        batches (by default the main process reads and dispatches them; with
        `training.accelerator_config.dispatch_batches: false` each process reads, from its own files when the stream
        has at least as many as there are processes)."""
        max_length = self.pretokenize_length()
        data = self.run_config.data
        if data.streaming:
            held_out = set().union(*map(texts_of, self.evaluation_data.values()))
            train = checked_stream(train, tokenizer_languages(tokenizer), self.train_name, held_out,
                                   data.on_training_overlap)
            if max_length is not None:
                train = tokenize_pairs(train, tokenizer, max_length)
            return train.shuffle(seed=args.seed, buffer_size=data.shuffle_buffer)
        if max_length is None:
            if args.train_sampling_strategy == "group_by_length":
                train = add_token_lengths(train, tokenizer, args.length_column_name)
            return train
        with PartialState().main_process_first():  # global: one process of the job prepares, not one per node
            prepared = load_prepared(self.output_dir, self.preparation_key())  # also when load_data loaded it: the
            if prepared is not None:  # tokenizer may have been trained again since (--no_resume)
                return prepared[0]
            train = train.select_columns(list(PAIR_COLUMNS))
            train = tokenize_pairs(train, tokenizer, max_length, args.length_column_name, num_proc=data.num_proc)
            if PartialState().is_main_process:
                folder = save_prepared(self.output_dir, self.preparation_key(), train, self.evaluation_data,
                                       self.data_report)
                train = datasets.load_from_disk(str(folder / "train"))  # memory-mapped from the saved folder
        return train

    @property
    def matryoshka_dims(self) -> list[int] | None:
        """The Matryoshka dimensions the run trains (`training.matryoshka_dims`, checked by the arguments)."""
        return self.run_config.training.get("matryoshka_dims")

    def matryoshka_section(self) -> str:
        """The card's paragraph on the Matryoshka dimensions trained (`hub_cards/_matryoshka.md`), or ''."""
        return render_section(template("_matryoshka"), dims=self.matryoshka_dims,
                              objective=self.matryoshka_objective)

    def embedding_width(self, model) -> int:
        """The width of the embedding the losses read (and Matryoshka dimensions truncate)."""
        return model.config.hidden_size

    def train_model(self, model, train, tokenizer, args, resume):
        """`Recipe.train_model`, once the Matryoshka dimensions are checked against `embedding_width` (before any
        step, not at the first loss)."""
        if args.matryoshka_dims:
            check_matryoshka_dims(args.matryoshka_dims, self.embedding_width(model), args.matryoshka_weights)
        return super().train_model(model, train, tokenizer, args, resume)

    def save(self, model, tokenizer):
        """The sentence-transformers files (Transformer -> mean pooling) beside the saved encoder, naming the
        Matryoshka dimensions trained."""
        write_sentence_transformers_config(self.output_dir, model.config.hidden_size,
                                           model.config.max_position_embeddings)
        record_matryoshka_dims(self.output_dir, self.matryoshka_dims)
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
        the license (`card_license`), the ids of the training data (`training_sources`), a widget of held-out pairs
        (`load_data`'s) and the retrieval results of every evaluation set."""
        card_data = sentence_encoder_card_data(self.output_dir)  # the folder carries modules.json by now
        retrieval = retrieval_card_context(results, self.evaluation_sets())
        languages = self.card_languages(model, results)
        card_data.update(language=languages,
                         tags=card_data["tags"] + ["sentence-embeddings", "multilingual", *self.card_tags],
                         datasets=dataset_ids(self.training_sources()) or None,
                         widget=similarity_widget(self.evaluation_data["heldout"], languages),
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
                "evaluation_section": evaluation, "matryoshka_section": self.matryoshka_section()}


@dataclass
class TokenizerSettings:
    """The `tokenizer` section of a recipe that trains its vocabulary."""

    vocab_size: int = 8000
    path: str | None = None  # an existing tokenizer folder instead of training one
    sample_sentences: int = 4_000_000  # texts the vocabulary is trained on: a seeded sample of the pairs' texts


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

    def pretokenize_length(self) -> int:
        """The model's positions (the `model` section's, else the config class's default): the pairs are tokenized
        once, to that length."""
        return self.run_config.model.get("max_position_embeddings") or self.config_class().max_position_embeddings

    @property
    def tokenizer_file(self):
        folder = self.run_config.tokenizer.path
        return Path(folder) / "tokenizer.json" if folder else self.output_dir / "tokenizer.json"

    def prepare_tokenizer(self, train, args):
        """Load the tokenizer an earlier run or `ems-prepare` saved in the output folder (or `tokenizer.path`), or,
        in a single process, train one on a seeded sample of the pairs' texts (`tokenizer.sample_sentences`; of a
        stream, its first pairs: its languages are those); then check that it covers every language of the pairs. A
        run of several processes never trains it (that would keep the others waiting at a barrier): it asks for
        `ems-prepare` first."""
        settings = self.run_config.tokenizer
        source = settings.path or (self.output_dir if (self.output_dir / "tokenizer.json").is_file() else None)
        if source is not None:
            tokenizer = AutoTokenizer.from_pretrained(source)
        elif args.world_size > 1:
            overrides = "".join(f" --set {shlex.quote(value)}" for value in self.run_config.overrides)
            raise ValueError(f"{self.output_dir} holds no tokenizer, and this run has {args.world_size} processes, "
                             "which would wait for one of them to train it. Prepare the data and the tokenizer before "
                             f"the processes start: ems-prepare --config {self.run_config.source} --output_dir "
                             f"{self.output_dir}{overrides} (or set tokenizer.path to a tokenizer folder).")
        else:
            pairs = train  # of a stream, its first pairs, as many as the sample
            if isinstance(train, datasets.IterableDataset):
                pairs = datasets.Dataset.from_list(list(train.take((settings.sample_sentences + 1) // 2)))
            tokenizer = train_tokenizer(sample_sentences(pairs, settings.sample_sentences, args.seed),
                                        pair_languages(pairs), settings.vocab_size, self.pretokenize_length(),
                                        self.output_dir, input_sentence_size=settings.sample_sentences)
        if isinstance(train, datasets.Dataset):  # a stream's languages are checked as it is read
            check_languages(train, tokenizer_languages(tokenizer), name=self.train_name)
        return tokenizer

    def save(self, model, tokenizer):
        """`EncoderRecipe.save`, and the model to evaluate read back from the saved folder, on the trained model's
        device: the whole weights (`FullWeightsSaveMixin`) also where training sharded them (FSDP), which the main
        process alone could not run; what is evaluated is what the folder ships."""
        super().save(model, tokenizer)
        return unsharded_class(model).from_pretrained(self.output_dir).to(next(model.parameters()).device)

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
