import pytest

from .conftest import torchrun


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
