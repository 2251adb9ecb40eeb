"""A teacher beyond the student: multilingual knowledge distillation (Reimers & Gurevych 2020, "Making Monolingual
Sentence Embeddings Multilingual using Knowledge Distillation") from any sentence encoder the package loads, of which
Ham & Kim's frozen-teacher ablation is the special case where the teacher is the initial student.

The teacher embeds each pivot sentence once: its embeddings are added to the training pairs by a `datasets` map
whose cache file is named by the fingerprint of the teacher and of the pivot texts, so that a second run or a resume
reads them back instead of running the teacher again. The teacher never trains and never runs during training; the
student learns `MSE(s(x_en), t(x_en))` and `MSE(s(x_xx), t(x_en))` (`trainers.losses.distillation_loss`), through a
linear projection to the teacher's width when its own differs (saved as a sentence-transformers `Dense` module).
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, Trainer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ...collators import ParallelPairCollator
from ...encoding import sentence_embeddings
from ...evaluation.training import SuiteEvaluationMixin
from ...layout import PairLayout
from ...length_grouping import LengthGroupingMixin
from ...loading import load_embedder, read_sentence_transformer, resolve_model_setting
from ...loss_logging import LossTermLoggingMixin
from ...losses import distillation_loss, matryoshka_loss
from .trainer import EMATrainingArguments

logger = logging.getLogger(__name__)

TEACHER_MODES = ("ema", "frozen")  # the teachers made of the student itself; anything else names an encoder
TEACHER_COLUMN = "teacher_embedding"
# Share of the pivot sentences' tokens that the teacher's tokenizer may map to its unknown token: above it, the
# teacher cannot read the pivot language and its targets are noise.
TEACHER_UNKNOWN_LIMIT = 0.10
DENSE_FOLDER = "2_Dense"  # after the Transformer (0) and Pooling (1) modules of the saved folder


@dataclass
class TeacherSettings:
    """The `teacher` section."""

    model: str = "ema"  # ema (the paper), frozen (the initial student), or an encoder: folder, Hub id, `minilm`
    pivot_weight: float | None = None  # weight of MSE(s(x_en), t(x_en)); separate teacher only (default 1)
    other_weight: float | None = None  # weight of MSE(s(x_xx), t(x_en)); separate teacher only (default 1)
    batch_size: int = 128  # sentences per teacher forward pass when embedding the pivots

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"teacher.model={self.model!r}: use `ema` (the paper's EMA teacher), `frozen` (the "
                             "initial student, never updated), or an encoder: a folder, a Hub id or `minilm`.")
        weights = {"pivot_weight": self.pivot_weight, "other_weight": self.other_weight}
        if not self.separate:
            stated = [name for name, value in weights.items() if value is not None]
            if stated:
                raise ValueError(f"teacher.{stated[0]} is set, but teacher.model={self.model!r} embeds the pivot "
                                 "with the student's own weights and aligns the other side only (eq. 1); the "
                                 "weights apply to a separate teacher (a folder, a Hub id or `minilm`).")
            return
        for name, value in weights.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"teacher.{name}={value!r}: use a weight >= 0.")
        if self.pivot_weight == 0 and self.other_weight == 0:
            raise ValueError("teacher.pivot_weight and teacher.other_weight are both 0: nothing would be learned; "
                             "give at least one a weight > 0.")
        if self.batch_size < 1:
            raise ValueError(f"teacher.batch_size={self.batch_size}: embed at least one sentence per batch.")

    @property
    def separate(self) -> bool:
        return self.model.strip().lower() not in TEACHER_MODES

    def weights(self) -> tuple[float, float]:
        """`(pivot_weight, other_weight)`, 1 where not given."""
        return (1.0 if self.pivot_weight is None else float(self.pivot_weight),
                1.0 if self.other_weight is None else float(self.other_weight))


def unknown_rate(tokenizer, texts: list[str]) -> float:
    """The share of `texts`' tokens that `tokenizer` maps to its unknown token (0 for a tokenizer without one)."""
    if tokenizer.unk_token_id is None or not texts:
        return 0.0
    ids = [i for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in row]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))


