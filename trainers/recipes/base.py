"""What every recipe shares, written once: training arguments and seeding, data loading and validation, the
tokenizer step, resume from the last complete checkpoint, evaluation during training, the saved folder (model,
tokenizer, code files, config, sentence-transformers config, card) and publishing.

A recipe subclasses `Recipe`, sets its name, config sections and arguments class, and implements the hooks that are
its own (`build_model`, `make_trainer`, `evaluate`, `card`); `run_recipe` runs the steps in order.
"""

import json
import logging
import os
import shlex
from pathlib import Path
from typing import ClassVar

import datasets
import torch
import yaml
from transformers import AutoTokenizer, PreTrainedModel, Trainer, TrainingArguments, set_seed

from ..config import RunConfig
from ..data import (
    DEFAULT_HELDOUT,
    DEFAULT_OUT_OF_DOMAIN,
    DEFAULT_TRAIN,
    add_token_lengths,
    drop_seen_pairs,
    load_parallel_dataset,
    texts_of,
    validate_pairs,
)
from ..encoding import encode
from ..evaluation.retrieval import retrieval_by_language
from ..evaluation.suite import load_suite
from ..hub import publish, write_sentence_transformers_config
from ..loading import resolve_bf16
from ..tokenizer import tokenizer_languages, train_tokenizer

logger = logging.getLogger(__name__)

RECIPES: dict[str, type["Recipe"]] = {}


def register_recipe(cls: type["Recipe"]) -> type["Recipe"]:
    """Class decorator: make a recipe available to configs under `cls.name`."""
    if cls.name in RECIPES and RECIPES[cls.name] is not cls:
        raise ValueError(f"Two recipes are named {cls.name!r}: {RECIPES[cls.name].__qualname__} and {cls.__qualname__}.")
    RECIPES[cls.name] = cls
    return cls


def get_recipe(name: str, source: str = "the config") -> type["Recipe"]:
    if name not in RECIPES:
        raise ValueError(f"{source} names recipe {name!r}, which does not exist; recipes: {', '.join(sorted(RECIPES))}.")
    return RECIPES[name]


