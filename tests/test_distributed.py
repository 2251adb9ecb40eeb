import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def torchrun(script: str) -> str:
    """Run `tests/<script>` on 2 real processes (gloo) and return what they printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(HERE / script)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_two_process_contrastive_loss_and_gradients_equal_one_process_on_the_whole_batch():
    stdout = torchrun("distributed_contrastive.py")
    assert "rank 0:" in stdout and "rank 1:" in stdout, stdout
    assert "gradients equal" in stdout


@pytest.mark.slow
def test_two_process_full_ems_objective_equals_one_process_on_the_whole_batch():
    """XTR + contrastive (eq. 12) through a DDP-wrapped EMSForPreTraining: 2 processes x b pairs == 1 x 2b."""
    stdout = torchrun("distributed_ems.py")
    for rank in (0, 1):
        assert f"rank {rank}: loss" in stdout and "gradients of" in stdout, stdout