class Teacher:
    """A separate, frozen teacher: an embedding function of the encoder `teacher.model` names, loaded as the package
    loads any encoder (`load_embedder`: its sentence-transformers modules applied), its width and an identity for the
    cache of its embeddings."""

    def __init__(self, settings: TeacherSettings, config_source: str = "the config"):
        folder, hub_id = resolve_model_setting(settings.model, "teacher.model", config_source)
        self.source = hub_id or str(folder)
        try:
            self.embed, _ = load_embedder(folder, batch_size=settings.batch_size)
            layout = read_sentence_transformer(folder)
            self.tokenizer = AutoTokenizer.from_pretrained(layout.transformer if layout else folder)
            probe = self.embed(["Hello world."])
        except (ValueError, OSError, TypeError, RuntimeError) as error:
            raise ValueError(f"teacher.model={settings.model!r} in {config_source} is not a sentence encoder this "
                             f"package can load ({error}). Name a transformers or sentence-transformers encoder "
                             "folder, a Hub id or `minilm`.") from None
        if probe.ndim != 2 or not np.issubdtype(probe.dtype, np.floating):
            raise ValueError(f"teacher.model={settings.model!r} in {config_source} gives {probe.dtype} output of "
                             f"shape {probe.shape} for one sentence, not a sentence embedding: name an encoder.")
        self.width = int(probe.shape[1])
        # A teacher that ends with a Normalize module embeds on the unit sphere: the student is fitted there too
        self.normalizes = bool(layout) and layout.kinds[-1] == "Normalize"
        files = sorted((str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
                       for path in folder.rglob("*") if path.is_file())
        self.identity = json.dumps({"folder": str(folder.resolve()), "files": files})

    def check_reads(self, texts: list[str], language: str) -> None:
        """Refuse a teacher whose tokenizer maps more than `TEACHER_UNKNOWN_LIMIT` of the pivot's tokens to its
        unknown token: it cannot read the pivot language."""
        rate = unknown_rate(self.tokenizer, texts)
        if rate > TEACHER_UNKNOWN_LIMIT:
            raise ValueError(f"The teacher {self.source} maps {rate:.0%} of the tokens of the {language} pivot "
                             f"sentences to {self.tokenizer.unk_token}: it cannot read {language}. Choose a teacher "
                             f"that reads {language}, or put a language it reads in the pairs' `src` side.")


def add_teacher_embeddings(train: datasets.Dataset, teacher: Teacher, cache_dir: Path,
                           column: str = "src") -> datasets.Dataset:
    """`train` with the teacher's embedding of each pivot sentence (`column`) in `TEACHER_COLUMN`. Each distinct
    sentence is embedded once; the embeddings are a `datasets` map cached in `cache_dir` under the fingerprint of
    the teacher and the pivot texts, which a second run or a resume loads instead of running the teacher."""
    digest = hashlib.sha256(teacher.identity.encode())
    for text in train[column]:
        digest.update(text.encode() + b"\0")
    fingerprint = digest.hexdigest()[:32]
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo: dict[str, np.ndarray] = {}

    def embed(batch):
        new = sorted(set(batch[column]) - memo.keys())
        if new:
            memo.update(zip(new, teacher.embed(new)))
        return {TEACHER_COLUMN: [memo[text] for text in batch[column]]}

    targets = train.select_columns([column]).map(
        embed, batched=True, batch_size=4096, remove_columns=[column], new_fingerprint=fingerprint,
        cache_file_name=str(cache_dir / f"teacher-{fingerprint}.arrow"), load_from_cache_file=True,
        features=datasets.Features({TEACHER_COLUMN: datasets.List(datasets.Value("float32"))}),
        desc=f"teacher embeddings ({teacher.source})")
    return datasets.concatenate_datasets([train, targets], axis=1)


class ProjectedStudent(nn.Module):
    """The student's sentence embedding (its pooling) through a linear projection to the teacher's width, which the
    saved folder carries as a sentence-transformers `Dense` module (identity activation). It gives that embedding as
    `pooler_output` (`produces_sentence_embedding`), so it is embedded with `pooling=None`."""

    produces_sentence_embedding = True

    def __init__(self, encoder: nn.Module, width: int, teacher_width: int, pooling: str | None):
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.projection = nn.Linear(width, teacher_width)
        self.config = encoder.config

    def forward(self, input_ids, attention_mask, **kwargs):
        pooled = sentence_embeddings(self.encoder, {"input_ids": input_ids, "attention_mask": attention_mask},
                                     self.pooling)
        return BaseModelOutputWithPooling(pooler_output=self.projection(pooled))

    def save_dense(self, folder: Path) -> dict:
        """Write the projection as sentence-transformers' `Dense` module (identity activation) in the folder
        `DENSE_FOLDER` of `folder`; returns its modules.json entry."""
        from sentence_transformers.base.modules import Dense

        weight, bias = self.projection.weight.detach().float().cpu(), self.projection.bias.detach().float().cpu()
        dense = Dense(weight.shape[1], weight.shape[0], activation_function=nn.Identity(), init_weight=weight,
                      init_bias=bias)
        (folder / DENSE_FOLDER).mkdir(parents=True, exist_ok=True)
        dense.save(str(folder / DENSE_FOLDER))
        return {"name": DENSE_FOLDER.split("_")[0], "path": DENSE_FOLDER, "type": f"{Dense.__module__}.Dense"}


@dataclass
class TeacherTargetCollator(ParallelPairCollator):
    """`ParallelPairCollator` batches with the teacher's pivot embeddings (`teacher_embeddings`, one row per pair)."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["teacher_embeddings"] = torch.tensor(np.array([f[TEACHER_COLUMN] for f in features]),
                                                   dtype=torch.float32)
        return batch


class DistillationTrainer(LengthGroupingMixin, LossTermLoggingMixin, SuiteEvaluationMixin, Trainer):
    """Trains a sentence encoder on `TeacherTargetCollator` batches: the student embeds both sides of each pair and
    fits them to the cached teacher embedding of the pivot (`distillation_loss`), on the leading dimensions of
    `matryoshka_dims` when set, after scaling them to unit length when `normalize` (a teacher that normalizes: else
    the MSE is spent on the scale of the student's embeddings, and a new student collapses to a near-constant one).
    Logs `pivot_loss` and `other_loss`. The student is embedded with `pooling` (None for
    a `ProjectedStudent`, which pools itself)."""

    def __init__(self, model, args: EMATrainingArguments, pivot_weight: float = 1.0, other_weight: float = 1.0,
                 normalize: bool = False, **kwargs):
        super().__init__(model=model, args=args, **kwargs)
        self.pivot_weight, self.other_weight, self.normalize = pivot_weight, other_weight, normalize
        self.pooling = None if isinstance(model, ProjectedStudent) else args.pooling

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = inputs["teacher_embeddings"]
        embeddings = sentence_embeddings(model, {"input_ids": inputs["input_ids"],
                                                 "attention_mask": inputs["attention_mask"]}, self.pooling)
        if self.normalize:  # the teacher's embeddings are unit vectors: the student's are fitted as unit vectors
            embeddings = F.normalize(embeddings.float(), dim=-1)
        pivot, other = PairLayout.split(embeddings)
        if teacher.shape[-1] != other.shape[-1]:
            raise ValueError(f"The cached teacher embeddings have {teacher.shape[-1]} dims, the student's "
                             f"{other.shape[-1]}: project the student to the teacher's width (ProjectedStudent).")
        loss, terms = matryoshka_loss(
            lambda p, o, t: distillation_loss(p, o, t, self.pivot_weight, self.other_weight),
            [pivot, other, teacher], self.args.matryoshka_dims, self.args.matryoshka_weights)
        self.record_loss_terms(terms)
        return (loss, {"student": other, "teacher": teacher}) if return_outputs else loss
