"""`recipe: ema_alignment`: align a pretrained sentence encoder across languages with an EMA teacher (Ham & Kim,
"Semantic Alignment with Calibrated Similarity for Multilingual Sentence Embedding", sec. 5.2-5.3), optionally after
stage 1 (sec. 5.1): fitting the cosine of two pivot-language sentences to gold similarity scores.

What is this recipe's own: the `student` section (an encoder folder, a Hub id or the shortcut `minilm` for the
installed all-MiniLM-L6-v2; its pooling; peft LoRA adapters or full fine-tuning), the student's own tokenizer,
`EMATeacherTrainer` (eq. 1 against the EMA teacher of eq. 2), the `similarity` section (stage 1 on `(text1, text2,
score)` pairs with `SimilarityTrainer`, when it names training data, and the English similarity sets of its `eval`),
retrieval P@1 and similarity Spearman of the untouched student *before* training, after stage 1 and after the
alignment, and the saved folder: the LoRA adapters merged into the weights, loadable
with `AutoModel` and, with the student's own sentence-transformers modules (Pooling, Normalize, ...), with
`SentenceTransformer`; the adapters alone in `lora_adapter/`. Data loading, resume and publishing are `Recipe`'s.

Training data are translation pairs whose `src` is the pivot language (English in the embedded default corpus): the
teacher embeds the pivot sentence, the student its translation.
"""

import copy
import json
import logging
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import datasets
import torch
from huggingface_hub import EvalResult, ModelCard
from peft import PeftModel
from transformers import AutoConfig, AutoModel, AutoTokenizer

from modeling_ems import EMSConfig, EMSModel

from ...arguments import EncoderTrainingArguments
from ...cards import retrieval_card_context
from ...collators import ParallelPairCollator
from ...data import describe_data, pair_languages
from ...data.sources import dataset_type
from ...encoding import encode, truncation_length
from ...evaluation.common import read_tsv
from ...evaluation.retrieval import retrieval_by_language
from ...evaluation.similarity import SimilarityEvaluator
from ...hub import append_normalize, record_matryoshka_dims, write_sentence_transformers_config
from ...tokenizer import tokenizer_languages, train_tokenizer
from ..base import register_recipe, training_arguments
from ..encoder import EVAL_DESCRIPTION, EncoderRecipe, ScratchEncoderRecipe
from .distillation import (
    TEACHER_COLUMN,
    DistillationTrainer,
    ProjectedStudent,
    Teacher,
    TeacherSettings,
    TeacherTargetCollator,
    add_teacher_embeddings,
)
from .stage1 import (
    TARGET_RANGES,
    ScoredPairCollator,
    SimilarityTrainer,
    add_pair_lengths,
    check_range,
    load_scored_pairs,
)
from .student import StudentSettings, inspect_student
from .trainer import EMATeacherTrainer, EMATrainingArguments, add_lora, scaled_tau_base

logger = logging.getLogger(__name__)

ADAPTER_FOLDER = "lora_adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
STAGE1_FOLDER = "stage1"  # stage 1's trained student, the base of the stage-2 adapters
STAGE1_DONE = "stage1_done.json"  # written last: a stage-1 folder holding it is complete and is reused on a rerun
# Unknown-token share of a language's sentences above which the student's vocabulary is said not to cover it.
UNKNOWN_WARNING = 0.05
# Tokens per sentence of a language against its pivot translations above which the student's vocabulary is said to
# split it far more finely than the pivot (all-MiniLM-L6-v2: ru/uk 4x, el 4.6x the tokens of English).
SPLIT_WARNING = 2.0
TEACHER_CACHE = Path(datasets.config.HF_DATASETS_CACHE) / "teacher_embeddings"  # add_teacher_embeddings' cache


