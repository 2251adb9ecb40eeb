"""Evaluation suites during training, through `Trainer.evaluate`: the metrics are logged like the loss (log_history,
TensorBoard), select the best checkpoint, and come out the same on every process."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.config import EvaluationSettings
from trainers.evaluation.suite import load_suite
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.ems.trainer import EMSTrainer, EMSTrainingArguments

from .conftest import torchrun, write_jsonl

TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "max_position_embeddings": 32, "language_embedding_size": 8, "contrastive_projection_size": 16,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def write_dev_suite(tmp_path, heldout_pairs, limit=30) -> Path:
    """Retrieval on held-out pairs, the model's languages, `limit` pairs each."""
    pairs = write_jsonl(tmp_path / "dev.jsonl", heldout_pairs)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_file: {pairs}, languages: model, limit: {limit}}}\n")
    return suite


@pytest.fixture
def suite_run(tmp_path, small_pairs, heldout_pairs, tokenizer_dir):
    """A real 30-step EMS run of a tiny model evaluating its suite every 10 steps, reported to TensorBoard, keeping
    the checkpoint of the LOWEST average P@1 (greater_is_better: false), so that the best checkpoint is not simply
    the last one."""
    raw = {
        "recipe": "ems",
        "model": TINY_MODEL,
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:1200])),
                 "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs)), "out_of_domain": "debian"},
        "training": {"per_device_train_batch_size": 16, "max_steps": 30, "learning_rate": 0.003, "warmup_steps": 3,
                     "logging_steps": 10, "save_steps": 10, "eval_strategy": "steps", "eval_steps": 10,
                     "per_device_eval_batch_size": 64, "metric_for_best_model": "dev_average_p@1",
                     "greater_is_better": False, "load_best_model_at_end": True, "report_to": "tensorboard",
                     "seed": 0, "disable_tqdm": True},
        "evaluation": {"suite": str(write_dev_suite(tmp_path, heldout_pairs))},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    output_dir = tmp_path / "run"
    run_recipe(load_run_config(path), output_dir)
    return output_dir


