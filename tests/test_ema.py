"""EMA-teacher alignment (Ham & Kim, sec. 5.2-5.3): the decay-rate schedule, the loss, the teacher's average of the
student (full, frozen, LoRA), 2 real processes, kill-and-resume, and clear errors for bad input."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, TrainerCallback

from modeling_ems import EMSConfig, EMSForPreTraining, EMSModel
from trainers.collators import ParallelPairCollator
from trainers.encoding import sentence_embeddings
from trainers.losses import ema_alignment_loss
from trainers.recipes.ema_alignment.trainer import (
    TEACHER_FILE,
    EMATeacher,
    EMATeacherTrainer,
    EMATrainingArguments,
    add_lora,
    ema_tau,
)
from trainers.tokenizer import tokenizer_languages

from .conftest import torchrun, write_jsonl

HERE = Path(__file__).resolve().parent
TAU_BASE, STEPS = 0.9, 3


def tiny_encoder(tokenizer, dropout=0.0) -> EMSModel:
    torch.manual_seed(0)
    return EMSModel(EMSConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=32, language_embedding_size=8,
                              contrastive_projection_size=16, languages=tokenizer_languages(tokenizer),
                              pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=dropout,
                              attention_probs_dropout_prob=dropout))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def make_trainer(tmp_path, tokenizer, pairs, model, **arguments) -> EMATeacherTrainer:
    options = dict(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=4, max_steps=STEPS,
                   learning_rate=0.01, tau_base=TAU_BASE, save_strategy="no", logging_steps=1, report_to="none",
                   disable_tqdm=True, seed=0)
    return EMATeacherTrainer(model=model, args=EMATrainingArguments(**{**options, **arguments}),
                             train_dataset=datasets.Dataset.from_list(pairs[:16]),
                             data_collator=ParallelPairCollator(tokenizer, 32))


class RecordStudent(TrainerCallback):
    """The student's trainable parameters after each optimiser step."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append({n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})


def trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_tau_schedule_hand_values():
    # sec. 5.3: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    assert ema_tau(0, 10, 0.99) == pytest.approx(0.99)  # cos 0 = 1: tau_base
    assert ema_tau(5, 10, 0.99) == pytest.approx(0.995)  # cos(pi / 2) = 0: halfway to 1
    assert ema_tau(10, 10, 0.99) == pytest.approx(1.0)  # cos(pi) = -1: 1
    assert ema_tau(0, 1, 0.99999) == pytest.approx(0.99999)
    with pytest.raises(ValueError, match=r"tau_base=1.5 is outside \[0, 1\].*0.99999"):
        ema_tau(0, 10, 1.5)
    with pytest.raises(ValueError, match="total_steps=0: .*K >= 1.*max_steps"):
        ema_tau(0, 0, 0.99)
    with pytest.raises(ValueError, match=r"step=11 is outside \[0, K=10\]"):
        ema_tau(11, 10, 0.99)


def test_alignment_loss_is_the_mse_and_only_the_student_gets_gradients():
    student = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    loss = ema_alignment_loss(student, teacher)
    assert loss.item() == pytest.approx((1 + 0 + 1 + 4) / 4)  # eq. 1: mean of the squared differences
    loss.backward()
    assert teacher.grad is None
    torch.testing.assert_close(student.grad, 2 * (student - teacher).detach() / 4)
    with pytest.raises(ValueError, match=r"student \(2, 2\) and teacher \(2, 3\)"):
        ema_alignment_loss(student, torch.zeros(2, 3))


