"""Length-grouped batches read their lengths once: the sampler gets a list, not datasets' lazy `Column` (one Arrow
slice per item: minutes at 2M pairs before the first step, measured in benchmarks/bench_first_step.py)."""

import datasets
import pytest
import torch
from datasets.arrow_dataset import Column
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from trainers.length_grouping import LengthGroupingMixin
from trainers.recipes.ema_alignment.distillation import DistillationTrainer
from trainers.recipes.ema_alignment.stage1 import SimilarityTrainer
from trainers.recipes.ema_alignment.trainer import EMATeacherTrainer
from trainers.recipes.ems.trainer import EMSTrainer
from trainers.recipes.multitask.trainer import MultiTaskTrainer


class GroupingTrainer(LengthGroupingMixin, Trainer):
    pass


def sampler_of(trainer_class, tmp_path, lengths):
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, train_sampling_strategy="group_by_length")
    dataset = datasets.Dataset.from_dict({"length": lengths})
    return trainer_class(model=torch.nn.Linear(1, 1), args=args, train_dataset=dataset)._get_train_sampler()


def test_the_sampler_reads_the_length_column_once_as_a_list(tmp_path, monkeypatch):
    lengths = [(7 * index) % 23 + 1 for index in range(200)]
    plain = sampler_of(Trainer, tmp_path, lengths)
    grouped = sampler_of(GroupingTrainer, tmp_path, lengths)
    assert isinstance(plain.lengths, Column)  # what transformers gives the sampler, read item by item
    assert isinstance(grouped, LengthGroupedSampler) and grouped.lengths == lengths
    reads = []
    original = Column.__getitem__
    monkeypatch.setattr(Column, "__getitem__", lambda self, key: reads.append(key) or original(self, key))
    generator = torch.Generator().manual_seed(0)
    plain.generator, grouped.generator = generator, torch.Generator().manual_seed(0)
    assert list(grouped) == list(plain)  # the same batches
    assert len(reads) >= len(lengths)  # the plain sampler: at least one Arrow read per item
    reads.clear()
    list(grouped)
    assert reads == []


@pytest.mark.parametrize("trainer_class", [EMSTrainer, MultiTaskTrainer, EMATeacherTrainer, DistillationTrainer,
                                           SimilarityTrainer])
def test_every_trainer_of_the_package_groups_lengths_from_a_list(trainer_class):
    assert issubclass(trainer_class, LengthGroupingMixin)
    assert trainer_class.__mro__.index(LengthGroupingMixin) < trainer_class.__mro__.index(Trainer)