def vocabulary_report(tokenizer, train, per_language: int = 200) -> dict[str, dict]:
    """How `tokenizer` reads each language of the pairs, on up to `per_language` pairs of each: `tokens_per_character`
    (of the translations), `split_ratio` (their tokens against the tokens of their pivot sources: the same meaning,
    so 1 is as fine as the pivot) and `unknown_rate` (share of unknown tokens), plus the pivot's own row."""
    by_language: dict[str, list[tuple[str, str]]] = {}
    for source, target, language in zip(train["src"], train["tgt"], train["tgt_lang"]):
        rows = by_language.setdefault(language, [])
        if len(rows) < per_language:
            rows.append((source, target))
    unknown = tokenizer.unk_token_id

    def counts(texts):
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return (sum(len(row) for row in ids), sum(len(text) for text in texts),
                sum(i == unknown for row in ids for i in row) if unknown is not None else 0)

    report, pivot_texts = {}, []
    for language, rows in sorted(by_language.items()):
        sources, targets = zip(*rows)
        pivot_texts += sources
        pivot_tokens, _, _ = counts(sources)
        tokens, characters, unknowns = counts(targets)
        report[language] = {"tokens_per_character": round(tokens / max(1, characters), 4),
                            "split_ratio": round(tokens / max(1, pivot_tokens), 3),
                            "unknown_rate": round(unknowns / max(1, tokens), 4)}
    tokens, characters, unknowns = counts(pivot_texts)
    pivot = train[0]["src_lang"]
    report[pivot] = {"tokens_per_character": round(tokens / max(1, characters), 4), "split_ratio": 1.0,
                     "unknown_rate": round(unknowns / max(1, tokens), 4)}
    return report


@dataclass
class SimilaritySettings:
    """The `similarity` section: stage 1 (sec. 5.1) and the similarity sets the student is measured on.

    With `train`, stage 1 fine-tunes the whole student on its `(text1, text2, score)` pairs (cosine fitted to the
    score by MSE, scores mapped from `score_range` to `target_range`) before the alignment, with the training
    section's values overridden by `training`. Spearman of each `eval` set (`text1, text2, score` TSV, e.g.
    `../shared/data/similarity/en-simlex999.tsv`) is measured before training, after stage 1 and at the end; a set
    that is not there (a clone without `../shared`) is skipped with a warning, and one that shares a pair with the
    stage-1 data is refused."""

    train: str | None = None  # stage-1 pairs: a local TSV / CSV / JSONL / Parquet file; null: no stage 1
    score_range: list | None = None  # the scale of train's scores [low, high], e.g. [0, 5] for STS-B
    target_range: list = field(default_factory=lambda: [0.0, 1.0])  # the cosine's target: [0, 1] or [-1, 1]
    training: dict = field(default_factory=dict)  # stage-1 values of training-section fields (max_steps, ...)
    eval: list = field(default_factory=list)  # similarity sets for Spearman before / after each stage

    def __post_init__(self):
        if self.train is not None and self.score_range is None:
            raise ValueError(f"similarity.train={self.train!r} needs similarity.score_range, the scale of its "
                             "scores, e.g. [0, 5] for the STS benchmark.")
        if self.score_range is not None:
            check_range(self.score_range, "similarity.score_range")
        if check_range(self.target_range, "similarity.target_range") not in TARGET_RANGES:
            raise ValueError(f"similarity.target_range={self.target_range!r}: use [0, 1] or [-1, 1].")
        if not isinstance(self.training, dict):
            raise ValueError(f"similarity.training={self.training!r}: give a mapping of training-section fields for "
                             "stage 1 (max_steps, learning_rate, ...).")
        if isinstance(self.eval, str) or not isinstance(self.eval, list):
            raise ValueError(f"similarity.eval={self.eval!r}: give a list of similarity files (text1, text2, score).")