@pytest.mark.parametrize("every", [1, 2])
def test_teacher_is_the_hand_computed_average_of_the_student(tmp_path, tokenizer, small_pairs, every):
    model = tiny_encoder(tokenizer)
    initial = trainable(model)
    trainer = make_trainer(tmp_path, tokenizer, small_pairs, model, teacher_update_every=every)
    recorder = RecordStudent(model)
    trainer.add_callback(recorder)
    trainer.train()

    expected = {name: tensor.clone() for name, tensor in initial.items()}  # ξ = θ at the start
    for step, student in enumerate(recorder.steps, start=1):
        if step % every:
            continue
        tau = 1 - (1 - TAU_BASE) * (math.cos(math.pi * (step - 1) / STEPS) + 1) / 2
        for name in expected:
            expected[name] = tau * expected[name] + (1 - tau) * student[name]  # eq. 2
    teacher = trainer.ema_teacher.state_dict()
    assert teacher.keys() == initial.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(teacher[name], tensor, msg=name)
    moved = [name for name in initial if not torch.equal(teacher[name], initial[name])]
    assert len(moved) > len(initial) // 2  # the teacher followed the student, which trained
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(history) == STEPS and all("alignment_loss" in e and "ema_tau" in e for e in history)
    assert history[0]["ema_tau"] == pytest.approx(TAU_BASE)