def training_arguments(arguments_class: type[TrainingArguments], run_config: RunConfig,
                       output_dir: str | Path) -> tuple[TrainingArguments, bool]:
    """The recipe's arguments from the `training` section, and whether to publish at the end.

    `bf16: auto` turns bf16 autocast on where the hardware runs it natively (`resolve_bf16`). On a machine
    without CUDA, training runs on the CPU (gloo for many processes) with each local process's share
    of the cores. `push_to_hub` is taken out of the Trainer's hands: the Trainer would upload at every save, before
    the folder has its card and sentence-transformers config; `run_recipe` publishes the finished folder instead.
    """
    options = dict(run_config.training)
    push_to_hub = bool(options.pop("push_to_hub", False))
    if "bf16" in options:
        options["bf16"] = resolve_bf16(options["bf16"], f"training.bf16 of {run_config.source}")
    if not torch.cuda.is_available():
        options.setdefault("use_cpu", True)
        # `accelerate launch` without `--cpu` pins OMP_NUM_THREADS=1: give each local process its share of the cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # taskset
        share = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if torch.get_num_threads() == 1 and share > 1:
            logger.warning("Training on the CPU with %d threads per process (OMP_NUM_THREADS was 1).", share)
            torch.set_num_threads(share)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            options.setdefault("ddp_backend", "gloo")
    try:
        return arguments_class(output_dir=str(output_dir), **options), push_to_hub
    except TypeError as error:
        raise ValueError(f"training section of {run_config.source}: {error}") from None


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-N` that holds a `trainer_state.json` (the Trainer writes it last); a checkpoint cut
    short by a kill is skipped with a warning rather than crashing the resume."""
    checkpoints = sorted(
        (path for path in output_dir.glob("checkpoint-*") if path.is_dir() and path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]), reverse=True,
    )
    for path in checkpoints:
        if (path / "trainer_state.json").is_file():
            return path
        logger.warning("Skipping %s: it has no trainer_state.json (the run was stopped while writing it).", path)
    return None


class Recipe:
    """A training method: its config sections, arguments class and the steps that are its own.

    Class attributes:
        name: what a config's `recipe:` names.
        sections: the config sections this recipe adds to `data` and `training`, name -> settings type
            (a dataclass, or `dict` for free-form settings such as a model config).
        arguments_class: the `TrainingArguments` subclass its trainer takes.
        example_config: the shipped config to point users to.
        dataset_type: the `model-index` dataset type of its held-out data.
    """

    name: ClassVar[str]
    sections: ClassVar[dict[str, type]] = {}
    arguments_class: ClassVar[type[TrainingArguments]] = TrainingArguments
    example_config: ClassVar[str]
    dataset_type: ClassVar[str] = "parallel"
    launcher: ClassVar[str] = "accelerate launch"  # how the card's command starts scripts/train.py

    def __init__(self, run_config: RunConfig, output_dir: str | Path):
        self.run_config, self.output_dir = run_config, Path(output_dir)
        self.data_report: dict[str, dict] = {}  # what `load_data` used, written into eval_results.json

    # Steps with a default every pair-trained recipe uses; override where the data differ.
    def load_data(self) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
        """Training pairs and the evaluation sets `{"heldout": in domain, "out_of_domain": ...}`: the configured
        sources or the embedded defaults. No evaluation pair may share a text with the training data: such pairs
        are removed (the count is logged and recorded in `self.data_report`) or, with
        `data.on_training_overlap: error`, refused."""
        data = self.run_config.data
        train = load_parallel_dataset(data.train or DEFAULT_TRAIN)
        if data.max_train_pairs is not None:
            train = train.select(range(min(data.max_train_pairs, len(train))))
        validate_pairs(train, name=self.train_name)
        seen = texts_of(train)
        sets = {"heldout": data.heldout or DEFAULT_HELDOUT, "out_of_domain": data.out_of_domain or DEFAULT_OUT_OF_DOMAIN}
        evaluation = {}
        for name, source in sets.items():
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
        return str(self.run_config.data.train or DEFAULT_TRAIN)

    def evaluation_sets(self) -> dict[str, dict]:
        """How the card names each evaluation set of `load_data`: `title`, `dataset_name`, `dataset_type`."""
        data = self.run_config.data
        return {
            "heldout": {"title": "In domain", "dataset_type": self.dataset_type,
                        "dataset_name": data.heldout or "held-out pairs of the embedded LibreOffice corpus"},
            "out_of_domain": {"title": "Out of domain", "dataset_type": "out-of-domain-parallel",
                              "dataset_name": data.out_of_domain or "Debian package descriptions (de, fr)"},
        }

    def prepare_train_data(self, train, tokenizer, args: TrainingArguments):
        """Pairs with their token lengths when batches are grouped by length (less padding)."""
        if args.train_sampling_strategy == "group_by_length":
            train = add_token_lengths(train, tokenizer, args.length_column_name)
        return train

    def prepare_tokenizer(self, train, args: TrainingArguments):
        """The tokenizer, after checking that it covers the training data."""
        raise NotImplementedError

    def build_model(self, tokenizer) -> PreTrainedModel:
        raise NotImplementedError

    def make_trainer(self, model, args, train, tokenizer) -> Trainer:
        raise NotImplementedError

    def evaluate(self, model, tokenizer, evaluation: dict[str, datasets.Dataset]) -> dict:
        """Retrieval P@1 per language on each evaluation set, for the model and the char 2-4-gram TF-IDF baseline:
        `{set name: {"model": ..., "tfidf_baseline": ...}}`."""
        embed = lambda texts: encode(model, tokenizer, texts, batch_size=128)  # noqa: E731
        return {
            name: {"model": retrieval_by_language(pairs, embed, progress=f"{name}: model"),
                   "tfidf_baseline": retrieval_by_language(pairs, progress=f"{name}: TF-IDF")}
            for name, pairs in evaluation.items()
        }

    def card(self, model, results: dict) -> None:
        """Write the folder's `README.md` (through `trainers.cards.render_model_card`)."""
        raise NotImplementedError

    def reproduction(self, results: dict) -> dict[str, str]:
        """What every card says of how the model was made: the command (with its `--set` overrides), the run's
        settings as YAML and the training summary."""
        overrides = "".join(f" --set {shlex.quote(value)}" for value in self.run_config.overrides)
        return {
            "command": f"{self.launcher} scripts/train.py --config {self.run_config.source} --output_dir "
                       f"{self.output_dir}{overrides}",
            "hyperparameters": yaml.safe_dump(self.run_config.to_dict(), sort_keys=False).strip(),
            "training_summary": ", ".join(f"{k}: {v}" for k, v in results.get("training", {}).items()),
        }

    # Helpers for recipes that train a SentencePiece vocabulary from scratch.
    def sentencepiece_tokenizer(self, train, args, vocab_size: int, languages: list[str], max_length: int,
                                path: str | None = None):
        """Load `path`, the tokenizer an earlier run saved in the output folder, or train one on the pairs (the
        main process first; the others load what it saved)."""
        with args.main_process_first(desc="tokenizer"):
            source = path or (self.output_dir if (self.output_dir / "tokenizer.json").is_file() else None)
            if source is not None:
                return AutoTokenizer.from_pretrained(source)
            texts = (text for row in train for text in (row["src"], row["tgt"]))
            return train_tokenizer(texts, languages, vocab_size, max_length, self.output_dir)

    # set by the tokenizer, never by the model section
    tokenizer_fixed: ClassVar[tuple[str, ...]] = ("vocab_size", "languages", "pad_token_id", "bos_token_id",
                                                  "eos_token_id")

    def model_config_from_tokenizer(self, config_class, tokenizer, **defaults):
        """`config_class` from the `model` section (and `defaults` where it is silent) with what the tokenizer
        fixes: vocabulary size, languages, and its special token ids (the Trainer would otherwise warn that it
        realigns them)."""
        section = dict(self.run_config.model)
        clash = sorted(set(self.tokenizer_fixed) & set(section))
        if clash:
            raise ValueError(f"model section of {self.run_config.source} sets {clash}; these come from the tokenizer.")
        try:
            return config_class(**{**defaults, **section}, vocab_size=len(tokenizer),
                                languages=tokenizer_languages(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        except TypeError as error:
            raise ValueError(f"model section of {self.run_config.source}: {error}") from None


def run_recipe(run_config: RunConfig, output_dir: str | Path, resume: bool = True) -> dict:
    """Train with the recipe the config names, evaluate, and write a Hub-ready folder; publish it when the config's
    `training.push_to_hub` asks. Returns the evaluation results (also in `eval_results.json`; `{}` on processes
    other than the main one)."""
    recipe = get_recipe(run_config.recipe, source=run_config.source)(run_config, output_dir)
    output_dir = recipe.output_dir
    args, push_to_hub = training_arguments(recipe.arguments_class, run_config, output_dir)
    train, evaluation_sets = recipe.load_data()
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = recipe.prepare_tokenizer(train, args)
    train = recipe.prepare_train_data(train, tokenizer, args)
    set_seed(args.seed)  # before the weights are drawn: the same config gives the same run
    model = recipe.build_model(tokenizer)
    if args.process_index == 0:
        (output_dir / "training_config.yaml").write_text(yaml.safe_dump(run_config.to_dict(), sort_keys=False))

    trainer = recipe.make_trainer(model, args, train, tokenizer)
    if run_config.evaluation.suite:  # run by Trainer.evaluate at training.eval_strategy / eval_steps
        trainer.set_evaluation_suite(load_suite(run_config.evaluation.suite, getattr(model.config, "languages", None)))
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    if checkpoint:
        logger.warning("Resuming from %s", checkpoint)
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return {}
    write_sentence_transformers_config(output_dir, model.config.hidden_size, model.config.max_position_embeddings)
    results = recipe.evaluate(trainer.model, tokenizer, evaluation_sets)
    results["data"] = recipe.data_report
    results["training"] = {"train_examples": len(train), "global_step": train_output.global_step,
                           "train_runtime_s": round(train_output.metrics["train_runtime"], 1),
                           "train_loss": round(train_output.training_loss, 4),
                           "bf16_autocast": bool(args.bf16), "processes": args.world_size}  # `bf16: auto` as resolved
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    recipe.card(trainer.model, results)
    if push_to_hub:
        print(publish(output_dir, args.hub_model_id or output_dir.name, private=bool(args.hub_private_repo)))
    return results