@register_recipe
class EMAAlignmentRecipe(EncoderRecipe):
    name = "ema_alignment"
    sections = {"student": StudentSettings, "teacher": TeacherSettings, "similarity": SimilaritySettings}
    streams_train_data = False  # the pivot language and the teacher's cached embeddings need the whole pairs
    arguments_class = EMATrainingArguments
    example_config = "ema_minilm"
    publish_ignore = (STAGE1_FOLDER,)  # stage 1's student: the base of the adapters, not the model
    restart_files = ScratchEncoderRecipe.restart_files  # a new EMS student's vocabulary, trained by an earlier run
    card_tags = ("ema-teacher",)
    card_license = None  # the student's, when its card states one

    def __init__(self, run_config, output_dir):
        super().__init__(run_config, output_dir)
        self.student = inspect_student(run_config.student, run_config.source)  # a bad student fails first
        if "frozen_teacher" in run_config.training:
            raise ValueError(f"training.frozen_teacher in {run_config.source}: the teacher is set in the teacher "
                             "section: teacher.model: frozen (the initial student, never updated), ema (default) "
                             "or an encoder.")
        self.teacher = Teacher(run_config.teacher, run_config.source) if run_config.teacher.separate else None
        self.check_lora_targets()
        self.before: dict | None = None  # retrieval and similarity of the untouched student, set before training
        self.after_stage1: dict | None = None  # the same after stage 1, when it ran
        self.evaluation: dict = {}
        self.similarity_sets: list[SimilarityEvaluator] = []
        self.stage1_pairs = None  # the `similarity.train` pairs, scores mapped to the cosine's range
        self.args: EMATrainingArguments | None = None
        self.trainer: EMATeacherTrainer | DistillationTrainer | None = None

    def check_lora_targets(self) -> None:
        """`student.lora`'s target modules against the student's architecture, built on the meta device (no weights
        read): a target that matches nothing fails before the "before" evaluation and any file."""
        lora = self.run_config.student.lora_config()
        if lora is None:
            return
        config = (self.ems_config() if self.run_config.student.fresh
                  else AutoConfig.from_pretrained(self.student.transformer, trust_remote_code=False))
        with torch.device("meta"):
            skeleton = AutoModel.from_config(config, trust_remote_code=False)
        try:
            add_lora(skeleton, copy.deepcopy(lora))
        except ValueError as error:
            raise ValueError(f"student.lora in {self.run_config.source}: {error}") from None

    def load_data(self):
        train, evaluation = super().load_data()
        pivots = sorted(set(train["src_lang"]))
        if len(pivots) != 1:
            raise ValueError(f"The training pairs of {self.train_name} have {len(pivots)} source languages "
                             f"{pivots[:5]}; EMA alignment needs one pivot language in `src` (the teacher's side, "
                             "e.g. English) and its translations in `tgt`.")
        self.data_report["train"]["pivot_language"] = pivots[0]
        if self.teacher is not None:  # a teacher that cannot read the pivot fails before any training
            self.teacher.check_reads(train.shuffle(seed=0)["src"][:1000], pivots[0])
        self.evaluation = evaluation
        self.similarity_sets = self.load_similarity_sets()
        return train, evaluation

    def load_similarity_sets(self) -> list[SimilarityEvaluator]:
        """The `similarity.eval` sets that are there (a missing one is skipped with a warning), after checking the
        stage-1 data and that no set shares a pair with it."""
        settings = self.run_config.similarity
        seen = set()
        if settings.train is not None:
            self.stage1_pairs = load_scored_pairs(settings.train, settings.score_range, settings.target_range)
            seen = {frozenset(pair) for pair in zip(self.stage1_pairs["text1"], self.stage1_pairs["text2"])}
            self.data_report["stage1"] = {"source": str(settings.train), "pairs": len(self.stage1_pairs),
                                          "score_range": settings.score_range,
                                          "target_range": settings.target_range}
        sets, skipped = [], []
        for path in settings.eval:
            if not Path(path).is_file():
                logger.warning("similarity.eval: %s is not there; skipped.", path)
                skipped.append(str(path))
                continue
            table = read_tsv(path, ("text1", "text2"))
            shared = sum(frozenset(pair) in seen for pair in zip(table["text1"], table["text2"]))
            if shared:
                raise ValueError(f"similarity.eval {path} shares {shared} pairs with the stage-1 data "
                                 f"{settings.train}: measure on sets the student is not trained on.")
            sets.append(SimilarityEvaluator.from_tsv(path, name=Path(path).stem))
        self.data_report["similarity_eval"] = {"sets": [s.name for s in sets], "skipped_missing": skipped}
        return sets

    def prepare_tokenizer(self, train, args):
        """The student's own tokenizer, or for a new EMS student a SentencePiece vocabulary trained on the pairs (the
        main process first; one an earlier run saved in the output folder is reused); then the vocabulary check
        (`vocabulary_report`): a language the tokenizer splits far more finely than the pivot, or maps more than
        5% to unknown tokens, is warned of."""
        if self.run_config.student.fresh:
            with args.main_process_first(desc="tokenizer"):
                if (self.output_dir / "tokenizer.json").is_file():
                    tokenizer = AutoTokenizer.from_pretrained(self.output_dir)
                else:
                    texts = (text for row in train for text in (row["src"], row["tgt"]))
                    tokenizer = train_tokenizer(texts, pair_languages(train), self.run_config.student.vocab_size,
                                                self.ems_config().max_position_embeddings, self.output_dir)
        else:
            tokenizer = AutoTokenizer.from_pretrained(self.student.transformer)
        report = vocabulary_report(tokenizer, train)
        pivot = self.data_report["train"]["pivot_language"]
        split = {language: row["split_ratio"] for language, row in report.items()
                 if row["split_ratio"] > SPLIT_WARNING}
        if split:
            logger.warning("The student's tokenizer splits %s into more than %.1fx the tokens of their %s "
                           "translations (tokens per sentence against %s): their sentences are poorly represented "
                           "and align less well; a larger multilingual vocabulary (student.model: ems, "
                           "student.vocab_size) splits them less.", split, SPLIT_WARNING, pivot, pivot)
        poor = {language: row["unknown_rate"] for language, row in report.items()
                if row["unknown_rate"] > UNKNOWN_WARNING}
        if poor:
            logger.warning("The student's tokenizer maps more than %d%% of the tokens of %s to %s: their "
                           "sentences are poorly represented and align less well.", 100 * UNKNOWN_WARNING,
                           poor, tokenizer.unk_token)
        self.data_report["vocabulary"] = report
        return tokenizer

    def ems_config(self, tokenizer=None) -> EMSConfig:
        """The config of a new EMS student: `student.config` with, when given, what the tokenizer fixes."""
        fixed = {} if tokenizer is None else dict(
            vocab_size=len(tokenizer), languages=tokenizer_languages(tokenizer), pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        section = dict(self.run_config.student.config or {})
        clash = sorted(set(ScratchEncoderRecipe.tokenizer_fixed) & set(section))
        if clash:
            raise ValueError(f"student.config of {self.run_config.source} sets {clash}; these come from the "
                             "tokenizer (student.vocab_size sets the vocabulary).")
        try:
            return EMSConfig(**section, **fixed)
        except TypeError as error:
            raise ValueError(f"student.config of {self.run_config.source}: {error}") from None

    def fit(self, train, tokenizer, args, resume):
        """The stages, in order: the untouched student measured ("before"), stage 1 when configured (and measured
        again), the LoRA adapters, then the alignment (`train_model`)."""
        if args.pooling not in (None, self.student.pooling):
            raise ValueError(f"training.pooling={args.pooling!r} in {self.run_config.source}: the pooling is the "
                             "student's; set student.pooling instead.")
        args.pooling = self.student.pooling
        args.frozen_teacher = self.run_config.teacher.model.strip().lower() == "frozen"
        self.args = args
        model = self.build_model(tokenizer)
        if args.process_index == 0:
            self.before = self.measure(model, tokenizer, self.evaluation, "Before training")
        if self.run_config.similarity.train is not None:
            model = self.stage1(model, args, tokenizer)
            if args.process_index == 0:
                self.after_stage1 = self.measure(model, tokenizer, self.evaluation, "After stage 1")
        model = self.adapted(model)
        if self.teacher is not None and model.config.hidden_size != self.teacher.width:
            logger.warning("The student's embedding has %d dims, the teacher's %d: the student learns through a "
                           "linear projection to %d dims, saved as a sentence-transformers Dense module.",
                           model.config.hidden_size, self.teacher.width, self.teacher.width)
            model = ProjectedStudent(model, model.config.hidden_size, self.teacher.width, self.student.pooling)
        return self.train_model(model, train, tokenizer, args, resume)

    def prepare_train_data(self, train, tokenizer, args):
        """`EncoderRecipe`'s, and with a separate teacher its embedding of each pivot sentence (`TEACHER_COLUMN`),
        computed once and cached (`add_teacher_embeddings`)."""
        train = super().prepare_train_data(train, tokenizer, args)
        if self.teacher is not None:
            with args.main_process_first(desc="teacher embeddings"):
                train = add_teacher_embeddings(train, self.teacher, TEACHER_CACHE)
        return train

    def build_model(self, tokenizer):
        """The untouched student, or a new EMS model from `student.config` and the tokenizer."""
        if self.run_config.student.fresh:
            return EMSModel(self.ems_config(tokenizer))
        return AutoModel.from_pretrained(self.student.transformer, dtype=torch.float32)

    def pooling_of(self, model) -> str | None:
        """The pooling `model` is embedded with: the student's, or None for a `ProjectedStudent` (which pools
        itself)."""
        return None if isinstance(model, ProjectedStudent) else self.student.pooling

    def adapted(self, model):
        """The stage-2 student: `model` with LoRA adapters when `student.lora` says so."""
        lora = self.run_config.student.lora_config()
        if lora is not None:
            model = add_lora(model, lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.warning("Student %s: %s, %d of %d parameters trainable.", self.student.source,
                       "LoRA" if lora is not None else "full fine-tuning", trainable, total)
        self.data_report["student_parameters"] = {"trainable": trainable, "total": total}
        return model

    def max_length(self, model, tokenizer) -> int | None:
        return (self.run_config.student.max_length or self.student.max_seq_length
                or truncation_length(model, tokenizer))

    def measure(self, model, tokenizer, evaluation, stage: str) -> dict:
        """Retrieval P@1 per language of `model` on each evaluation set and Spearman on each similarity set
        (`similarity`), as the student embeds (its pooling and truncation; a Normalize module changes no cosine)."""
        embed = lambda texts: encode(model, tokenizer, texts, batch_size=128,  # noqa: E731
                                     max_length=self.student.max_seq_length, pooling=self.pooling_of(model))
        results = {name: retrieval_by_language(pairs, embed, progress=f"{stage}, {name}")
                   for name, pairs in evaluation.items()}
        results["similarity"] = {key: value for evaluator in self.similarity_sets
                                 for key, value in evaluator(embed).items()}
        logger.warning("%s: average P@1 %s, Spearman %s", stage,
                       {name: round(results[name]["average"]["p@1"], 4) for name in evaluation},
                       {key: round(value, 4) for key, value in results["similarity"].items()
                        if key.endswith("_spearman")})
        return results

    def make_trainer(self, model, args, train, tokenizer) -> EMATeacherTrainer:
        max_length = self.max_length(model, tokenizer)
        if self.teacher is None:
            self.trainer = EMATeacherTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                             data_collator=ParallelPairCollator(tokenizer, max_length))
            return self.trainer
        pivot_weight, other_weight = self.run_config.teacher.weights()
        self.trainer = DistillationTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                           data_collator=TeacherTargetCollator(tokenizer, max_length),
                                           pivot_weight=pivot_weight, other_weight=other_weight,
                                           normalize=self.teacher.normalizes)
        return self.trainer

    def stage1(self, model, args, tokenizer):
        """Stage 1 (sec. 5.1): the whole student fine-tuned on the `similarity.train` pairs by `SimilarityTrainer`,
        with the training section's values (less the EMA teacher's) overridden by `similarity.training`, saved to
        `stage1/`. A complete `stage1/` of an earlier run of this folder is loaded instead."""
        folder = self.output_dir / STAGE1_FOLDER
        if (folder / STAGE1_DONE).is_file():
            logger.warning("Stage 1 is done in %s (delete that folder to train it again): loading it.", folder)
            self.data_report["stage1"]["training"] = json.loads((folder / STAGE1_DONE).read_text())
            return AutoModel.from_pretrained(folder, dtype=torch.float32)
        settings = self.run_config.similarity
        teacher_only = ({f.name for f in fields(EMATrainingArguments)}
                        - {f.name for f in fields(EncoderTrainingArguments)})
        options = {key: value for key, value in self.run_config.training.items() if key not in teacher_only}
        stage_config = replace(self.run_config, training={**options, **settings.training},
                               source=f"{self.run_config.source} (training, with similarity.training over it)")
        stage_args, _ = training_arguments(EncoderTrainingArguments, stage_config, folder)
        stage_args.pooling = args.pooling
        pairs = self.stage1_pairs
        if stage_args.train_sampling_strategy == "group_by_length":
            pairs = add_pair_lengths(pairs, tokenizer, stage_args.length_column_name)
        trainer = SimilarityTrainer(model=model, args=stage_args, train_dataset=pairs,
                                    data_collator=ScoredPairCollator(tokenizer, self.max_length(model, tokenizer)),
                                    processing_class=tokenizer)
        output = trainer.train()
        trainer.save_model(str(folder))
        summary = {"global_step": output.global_step, "train_runtime_s": round(output.metrics["train_runtime"], 1),
                   "train_loss": round(output.training_loss, 4)}
        self.data_report["stage1"]["training"] = summary
        if args.process_index == 0:
            (folder / STAGE1_DONE).write_text(json.dumps(summary))
        return trainer.model

    def evaluate(self, model, tokenizer, evaluation) -> dict:
        """Evaluate what the saved folder holds (`save`): each evaluation set's retrieval P@1 after training
        (`model`), before it (`before_training`, the untouched student), after stage 1 (`after_stage1`, when it ran)
        and of the TF-IDF baseline; the same stages' Spearman under `similarity` (`before_training`, `after_stage1`,
        `after_training`)."""
        after = self.measure(model, tokenizer, evaluation, "After alignment")
        stages = {"model": after, "before_training": self.before}
        if self.after_stage1 is not None:
            stages["after_stage1"] = self.after_stage1
        results = {name: {**{stage: measured[name] for stage, measured in stages.items()},
                          "tfidf_baseline": retrieval_by_language(pairs, progress=f"{name}: TF-IDF")}
                   for name, pairs in evaluation.items()}
        if self.similarity_sets:  # keyed by stage; "after_training", not "model", which marks a retrieval set
            results["similarity"] = {("after_training" if stage == "model" else stage): measured["similarity"]
                                     for stage, measured in stages.items()}
        settings = self.run_config.student
        results["student"] = {"source": self.student.source, "pooling": self.student.pooling or "mean",
                              "lora": settings.lora, "merged": settings.lora is not None,
                              "stage1": self.after_stage1 is not None,
                              "tau_base": self.tau_base(), "frozen_teacher": self.args.frozen_teacher,
                              "teacher": self.teacher_description(), "matryoshka_dims": self.args.matryoshka_dims}
        return results

    def embedding_width(self, model) -> int:
        """The teacher's width where there is a separate teacher (the student's reaches it through a projection),
        else the student's."""
        return self.teacher.width if self.teacher is not None else model.config.hidden_size

    def tau_base(self) -> float | None:
        """The EMA teacher's τ_base as trained: `training.tau_base`, or scaled to the run (`scaled_tau_base`); None
        with a separate teacher."""
        if self.teacher is not None:
            return None
        return self.trainer.tau_base() if self.trainer is not None else (
            self.args.tau_base if self.args.tau_base is not None else scaled_tau_base(self.args.max_steps))

    def teacher_description(self) -> dict:
        """What the results and the card say of the teacher."""
        settings = self.run_config.teacher
        if self.teacher is None:
            return {"kind": settings.model.strip().lower(), "tau_base": self.tau_base(),
                    "tau_base_scaled": self.args.tau_base is None}
        pivot_weight, other_weight = settings.weights()
        return {"kind": "separate", "source": self.teacher.source, "width": self.teacher.width,
                "pivot_weight": pivot_weight, "other_weight": other_weight,
                "cached_column": TEACHER_COLUMN}

    def save(self, model, tokenizer):
        """Save the aligned student as a plain folder (main process, after `Trainer.save_model`): LoRA adapters
        merged into the weights (the adapters alone go to `lora_adapter/`), the tokenizer, and the student's own
        sentence-transformers modules with the transformer at the folder's root, then the projection to the
        teacher's width as a `Dense` module when there is one. Returns the merged model (with its projection)."""
        if isinstance(model, ProjectedStudent):
            model.encoder = self.save(model.encoder, tokenizer)
            modules_file = self.output_dir / "modules.json"
            modules = json.loads(modules_file.read_text())
            if modules[-1]["type"].endswith("Normalize"):  # the projection comes before a normalization
                modules.insert(len(modules) - 1, model.save_dense(self.output_dir))
            else:
                modules.append(model.save_dense(self.output_dir))
            for index, module in enumerate(modules):  # sentence-transformers keys the modules by name
                module["idx"], module["name"] = index, str(index)
            modules_file.write_text(json.dumps(modules, indent=2))
            return model
        output_dir = self.output_dir
        for name in ADAPTER_FILES:  # Trainer.save_model wrote the adapters here; AutoModel would follow them
            (output_dir / name).unlink(missing_ok=True)
        if isinstance(model, PeftModel):
            adapter_dir = output_dir / ADAPTER_FOLDER
            model.save_pretrained(adapter_dir)
            (adapter_dir / "README.md").unlink(missing_ok=True)  # peft's placeholder card
            config_file = adapter_dir / "adapter_config.json"
            config = json.loads(config_file.read_text())
            # the adapters' base: the stage-1 student when stage 1 ran, else the untouched one
            config["base_model_name_or_path"] = (str(self.output_dir / STAGE1_FOLDER) if self.after_stage1 is not None
                                                 else self.student.source)
            config_file.write_text(json.dumps(config, indent=2))
            model = model.merge_and_unload()
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        self.write_modules(model, tokenizer)
        return model

    def write_modules(self, model, tokenizer) -> None:
        """The student's sentence-transformers modules, or for a plain transformers student Transformer -> Pooling
        by its pooling (mean when it states none)."""
        output_dir = self.output_dir
        if self.student.modules is None:
            write_sentence_transformers_config(output_dir, model.config.hidden_size,
                                               truncation_length(model, tokenizer),
                                               pooling=self.student.pooling or "mean")
        else:
            self.copy_student_modules()
        if self.normalizes():
            append_normalize(output_dir)  # as trained: fitted to a normalizing teacher as unit vectors
        record_matryoshka_dims(output_dir, self.matryoshka_dims)

    def normalizes(self) -> bool:
        """Whether the saved student ends with a Normalize module: its own does, or it was fitted as unit vectors
        to a separate teacher that normalizes (`DistillationTrainer`)."""
        own = bool(self.student.modules) and self.student.modules[-1]["type"].endswith("Normalize")
        return own or (self.teacher is not None and self.teacher.normalizes)

    def copy_student_modules(self) -> None:
        """The student's own sentence-transformers modules, with the transformer at the folder's root."""
        output_dir = self.output_dir
        modules = [dict(module) for module in self.student.modules]
        modules[0]["path"] = ""  # the transformer at the root, where AutoModel finds it
        paths = {module["path"] for module in modules[1:]}
        (output_dir / "modules.json").write_text(json.dumps(modules, indent=2))
        for name, origin in (("sentence_bert_config.json", self.student.transformer),
                             ("config_sentence_transformers.json", self.student.folder)):
            if (origin / name).is_file():
                shutil.copy2(origin / name, output_dir / name)
            else:
                (output_dir / name).unlink(missing_ok=True)
        for path in sorted(paths):
            shutil.rmtree(output_dir / path, ignore_errors=True)
            if (self.student.folder / path).is_dir():  # a module without settings (Normalize) may have no folder
                shutil.copytree(self.student.folder / path, output_dir / path)

    def retrieval_sections(self, results: dict) -> list[dict]:
        """The encoder card's retrieval sections with the untouched student's P@1 beside each row."""
        sets = self.evaluation_sets()
        retrieval = retrieval_card_context(results, sets)
        for section, name in zip(retrieval["retrieval_sections"], sets):
            before = results[name]["before_training"]
            for pair, row in section["rows"]:
                row["before"] = before[pair]["p@1"]
            section["average"]["before"] = before["average"]["p@1"]
            section["gains"] = sum(row["model"] > row["before"] for _, row in section["rows"])
        return retrieval["retrieval_sections"]

    def card_languages(self, model, results: dict) -> list[str]:
        """The languages of the evaluation pairs and the pivot (the student's config names none)."""
        return sorted({code.split("_")[0] for name in self.evaluation_sets() for pair in results[name]["model"]
                       if pair != "average" for code in pair.split("-")}
                      | {self.data_report["train"]["pivot_language"].split("_")[0]})

    def training_sources(self) -> list[str]:
        """The pairs and, when stage 1 ran, its similarity data."""
        stage1 = self.run_config.similarity.train
        return [*super().training_sources(), *([stage1] if stage1 is not None else [])]

    def card_data(self, model, results: dict) -> dict:
        """The encoder card's metadata with the similarity results (each set's type its data's id), the student's
        license and its Hub id as the base model."""
        card_data = super().card_data(model, results)
        paths = {Path(path).stem: path for path in self.run_config.similarity.eval}  # a set's name: its file's stem
        card_data["eval_results"] += [
            EvalResult(task_type="sentence-similarity", task_name="Semantic similarity",
                       dataset_type=dataset_type(paths[row["name"]]), dataset_name=row["name"],
                       metric_type="spearman", metric_name=f"{row['name']} Spearman",
                       metric_value=round(row["model"], 4)) for row in self.similarity_card_rows(results)]
        student_card = self.student.folder / "README.md" if self.student.folder is not None else None
        if student_card is not None and student_card.is_file():
            try:
                license_ = ModelCard.load(student_card).data.license
            except Exception:  # a card without metadata: no license to carry over
                license_ = None
            if license_:
                card_data["license"] = license_
        if self.student.hub_id:
            card_data["base_model"] = self.student.hub_id
        if self.run_config.student.lora is not None:
            card_data["tags"].append("lora")
        return card_data

    def card_context(self, model, results: dict) -> dict:
        return dict(
            student=self.student.source, pooling=self.student.pooling or "mean",
            normalize=self.normalizes(),
            lora=self.run_config.student.lora, tau_base=self.tau_base(), frozen_teacher=self.args.frozen_teacher,
            teacher=self.teacher_description(), matryoshka_dims=self.args.matryoshka_dims,
            matryoshka_section=self.matryoshka_section(),
            projected=isinstance(model, ProjectedStudent), vocabulary=self.data_report.get("vocabulary", {}),
            pivot=self.data_report["train"]["pivot_language"],
            stage1=self.data_report.get("stage1"), similarity_rows=self.similarity_card_rows(results),
            eval_description=f"{EVAL_DESCRIPTION}: the student before alignment, after it, and the character "
                             "2-4-gram TF-IDF baseline.",
            training_data=describe_data(self.train_name), retrieval_sections=self.retrieval_sections(results),
        )

    @staticmethod
    def similarity_card_rows(results: dict) -> list[dict]:
        """One card row per similarity set: its Spearman before training, after stage 1 (None without it) and at
        the end."""
        stages = results.get("similarity")
        if not stages:
            return []
        return [{"name": key.removesuffix("_spearman"), "before": stages["before_training"][key],
                 "stage1": stages.get("after_stage1", {}).get(key), "model": value}
                for key, value in stages["after_training"].items() if key.endswith("_spearman")]
