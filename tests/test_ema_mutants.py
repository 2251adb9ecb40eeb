"""Cases for the EMA trainer (`trainers/recipes/ema_alignment/trainer.py`) that the mutation run
(benchmarks/results/mutation_report.md) found missing: the bounds of the schedule and of the settings, which steps
update the teacher and with which τ, what is logged, the teacher's own state (saved, restored, refused) and the
checks on the student. No training run: each piece is called directly and checked against a hand computation."""

import math

import datasets
import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, TrainingArguments

from modeling_ems import EMSConfig, EMSForSequenceClassification, EMSModel
from trainers.collators import ParallelPairCollator
from trainers.encoding import sentence_embeddings
from trainers.recipes.ema_alignment.trainer import (
    TEACHER_FILE,
    EMATeacher,
    EMATeacherTrainer,
    EMATrainingArguments,
    add_lora,
    check_encoder,
    ema_tau,
)
from trainers.tokenizer import tokenizer_languages


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def encoder(tokenizer) -> EMSModel:
    torch.manual_seed(0)
    return EMSModel(EMSConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=32, language_embedding_size=4,
                              contrastive_projection_size=8, languages=tokenizer_languages(tokenizer),
                              pad_token_id=tokenizer.pad_token_id))


def trainer_for(tmp_path, tokenizer, pairs, model=None, **arguments) -> EMATeacherTrainer:
    options = dict(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=4, max_steps=4,
                   tau_base=0.6, report_to="none", disable_tqdm=True, save_strategy="no")
    return EMATeacherTrainer(model=model if model is not None else encoder(tokenizer),
                             args=EMATrainingArguments(**{**options, **arguments}),
                             train_dataset=datasets.Dataset.from_list(pairs[:8]),
                             data_collator=ParallelPairCollator(tokenizer, 32))


