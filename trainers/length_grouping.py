"""Length-grouped batches at any corpus size: `Trainer(train_sampling_strategy="group_by_length")` hands its
`LengthGroupedSampler` the dataset's length column as `datasets` returns it, a lazy `Column`, which the sampler then
reads one item at a time, each read a slice of the Arrow table: minutes at 2M pairs before the first step, and again
every epoch. The mixin reads the column once, in Arrow, into the list the sampler expects."""

from datasets.arrow_dataset import Column
from transformers.trainer_pt_utils import LengthGroupedSampler


class LengthGroupingMixin:
    """Mix into a `transformers.Trainer` subclass (before `Trainer`)."""

    def _get_train_sampler(self, *args, **kwargs):
        sampler = super()._get_train_sampler(*args, **kwargs)
        if isinstance(sampler, LengthGroupedSampler) and isinstance(sampler.lengths, Column):
            sampler.lengths = sampler.lengths[:]  # the whole column in one slice: a list of ints
        return sampler
