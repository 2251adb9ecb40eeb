"""What several nodes must agree on: the checkpoint to resume from (`resume_checkpoint`), on 2 real processes."""

import pytest

from .conftest import torchrun


def checkpoint(folder, step):
    (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")


@pytest.mark.slow
def test_every_process_resumes_from_the_main_process_s_checkpoint_or_all_raise(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    checkpoint(node0, 20)
    checkpoint(node1, 10)  # an older copy: resuming from it would train other steps than node 0
    stdout = torchrun("distributed_resume.py", str(node0), str(node1))
    for rank in (0, 1):
        assert (f"rank {rank}: error: The main process resumes from checkpoint-20, which process 1 of 2 cannot see "
                f"in its {node1 if rank else node0}") in stdout, stdout
    checkpoint(node1, 20)  # the same checkpoint on both nodes: both resume from it
    stdout = torchrun("distributed_resume.py", str(node0), str(node1))
    assert f"rank 0: resumes from {node0 / 'checkpoint-20'}" in stdout and (
        f"rank 1: resumes from {node1 / 'checkpoint-20'}" in stdout), stdout
