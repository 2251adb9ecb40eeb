"""What the kill-and-resume scripts share: a callback that kills its own process, as a crash or an OOM kill would."""

import os
import signal

from transformers import TrainerCallback


class DieAtStep(TrainerCallback):
    """SIGKILL this process at the end of optimiser step `step` (no clean-up, no final save)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