def shift_student(model: nn.Module, by: float) -> dict[str, torch.Tensor]:
    """Move every trainable parameter by `by` (an optimiser step stand-in); returns the new values."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(by)
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_teacher(teacher: EMATeacher, expected: dict[str, torch.Tensor]) -> None:
    """The teacher holds exactly `expected`: the same names, bit-identical values."""
    state = teacher.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, expected[name]), name


# --- the schedule and the settings at their bounds ----------------------------------------------------------------


@pytest.mark.parametrize("step, total_steps, tau_base, expected", [
    (0, 4, 0.0, 0.0),  # tau_base 0 is allowed: the teacher copies the student at k = 0
    (1, 4, 0.0, 1 - (math.cos(math.pi / 4) + 1) / 2),
    (3, 4, 1.0, 1.0),  # tau_base 1: a frozen teacher
    (1, 1, 0.5, 1.0),  # K = 1 and k = K are allowed
])
def test_tau_schedule_at_its_bounds_by_hand(step, total_steps, tau_base, expected):
    assert ema_tau(step, total_steps, tau_base) == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("step, total_steps, tau_base, message", [
    (0, 4, -0.1, r"tau_base=-0\.1 is outside \[0, 1\]; use a decay rate such as the paper's 0\.99999\."),
    (-1, 4, 0.5, r"step=-1 is outside \[0, K=4\]; pass the 0-based index of the current step\."),
    (0, 0, 0.5, r"total_steps=0: the schedule needs K >= 1; pass the run's max_steps\."),
])
def test_tau_schedule_past_its_bounds_is_refused(step, total_steps, tau_base, message):
    with pytest.raises(ValueError, match=message):
        ema_tau(step, total_steps, tau_base)


@pytest.mark.parametrize("setting, value", [("tau_base", 0.0), ("tau_base", 1.0), ("teacher_update_every", 1)])
def test_training_arguments_take_tau_base_in_0_1_and_an_update_every_n_of_at_least_1(tmp_path, setting, value):
    assert getattr(EMATrainingArguments(output_dir=str(tmp_path), report_to="none", **{setting: value}),
                   setting) == value


@pytest.mark.parametrize("setting, value, message", [
    ("tau_base", -0.5, r"tau_base=-0\.5 is outside \[0, 1\]; use a decay rate such as the paper's 0\.99999\."),
    ("teacher_update_every", 0, r"teacher_update_every=0: update the teacher every n >= 1 steps, or set "
                                r"frozen_teacher=True to never update it\."),
])
def test_training_arguments_past_their_bounds_are_refused(tmp_path, setting, value, message):
    with pytest.raises(ValueError, match=message):
        EMATrainingArguments(output_dir=str(tmp_path), report_to="none", **{setting: value})


# --- which steps update the teacher, with which τ, and what is logged ---------------------------------------------


@pytest.mark.parametrize("settings, global_step, tau", [
    # an update step: ξ ← τ ξ + (1 − τ) θ with τ of the step just taken, k = 1 of K = 4 with tau_base 0.6
    ({"teacher_update_every": 2}, 2, 1 - 0.4 * (math.cos(math.pi / 4) + 1) / 2),
    ({"teacher_update_every": 2}, 1, None),  # not a multiple of 2: nothing moves
    ({"frozen_teacher": True}, 2, None),  # a frozen teacher never moves
], ids=["update step", "between updates", "frozen"])
def test_update_teacher_is_eq_2_with_the_tau_of_the_step_just_taken(tmp_path, tokenizer, small_pairs, settings,
                                                                     global_step, tau):
    trainer = trainer_for(tmp_path, tokenizer, small_pairs, **settings)
    trainer.state.max_steps, trainer.state.global_step = 4, global_step
    initial = {name: tensor.clone() for name, tensor in trainer.ema_teacher.state_dict().items()}
    student = shift_student(trainer.model, 0.5)
    trainer.update_teacher()
    if tau is None:
        assert_teacher(trainer.ema_teacher, initial)
        return
    assert trainer.current_tau() == pytest.approx(tau)
    for name, tensor in trainer.ema_teacher.state_dict().items():
        torch.testing.assert_close(tensor, tau * initial[name] + (1 - tau) * student[name], msg=name)


@pytest.mark.parametrize("settings, logs, tau", [
    ({}, {"loss": 1.0}, 1 - 0.4 * (math.cos(math.pi / 2) + 1) / 2),  # k = 2 of K = 4: 0.8
    ({}, {"eval_loss": 1.0}, None),  # beside the loss only
    ({"frozen_teacher": True}, {"loss": 1.0}, None),  # a frozen teacher has no τ
], ids=["training loss", "evaluation", "frozen"])
def test_tau_is_logged_beside_the_loss_of_a_moving_teacher_only(tmp_path, tokenizer, small_pairs, settings, logs,
                                                                tau):
    trainer = trainer_for(tmp_path, tokenizer, small_pairs, **settings)
    trainer.state.max_steps, trainer.state.global_step = 4, 3
    trainer.log(logs := dict(logs))
    assert logs.get("ema_tau") == (None if tau is None else pytest.approx(tau))


def test_a_replaced_student_is_refused_at_the_update(tmp_path, tokenizer, small_pairs):
    trainer = trainer_for(tmp_path, tokenizer, small_pairs)
    trainer.state.max_steps, trainer.state.global_step = 4, 1
    trainer.model_wrapped = trainer.model = encoder(tokenizer)
    with pytest.raises(RuntimeError, match=r"The unwrapped model \(EMSModel\) is not the student the EMA teacher was "
                                           r"built from; the model must not be replaced after the trainer is built\."):
        trainer.update_teacher()


def test_compute_loss_without_outputs_is_the_loss_alone(tmp_path, tokenizer, small_pairs):
    trainer = trainer_for(tmp_path, tokenizer, small_pairs)
    batch = ParallelPairCollator(tokenizer, 32)(small_pairs[:3])
    trainer.model.eval()  # no dropout: the student's side is deterministic
    loss = trainer.compute_loss(trainer.model, batch)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    pivot = {key: batch[key][:3] for key in ("input_ids", "attention_mask")}
    other = {key: batch[key][3:] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():  # teacher = student at the start, so both sides are the student's embeddings
        expected = ((sentence_embeddings(trainer.model, other) - sentence_embeddings(trainer.model, pivot)) ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected)


# --- the teacher's own state ---------------------------------------------------------------------------------------


def test_the_teacher_is_a_float32_copy_of_the_trainable_parameters_only(tokenizer):
    student = encoder(tokenizer).to(torch.bfloat16)
    student.embeddings.word_embeddings.weight.requires_grad_(False)
    teacher = EMATeacher(student)
    trainable = {name: p for name, p in student.named_parameters() if p.requires_grad}
    assert teacher.state_dict().keys() == trainable.keys()
    for name, parameter in trainable.items():
        assert teacher.weights[name].dtype == torch.float32
        torch.testing.assert_close(teacher.weights[name], parameter.detach().float(), rtol=0, atol=0)
        assert teacher.weights[name].data_ptr() != parameter.data_ptr()
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(ValueError, match=r"EMSModel has no trainable parameter, so the teacher has nothing to average; "
                                         r"unfreeze the student \(or add LoRA adapters with add_lora\)\."):
        EMATeacher(student)


def test_the_teacher_restores_a_saved_state_and_refuses_another_students(tmp_path, tokenizer):
    student = encoder(tokenizer)
    teacher = EMATeacher(student)
    saved = {name: torch.full_like(tensor, 0.25) for name, tensor in teacher.state_dict().items()}
    teacher.load_state_dict(saved)
    assert_teacher(teacher, saved)
    name = next(iter(saved))
    with pytest.raises(ValueError, match=rf"The saved teacher does not fit this student: it lacks \['{name}'\] and has "
                                         r"extra \['other'\]\. Resume with the student \(and LoRA config\) the "
                                         r"checkpoint was trained with\."):
        teacher.load_state_dict({**{k: v for k, v in saved.items() if k != name}, "other": torch.zeros(1)})
    shape = tuple(saved[name].shape)
    with pytest.raises(ValueError, match=rf"The saved teacher's {name} has shape \(3,\), the student's "
                                         rf"{re_shape(shape)}; resume with the model the checkpoint was "
                                         r"trained with\."):
        teacher.load_state_dict({**saved, name: torch.zeros(3)})
    lora = add_lora(encoder(tokenizer), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"is not the student this teacher was built from: its trainable parameters "
                                         r"lack \[.*\] and add \[.*lora.*\]\. Pass the same \(unwrapped\) student\."):
        teacher.update(lora, 0.5)


def re_shape(shape: tuple) -> str:
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_a_checkpoint_holds_the_teacher_and_resuming_reads_it_back(tmp_path, tokenizer, small_pairs):
    trainer = trainer_for(tmp_path, tokenizer, small_pairs)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    trainer._save_optimizer_and_scheduler(str(checkpoint))
    saved = load_file(checkpoint / TEACHER_FILE)
    assert_teacher(trainer.ema_teacher, saved)

    halves = {name: torch.full_like(tensor, 0.5) for name, tensor in saved.items()}
    save_file(halves, checkpoint / TEACHER_FILE)
    resumed = trainer_for(tmp_path, tokenizer, small_pairs)
    resumed.create_optimizer_and_scheduler(num_training_steps=4)
    resumed._load_optimizer_and_scheduler(None)  # a fresh start reads nothing
    assert not any(torch.equal(tensor, halves[name]) for name, tensor in resumed.ema_teacher.state_dict().items())
    resumed._load_optimizer_and_scheduler(str(checkpoint))
    assert_teacher(resumed.ema_teacher, halves)
    (checkpoint / TEACHER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{checkpoint} has no {TEACHER_FILE}: it was not saved by "
                                                r"EMATeacherTrainer \(or with save_only_model\), so the teacher cannot "
                                                r"be restored; resume from a checkpoint of this run, or start over\."):
        resumed._load_optimizer_and_scheduler(str(checkpoint))


# --- the trainer's checks on its arguments and its student ---------------------------------------------------------


def test_the_trainer_refuses_other_arguments_and_model_init(tmp_path, tokenizer, small_pairs):
    with pytest.raises(TypeError, match=r"EMATeacherTrainer takes EMATrainingArguments, got TrainingArguments\."):
        EMATeacherTrainer(model=encoder(tokenizer), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    with pytest.raises(ValueError, match=r"model_init builds the student inside train\(\), after the teacher was built "
                                         r"from it: pass model= instead\."):
        EMATeacherTrainer(model=encoder(tokenizer), model_init=lambda: encoder(tokenizer),
                          args=EMATrainingArguments(output_dir=str(tmp_path), report_to="none"))


def test_check_encoder_keeps_the_students_mode_and_looks_inside_peft(tokenizer):
    student = encoder(tokenizer)
    for training in (True, False):
        student.train(training)
        check_encoder(student)
        assert student.training is training
    lora = add_lora(encoder(tokenizer), LoraConfig(r=2, target_modules=["q_proj"]))
    check_encoder(lora)  # a peft student is judged by its base model
    config = encoder(tokenizer).config
    head = add_lora(EMSForSequenceClassification(config), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"The student is EMSForSequenceClassification, a head class around the "
                                         r"encoder EMSModel; the alignment loss trains the encoder alone: pass "
                                         r"model\.ems or AutoModel\.from_pretrained\(\.\.\.\)\."):
        check_encoder(head)


def test_lora_on_no_module_names_the_linear_layers(tokenizer):
    with pytest.raises(ValueError, match=r"LoRA target_modules=\{'query'\} matches no module of EMSModel, whose "
                                         r"linear layers are \[.*'q_proj'.*\]: target some of them, e\.g\. "
                                         r"\['q_proj', 'v_proj'\] for EMSModel, \['query', 'value'\] for BERT\."):
        add_lora(encoder(tokenizer), LoraConfig(r=2, target_modules=["query"]))
