"""Run by tests/test_resume.py: `scripts/train.py` with its arguments, killed by SIGKILL (no clean-up, as a crash or
an out-of-memory kill would leave it) at the end of training step `DIE_AT_STEP`, after a checkpoint was written."""

import os
import signal
import sys

from transformers import TrainerCallback

from trainers.cli import train
from trainers.recipes.ems import EMSRecipe


class DieAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


make_trainer = EMSRecipe.make_trainer


def make_dying_trainer(self, *args, **kwargs):
    trainer = make_trainer(self, *args, **kwargs)
    trainer.add_callback(DieAtStep(int(os.environ["DIE_AT_STEP"])))
    return trainer


if __name__ == "__main__":
    EMSRecipe.make_trainer = make_dying_trainer
    train(sys.argv[1:])
