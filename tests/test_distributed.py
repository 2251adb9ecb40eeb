import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_process_contrastive_loss_and_gradients_equal_one_process_on_the_whole_batch():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "distributed_contrastive.py")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0:" in result.stdout and "rank 1:" in result.stdout, result.stdout
    assert "gradients equal" in result.stdout


@pytest.mark.slow
def test_two_process_full_ems_objective_equals_one_process_on_the_whole_batch():
    """XTR + contrastive (eq. 12) through a DDP-wrapped EMSForPreTraining: 2 processes x b pairs == 1 x 2b."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "distributed_ems.py")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        assert f"rank {rank}: loss" in result.stdout and "gradients of" in result.stdout, result.stdout
