"""Run by tests/test_resume.py: `scripts/train.py` with its arguments, killed by SIGKILL (no clean-up, as a crash or
an out-of-memory kill would leave it) at the end of training step `DIE_AT_STEP`, after a checkpoint was written."""

import os
import sys

from tests.dying import DieAtStep
from trainers.cli import train
from trainers.recipes.ems import EMSRecipe

make_trainer = EMSRecipe.make_trainer


def make_dying_trainer(self, *args, **kwargs):
    trainer = make_trainer(self, *args, **kwargs)
    trainer.add_callback(DieAtStep(int(os.environ["DIE_AT_STEP"])))
    return trainer


if __name__ == "__main__":
    EMSRecipe.make_trainer = make_dying_trainer
    train(sys.argv[1:])