def test_suite_metrics_go_through_the_trainer_log_tensorboard_and_best_checkpoint(suite_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    state = json.loads((suite_run / "checkpoint-30" / "trainer_state.json").read_text())
    history = state["log_history"]
    evaluations = [entry for entry in history if "eval_dev_average_p@1" in entry]
    assert [entry["step"] for entry in evaluations] == [10, 20, 30], history
    for entry in evaluations:  # one Trainer.log call per evaluation: every language, the average, the run time
        per_language = [entry[f"eval_dev_en-{code}_p@1"] for code in ("de", "fr", "ja", "ru")]
        assert entry["eval_dev_average_p@1"] == pytest.approx(sum(per_language) / 4)
        assert "eval_runtime" in entry and "epoch" in entry and "loss" not in entry
    assert [entry["step"] for entry in history if "loss" in entry] == [10, 20, 30]

    # TensorBoard got the same numbers (`eval_` becomes the `eval/` group)
    (events,) = {path.parent for path in (suite_run / "runs").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = accumulator.Scalars("eval/dev_average_p@1")
    assert [event.step for event in scalars] == [10, 20, 30]
    assert [event.value for event in scalars] == pytest.approx([e["eval_dev_average_p@1"] for e in evaluations])
    assert "eval/dev_en-de_p@1" in accumulator.Tags()["scalars"] and "train/loss" in accumulator.Tags()["scalars"]

    # the Trainer selected the checkpoint of the lowest average P@1 and loaded it at the end
    values = [entry["eval_dev_average_p@1"] for entry in evaluations]
    best_step = evaluations[values.index(min(values))]["step"]
    assert state["best_metric"] == min(values) and state["best_global_step"] == best_step, values
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    final = load_file(suite_run / "model.safetensors")
    best = load_file(suite_run / f"checkpoint-{best_step}" / "model.safetensors")
    assert final.keys() == best.keys() and all((final[name] == best[name]).all() for name in final)
    if best_step != 30:
        last = load_file(suite_run / "checkpoint-30" / "model.safetensors")
        assert any((final[name] != last[name]).any() for name in final)


def tiny_trainer(tmp_path, tokenizer_dir, **arguments) -> EMSTrainer:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = EMSConfig(vocab_size=len(tokenizer), languages=["de", "en", "fr", "ja", "ru"],
                       pad_token_id=tokenizer.pad_token_id, **TINY_MODEL)
    args = EMSTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **arguments)
    return EMSTrainer(model=EMSForPreTraining(config), args=args, train_dataset=[], processing_class=tokenizer)


def test_evaluate_returns_and_logs_the_suite_metrics(tmp_path, tokenizer_dir, heldout_pairs):
    trainer = tiny_trainer(tmp_path, tokenizer_dir, eval_strategy="steps", eval_steps=5)
    assert trainer.eval_dataset is None  # no eval dataset needed: the suite is the evaluation
    evaluators = load_suite(write_dev_suite(tmp_path, heldout_pairs, limit=20), ["de", "fr"])
    trainer.set_evaluation_suite(evaluators)
    metrics = trainer.evaluate()
    assert set(metrics) == {"eval_dev_en-de_p@1", "eval_dev_en-de_p@1_src2tgt", "eval_dev_en-de_p@1_tgt2src",
                            "eval_dev_en-fr_p@1", "eval_dev_en-fr_p@1_src2tgt", "eval_dev_en-fr_p@1_tgt2src",
                            "eval_dev_average_p@1", "eval_dev_average_p@1_src2tgt", "eval_dev_average_p@1_tgt2src",
                            "eval_runtime", "epoch"}
    assert trainer.state.log_history == [{**metrics, "step": 0}]
    assert trainer.model.training  # evaluation put the model back in training mode


def test_suite_and_eval_strategy_must_agree(tmp_path, tokenizer_dir, heldout_pairs):
    evaluators = load_suite(write_dev_suite(tmp_path, heldout_pairs, limit=5), ["de"])
    trainer = tiny_trainer(tmp_path, tokenizer_dir)  # eval_strategy "no"
    with pytest.raises(ValueError, match="eval_strategy is 'no', so it would never run: set .* eval_strategy"):
        trainer.set_evaluation_suite(evaluators)
    trainer = tiny_trainer(tmp_path, tokenizer_dir, eval_strategy="steps", eval_steps=5)
    with pytest.raises(ValueError, match="eval_strategy is 'steps' but EMSTrainer has nothing to evaluate with"):
        trainer.train()
    with pytest.raises(ValueError, match="evaluation.eval_steps=100: .* training.eval_strategy: steps and "
                                         "training.eval_steps: 100"):
        EvaluationSettings(eval_steps=100)
    assert vars(EvaluationSettings(suite="s.yaml")) == {"suite": "s.yaml"}  # nothing else in training_config.yaml


@pytest.mark.slow
def test_two_processes_return_the_main_process_metrics(tmp_path, tokenizer_dir, heldout_pairs):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([[row["src"], row["tgt"]] for row in heldout_pairs if row["tgt_lang"] == "de"][:30]))
    torchrun("distributed_suite_evaluation.py", str(tokenizer_dir), str(pairs), str(tmp_path / "out"))
    stdout = "".join((tmp_path / "out" / f"rank{rank}.log").read_text() for rank in (0, 1))  # each rank's own file
    lines = stdout.splitlines()
    assert lines.count("probe ran on rank 0") == 1 and "probe ran on rank 1" not in lines, stdout
    metrics = {line[:6]: json.loads(line.split("metrics ", 1)[1]) for line in lines if " metrics " in line}
    assert set(metrics) == {"rank 0", "rank 1"} and metrics["rank 0"] == metrics["rank 1"], stdout
    assert metrics["rank 1"]["eval_probe_rank"] == 0.0 and 0 <= metrics["rank 1"]["eval_dev_en-de_p@1"] <= 1
    for rank in (0, 1):  # a failure on the main process reaches the waiting one instead of hanging it
        assert (f"rank {rank}: raised Evaluating the suite on the main process failed: RuntimeError: the main "
                "process lost its disk") in lines, stdout