def test_the_teacher_encodes_the_pivot_and_the_student_its_translation(tmp_path, tokenizer, small_pairs):
    """Eq. 1 is MSE(f_θ(x_lg), f_ξ(x_en)): after a few steps (teacher and student apart), the teacher side of the loss
    is the teacher's weights on the pivot sources and the student side the student's weights on their translations,
    each computed here independently with a copy of the model. Swapping the texts or the weights fails."""
    model = tiny_encoder(tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, small_pairs, model, tau_base=0.5)  # a teacher that moves
    trainer.train()
    pairs = [row for row in small_pairs[:4]]
    batch = ParallelPairCollator(tokenizer, 32)(pairs)
    loss, outputs = trainer.compute_loss(model.eval(), batch, return_outputs=True)

    teacher = copy.deepcopy(model)
    teacher.load_state_dict(trainer.ema_teacher.state_dict(), strict=False)
    assert not torch.equal(trainable(teacher)["layers.0.self_attn.q_proj.weight"],
                           trainable(model)["layers.0.self_attn.q_proj.weight"])  # really apart
    encode = lambda encoder, texts: sentence_embeddings(  # noqa: E731
        encoder, tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt"))
    with torch.no_grad():
        torch.testing.assert_close(outputs["teacher"], encode(teacher, [row["src"] for row in pairs]))
        torch.testing.assert_close(outputs["student"], encode(model, [row["tgt"] for row in pairs]))
        expected = ((outputs["student"] - outputs["teacher"]) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_frozen_teacher_stays_the_initial_student(tmp_path, tokenizer, small_pairs):
    model = tiny_encoder(tokenizer)
    initial = trainable(model)
    trainer = make_trainer(tmp_path, tokenizer, small_pairs, model, frozen_teacher=True)
    trainer.train()
    teacher = trainer.ema_teacher.state_dict()
    for name, tensor in initial.items():
        assert torch.equal(teacher[name], tensor), name
    assert any(not torch.equal(p, initial[n]) for n, p in trainable(model).items())  # while the student trained


def test_lora_teacher_holds_only_the_adapters_and_shares_the_frozen_base(tmp_path, tokenizer, small_pairs):
    student = add_lora(tiny_encoder(tokenizer), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    trainer = make_trainer(tmp_path, tokenizer, small_pairs, student, learning_rate=0.05)
    trainer.train()

    teacher = trainer.ema_teacher.state_dict()
    assert teacher.keys() == trainable(student).keys() and all(".lora_" in name for name in teacher)
    assert sum(t.numel() for t in teacher.values()) == student.get_nb_trainable_parameters()[0]
    for name, tensor in frozen.items():  # the base did not train
        assert torch.equal(dict(student.named_parameters())[name], tensor), name

    # the teacher's forward is the student's module with the averaged adapters in place, then the student again
    batch = ParallelPairCollator(tokenizer, 32)(small_pairs[:4])
    student.eval()
    before = sentence_embeddings(student, batch)
    embedded = trainer.ema_teacher.embed(student, batch)
    torch.testing.assert_close(sentence_embeddings(student, batch), before, rtol=0, atol=0)
    reference = copy.deepcopy(student)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if name in teacher:
                parameter.copy_(teacher[name])
    torch.testing.assert_close(embedded, sentence_embeddings(reference, batch))
    assert not torch.allclose(embedded, before)  # the adapters trained, the teacher lags behind


@pytest.mark.slow
def test_teacher_is_identical_on_two_real_processes(tmp_path, tokenizer_dir, small_pairs):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", small_pairs[:32])
    stdout = torchrun("distributed_ema_teacher.py", str(tokenizer_dir), str(pairs), str(tmp_path / "out"))
    for rank in (0, 1):
        assert f"rank {rank}: teacher is the average of the student, identical on 2 processes" in stdout, stdout


def run_dying(tokenizer_dir, pairs, output_dir, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HERE / "train_ema_then_die.py"), str(tokenizer_dir), str(pairs), str(output_dir)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent), **env},
    )


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses_teacher_and_student(tmp_path, tokenizer_dir, small_pairs):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", small_pairs[:64])
    straight = run_dying(tokenizer_dir, pairs, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    interrupted = tmp_path / "interrupted"
    killed = run_dying(tokenizer_dir, pairs, interrupted, DIE_AT_STEP="3")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = run_dying(tokenizer_dir, pairs, interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint-2" in resumed.stdout

    def logged(output_dir):
        state = json.loads((output_dir / "checkpoint-6" / "trainer_state.json").read_text())
        return [(e["step"], e["loss"], e["alignment_loss"], e["ema_tau"]) for e in state["log_history"] if "loss" in e]

    expected = logged(tmp_path / "straight")
    assert [entry[0] for entry in expected] == list(range(1, 7))
    assert logged(interrupted) == expected  # every step's loss, exactly
    for name in (TEACHER_FILE, "model.safetensors"):
        got = load_file(interrupted / "checkpoint-6" / name)
        reference = load_file(tmp_path / "straight" / "checkpoint-6" / name)
        assert got.keys() == reference.keys(), name
        for key, tensor in reference.items():
            assert torch.equal(got[key], tensor), (name, key)


class NotAnEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)

    def forward(self, input_ids, attention_mask=None):
        return self.embedding(input_ids).sum(dim=1)  # a tensor, no token hidden states


def test_bad_inputs_give_clear_errors(tmp_path, tokenizer, small_pairs, tiny_config):
    with pytest.raises(ValueError, match="NotAnEncoder is not an encoder: .*without last_hidden_state"):
        make_trainer(tmp_path, tokenizer, small_pairs, NotAnEncoder())
    with pytest.raises(ValueError, match="EMSForPreTraining, a head class .*model.ems"):
        make_trainer(tmp_path, tokenizer, small_pairs, EMSForPreTraining(tiny_config))
    with pytest.raises(ValueError, match=r"tau_base=1.5 is outside \[0, 1\]"):
        EMATrainingArguments(output_dir=str(tmp_path), tau_base=1.5)
    model = EMSModel(tiny_config)
    with pytest.raises(ValueError, match=r"tau=-0.1 is outside \[0, 1\]"):
        EMATeacher(model).update(model, -0.1)
    with pytest.raises(ValueError, match="is wrapped .*before accelerator.prepare"):
        EMATeacher(nn.DataParallel(model))
    with pytest.raises(ValueError, match=r"target_modules=\{'query'\} matches no module of EMSModel, .*'q_proj'"):
        add_lora(model, LoraConfig(r=2, target_modules=["query"]))
    pairs = [dict(row) for row in small_pairs[:8]]
    pairs[2]["src"] = "  "
    with pytest.raises(ValueError, match="train_dataset, row 2: column 'src' is '  '"):
        make_trainer(tmp_path, tokenizer, pairs, tiny_encoder(tokenizer))
