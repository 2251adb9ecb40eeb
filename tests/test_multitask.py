import gzip
import json
import math
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import AutoTokenizer, Trainer

from modeling_ems import DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining
from trainers.collators import SidesCollator, TaskCollator
from trainers.recipes.multitask.tasks import nli_task, quick_thought_task, response_task, task_loss, translation_task
from trainers.recipes.multitask.trainer import (
    MultiTaskTrainer,
    MultiTaskTrainingArguments,
    TaskCycleBatchSampler,
    TaskDatasets,
    embedding_parameters,
)

from .conftest import torchrun


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- the task schedule (sec. 3.2) ---

def test_each_step_trains_one_task_in_turn_with_all_its_batches_from_that_task():
    sizes = {"translation": 40, "response": 12, "nli": 9}
    sampler = TaskCycleBatchSampler(sizes, {"translation": 4, "response": 3, "nli": 2}, replicas=2, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == sampler.cycles_per_epoch * 3 * 2
    assert sampler.cycles_per_epoch == 40 // (4 * 2)  # the largest task's pass
    offsets = {"translation": (0, 40), "response": (40, 52), "nli": (52, 61)}
    for step in range(len(batches) // 2):
        task = ["translation", "response", "nli"][step % 3]
        low, high = offsets[task]
        for batch in batches[2 * step : 2 * step + 2]:  # both replicas of the step: the same task
            assert all(low <= index < high for index in batch)
            assert len(batch) == {"translation": 4, "response": 3, "nli": 2}[task]
    # within one pass of a task no row repeats; a small task starts its next pass by itself
    translation = [i for step in range(0, 15, 3) for b in sampler.step_batches(step) for i in b]
    assert len(translation) == len(set(translation)) == 40
    response_pass = [i for step in (1, 4) for b in sampler.step_batches(step) for i in b]
    assert len(set(response_pass)) == 12 and sampler.step_batches(7) != sampler.step_batches(1)


def test_the_schedule_is_a_function_of_seed_epoch_and_step_so_resume_continues_it():
    sizes, batch_sizes = {"a": 30, "b": 20}, {"a": 5, "b": 5}
    first = TaskCycleBatchSampler(sizes, batch_sizes, seed=7)
    first.set_epoch(1)
    again = TaskCycleBatchSampler(sizes, batch_sizes, seed=7)
    again.set_epoch(1)
    assert list(first) == list(again)
    steps = first.cycles_per_epoch * 2
    assert list(first) == [b for step in range(steps, 2 * steps) for b in again.step_batches(step)]
    other = TaskCycleBatchSampler(sizes, batch_sizes, seed=8)
    other.set_epoch(1)
    assert list(other) != list(first)
    # a task reads the same batches alone as among other tasks (offset by the rows before it)
    alone = TaskCycleBatchSampler({"b": 20}, {"b": 5}, seed=7)
    assert [[i + 30 for i in alone.step_batches(k)[0]] for k in range(3)] == [
        first.step_batches(2 * k + 1)[0] for k in range(3)]


def test_a_task_with_too_little_data_for_one_step_is_refused():
    with pytest.raises(ValueError, match=r"The nli task has 3 examples, but one step needs 4 \(2 per batch x 2"):
        TaskCycleBatchSampler({"translation": 40, "nli": 3}, {"translation": 4, "nli": 2}, replicas=2)
    with pytest.raises(ValueError, match=r"no data for \['response'\]"):
        TaskDatasets({"translation": [1, 2], "response": []})


def test_a_grouped_task_draws_each_batch_from_one_language():
    # response rows 0-6 are "de" (7), 7-15 "fr" (9): batches of 3 give 2 + 3 = 5 whole batches a pass, 1 + 0 rows
    # left over; with 2 replicas, 2 steps a pass
    languages = ["de"] * 7 + ["fr"] * 9
    tasks = TaskDatasets({"translation": [{"src": str(i)} for i in range(24)],
                          "response": datasets.Dataset.from_dict({"input": [str(i) for i in range(16)],
                                                                  "lang": languages})})
    groups = tasks.language_groups(["response"])
    assert groups == {"response": [list(range(7)), list(range(7, 16))]}
    sampler = TaskCycleBatchSampler(tasks.sizes(), {"translation": 4, "response": 3}, replicas=2, seed=3,
                                    groups=groups)
    assert sampler.steps_per_pass["response"] == 2
    seen = []
    for step in range(1, 2 * 2 * 5, 2):  # the response steps of five passes
        for batch in sampler.step_batches(step):
            rows = [index - 24 for index in batch]  # response rows follow the 24 translation rows
            assert len(rows) == 3 and len({languages[row] for row in rows}) == 1  # one language a batch
            seen.append(tuple(rows))
    # within one pass no row repeats; over the passes both languages are drawn and the order changes
    first_pass = [row for batch in seen[:4] for row in batch]
    assert len(first_pass) == len(set(first_pass)) == 12
    assert {languages[batch[0]] for batch in seen} == {"de", "fr"} and seen[:4] != seen[4:8]
    ungrouped = TaskCycleBatchSampler(tasks.sizes(), {"translation": 4, "response": 3}, replicas=2, seed=3)
    mixed = [{languages[i - 24] for i in batch} for step in range(1, 40, 2) for batch in ungrouped.step_batches(step)]
    assert any(len(batch) == 2 for batch in mixed)  # without groups, languages mix in a batch
    with pytest.raises(ValueError, match=r"one_language_per_batch: false"):
        tasks.language_groups(["translation"])
    # 16 rows would make 2 batches of 8, but only the 9 "fr" rows make a whole batch of one language
    with pytest.raises(ValueError, match=r"16 examples, but one step needs 16 \(8 per batch in one group"):
        TaskCycleBatchSampler(tasks.sizes(), {"translation": 4, "response": 8}, replicas=2, groups=groups)


def test_task_datasets_rows_carry_their_task():
    tasks = TaskDatasets({"translation": [{"src": "a"}, {"src": "b"}], "nli": [{"premise": "c"}]})
    assert tasks[1] == {"src": "b", "task": "translation"} and tasks[2] == {"premise": "c", "task": "nli"}
    assert tasks.sizes() == {"translation": 2, "nli": 1}


# --- each task's loss by hand (eq. 2, sec. 2.2) ---

def test_task_losses_by_hand():
    e1, e2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    per_row = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-3.0))]  # dot products [2, 0] and [0, 3]
    mean = sum(per_row) / 2
    no_negatives = torch.empty(0, 2)
    translation = SimpleNamespace(task_embeddings=(e1, e2, no_negatives))
    assert task_loss("translation", translation).item() == pytest.approx(mean)
    negatives = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    with_negatives = SimpleNamespace(task_embeddings=(e1, e2, negatives))
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(3) + 1))
                - math.log(math.exp(3) / (math.exp(3) + 3))) / 2
    assert task_loss("translation", with_negatives).item() == pytest.approx(expected)
    assert task_loss("response", SimpleNamespace(task_embeddings=(e1, e2))).item() == pytest.approx(mean)
    # quick-thought: current ranks next and previous; previous = e2 scores like next, so the loss doubles
    quick = SimpleNamespace(task_embeddings=(e2, e1, e2))
    assert task_loss("quick_thought", quick).item() == pytest.approx(2 * mean)
    nli = SimpleNamespace(logits=torch.tensor([[0.0, 0.0, 0.0]]), task_embeddings=None)
    assert task_loss("nli", nli, torch.tensor([2])).item() == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="needs `labels`"):
        task_loss("nli", nli)
    # cosine / T
    cosine = task_loss("response", SimpleNamespace(task_embeddings=(e1, e2)), similarity="cosine", temperature=0.5)
    assert cosine.item() == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_task_losses_mask_rows_of_one_source_and_negatives_equal_to_the_answer(tokenizer_dir):
    """A collated batch of a multi-parallel corpus: rows 0 and 1 translate one source, so each row's only candidate
    left is its own and the loss is 0 (log 1); without the text ids, the other translation counts as a negative."""
    features = [{"src": "the cat", "tgt": "die Katze", "negatives": ["le chien"]},
                {"src": "the cat", "tgt": "le chat", "negatives": ["die Katze"]}]
    batch = SidesCollator(AutoTokenizer.from_pretrained(tokenizer_dir), 16, ("src", "tgt"),
                          negatives_column="negatives")(features)
    ids = batch["text_ids"]
    assert ids[0] == ids[1] and ids[2] == ids[5] and ids[2] != ids[3]  # src, src, tgt, tgt, negative, negative
    e1, e2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # row 1's negative is row 0's answer: masked for row 0; row 0's negative ("le chien") stays for both
    negatives = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    outputs = SimpleNamespace(task_embeddings=(e1, e2, negatives))
    masked = task_loss("translation", outputs, text_ids=ids).item()
    e = math.exp
    expected = (-math.log(e(2) / (e(2) + e(1))) - math.log(e(3) / (e(3) + e(1)))) / 2  # own, then "le chien"
    assert masked == pytest.approx(expected)
    unmasked = (-math.log(e(2) / (e(2) + 1 + e(1) + e(2))) - math.log(e(3) / (e(3) + 1 + e(1) + 1))) / 2
    assert task_loss("translation", outputs).item() == pytest.approx(unmasked)
    # quick-thought: the sides are ranked by their own text ids (here all distinct: nothing masked)
    quick = SimpleNamespace(task_embeddings=(e2, e1, e2))
    assert task_loss("quick_thought", quick, text_ids=torch.arange(6)).item() == pytest.approx(
        task_loss("quick_thought", quick).item())


# --- task data and bad input ---

def test_quick_thought_triples_from_documents_and_an_empty_document_is_refused(tmp_path):
    pages = [{"document": "a.html", "sentences": ["One.", "Two.", "Three.", "Four."]},
             {"document": "b.html", "sentences": ["Alone.", "Pair."]}]
    triples = quick_thought_task(write_jsonl(tmp_path / "docs.jsonl", pages))
    assert triples["previous"] == ["One.", "Two."] and triples["current"] == ["Two.", "Three."]
    assert triples["next"] == ["Three.", "Four."]
    with pytest.raises(ValueError, match=r"document 1 \('empty.html'\) has no sentences"):
        quick_thought_task(write_jsonl(tmp_path / "e.jsonl", [pages[0], {"document": "empty.html", "sentences": []}]))
    with pytest.raises(ValueError, match=r"sentence 1 is ' '"):
        quick_thought_task(write_jsonl(tmp_path / "s.jsonl", [{"document": "x", "sentences": ["a", " ", "b"]}]))


def test_quick_thought_folder_keeps_the_tokenizers_languages(tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    for lang in ("en", "xx"):
        write_jsonl(folder / f"help.{lang}.jsonl.gz",
                    [{"document": "p", "sentences": [f"{lang} {i}" for i in range(5)]}], gz=True)
    assert quick_thought_task(folder, languages=["en", "de"])["current"] == ["en 1", "en 2", "en 3"]
    assert quick_thought_task(folder)["lang"] == ["en"] * 3 + ["xx"] * 3  # each triple keeps its file's language
    with pytest.raises(ValueError, match="quick_thought task has no data"):
        quick_thought_task(folder, languages=["de"])


def test_response_task_filters_languages_and_a_task_with_no_data_is_refused(tmp_path):
    turns = write_jsonl(tmp_path / "chat.jsonl", [{"lang": "en", "input": "Hi", "response": "Hello"},
                                                  {"lang": "fa", "input": "Salam", "response": "Salam!"}])
    assert response_task(turns, languages=["en"])["input"] == ["Hi"]
    assert response_task(turns)["lang"] == ["en", "fa"]
    with pytest.raises(ValueError, match="The response task has no data"):
        response_task(turns, languages=["de"])
    with pytest.raises(ValueError, match=r"response data needs \['input', 'response'\]"):
        response_task(write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}]))


def test_nli_labels_outside_0_1_2_are_refused(tmp_path):
    good = [{"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": 0}]
    assert nli_task(write_jsonl(tmp_path / "nli.jsonl", good))["label"] == [0]
    bad = good + [{"premise": "A dog.", "hypothesis": "No gold.", "label": -1}]
    with pytest.raises(ValueError, match=r"row 1: NLI label -1 is not one of \(0, 1, 2\)"):
        nli_task(write_jsonl(tmp_path / "bad.jsonl", bad))


def test_translation_task_with_hard_negatives(tmp_path):
    rows = [{"src": f"s{i}", "tgt": f"t{i}", "src_lang": "en", "tgt_lang": "de", "negatives": [f"n{i}a", f"n{i}b"]}
            for i in range(3)]
    pairs = translation_task(write_jsonl(tmp_path / "mined.jsonl", rows), hard_negatives=1)
    assert pairs["negatives"] == [["n0a"], ["n1a"], ["n2a"]]
    with pytest.raises(ValueError, match="fewer than hard_negatives=3"):
        translation_task(tmp_path / "mined.jsonl", hard_negatives=3)


def test_sides_collator_lays_out_sides_then_negatives_and_refuses_empty_text(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    collator = TaskCollator({"translation": SidesCollator(tokenizer, 16, ("src", "tgt"), negatives_column="negatives")})
    features = [{"src": "a", "tgt": "b", "negatives": ["c", "d"], "task": "translation"},
                {"src": "e", "tgt": "f", "negatives": ["g", "h"], "task": "translation"}]
    batch = collator(features)
    expected = tokenizer(["a", "e", "b", "f", "c", "d", "g", "h"], padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(batch["input_ids"], expected) and batch["num_examples"] == 2 and batch["task"] == "translation"
    with pytest.raises(ValueError, match="every side needs a non-empty text"):
        collator([{**features[0], "tgt": ""}])
    with pytest.raises(ValueError, match="mixes or names unknown tasks"):
        collator([features[0], {**features[1], "task": "nli"}])


def test_the_trainer_refuses_tasks_the_model_has_no_head_for(tmp_path):
    model = DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        head_intermediate_size=4, nli_hidden_size=4, tasks=["translation"]))
    data = TaskDatasets({"translation": datasets.Dataset.from_dict({"src": ["a"], "tgt": ["b"]}),
                         "nli": datasets.Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [0]})})
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"no head for the tasks \['nli'\]: it was built with tasks=\['translation'\]"):
        MultiTaskTrainer(model=model, args=args, train_dataset=data, data_collator=TaskCollator({}))


def test_several_gpus_in_one_process_are_refused_with_the_command_to_use(tmp_path, monkeypatch):
    """transformers wraps the model in nn.DataParallel when one process sees several GPUs; its split of a task batch
    along rows would put a translation batch's hard negatives beside the wrong sources."""
    monkeypatch.setattr(MultiTaskTrainingArguments, "n_gpu", property(lambda self: 2))
    with pytest.raises(ValueError, match=r"sees 2 GPUs.*nn.DataParallel.*accelerate launch --multi_gpu "
                                         r"--num_processes 2 scripts/train.py"):
        multiplier_trainer(tmp_path)


# --- the embedding update multiplier (sec. 3.2) ---

def multiplier_trainer(tmp_path, input_type="subword", **arguments) -> MultiTaskTrainer:
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        head_intermediate_size=4, nli_hidden_size=4, ngram_buckets=11, max_ngrams_per_token=4,
        input_type=input_type, tasks=["translation"]))
    data = TaskDatasets({"translation": datasets.Dataset.from_dict({"src": ["a"], "tgt": ["b"]})})
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                      **{"learning_rate": 1e-3, "weight_decay": 0.01, **arguments})
    return MultiTaskTrainer(model=model, args=args, train_dataset=data, data_collator=TaskCollator({}))


def group_names(trainer, optimizer) -> list[tuple[set[str], float]]:
    """Each optimizer group's parameter names and weight decay."""
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    return [({names[id(p)] for p in group["params"]}, group["weight_decay"]) for group in optimizer.param_groups]


@pytest.mark.parametrize("input_type", ["subword", "char_ngram"])
def test_the_embeddings_get_the_multiplier_times_the_learning_rate_through_the_schedule(tmp_path, input_type):
    plain = multiplier_trainer(tmp_path, input_type)
    trainer = multiplier_trainer(tmp_path, input_type, embedding_update_multiplier=100.0, warmup_steps=2)
    model = trainer.model
    embeddings = {id(p) for p in embedding_parameters(model)}
    expected = {id(model.encoder.embeddings.word_embeddings.weight)}
    if input_type == "char_ngram":  # the n-gram embeddings, not the n-gram projection
        expected.add(id(model.encoder.embeddings.word_embeddings.ngram_embeddings.weight))
    assert embeddings == expected
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    groups = trainer.optimizer.param_groups
    assert [{id(p) for p in g["params"]} <= embeddings for g in groups] == [False, False, True]  # embeddings last
    assert {id(p) for p in groups[2]["params"]} == embeddings
    assert [group["lr"] for group in groups] == [0.0, 0.0, 0.0]  # warm-up starts at 0
    # the weight-decay groups of Trainer.create_optimizer, the embeddings (which decay) split off into their own
    plain_groups, split = group_names(plain, plain.create_optimizer()), group_names(trainer, trainer.optimizer)
    names = {name for name, p in model.named_parameters() if id(p) in embeddings}
    assert split == [(plain_groups[0][0] - names, 0.01), plain_groups[1], (names, 0.01)]
    for _ in range(4):  # LambdaLR scales each group's own initial rate: warm-up and decay keep the ratio
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        low, _, high = (group["lr"] for group in groups)
        assert low > 0 and high == pytest.approx(100 * low) and groups[1]["lr"] == low
        assert trainer._get_learning_rate() == low  # the logged rate is the base rate


def test_with_sgd_one_step_moves_the_embeddings_the_multiplier_times_as_far(tmp_path):
    trainer = multiplier_trainer(tmp_path, "char_ngram", embedding_update_multiplier=100.0, optim="sgd",
                                 weight_decay=0.0)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    model = trainer.model
    embedding = model.get_input_embeddings()
    watched = {"word": embedding.weight, "ngram": embedding.ngram_embeddings.weight,
               "ngram_dense": embedding.ngram_dense.weight,
               "position": model.encoder.embeddings.position_embeddings.weight}
    before = {name: p.detach().clone() for name, p in watched.items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    trainer.optimizer.step()
    moved = {name: (before[name] - p.detach()).mean().item() for name, p in watched.items()}
    lr = trainer.lr_scheduler.get_last_lr()[0]
    assert moved["word"] == pytest.approx(100 * lr) and moved["ngram"] == pytest.approx(100 * lr)
    assert moved["ngram_dense"] == pytest.approx(lr) and moved["position"] == pytest.approx(lr)


def test_the_default_multiplier_keeps_the_trainers_groups_and_a_checkpoints_optimizer_state_loads(tmp_path):
    plain, reference = multiplier_trainer(tmp_path), multiplier_trainer(tmp_path)
    assert plain.args.embedding_update_multiplier == 1.0
    groups = group_names(plain, plain.create_optimizer())
    assert groups == group_names(reference, Trainer.create_optimizer(reference)) and len(groups) == 2
    assert [g["lr"] for g in plain.optimizer.param_groups] == [1e-3, 1e-3]
    trainer = multiplier_trainer(tmp_path, embedding_update_multiplier=100.0)  # resume: the same groups again
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    resumed = multiplier_trainer(tmp_path, embedding_update_multiplier=100.0)
    resumed.create_optimizer_and_scheduler(num_training_steps=10)
    resumed.optimizer.load_state_dict(trainer.optimizer.state_dict())
    resumed.lr_scheduler.load_state_dict(trainer.lr_scheduler.state_dict())
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [g["lr"] for g in trainer.optimizer.param_groups]
    assert len(resumed.optimizer.state) == sum(len(names) for names, _ in groups)  # every parameter's moments


@pytest.mark.parametrize("multiplier", [0.0, -100.0, float("nan")])
def test_a_multiplier_that_is_not_positive_is_refused(tmp_path, multiplier):
    with pytest.raises(ValueError, match=rf"embedding_update_multiplier={multiplier}: use a factor > 0"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                   embedding_update_multiplier=multiplier)


def test_a_multiplier_the_optimizer_cannot_apply_is_refused(tmp_path):
    trainer = multiplier_trainer(tmp_path, embedding_update_multiplier=100.0)
    trainer.model.get_input_embeddings().weight.requires_grad_(False)
    with pytest.raises(ValueError, match="embedding_update_multiplier=100.0: the optimizer does not train all"):
        trainer.create_optimizer()
    model = trainer.model
    with pytest.raises(ValueError, match="with your own optimizer, give the embeddings their learning rate"):
        MultiTaskTrainer(model=model, args=trainer.args, train_dataset=trainer.train_dataset,
                         data_collator=TaskCollator({}), optimizers=(torch.optim.SGD(model.parameters(), lr=1.0), None))


@pytest.mark.slow
def test_two_processes_run_the_same_task_at_every_step_and_hard_negative_labels_stay_right(tokenizer_dir, tmp_path):
    stdout = torchrun("distributed_multitask.py", str(tokenizer_dir), str(tmp_path / "run"))
    for rank in (0, 1):
        assert f"rank {rank}: hard-negative loss" in stdout and "gradients equal" in stdout, stdout
        assert f"rank {rank}: masked loss" in stdout, stdout
    zero, one = (json.loads((tmp_path / "run" / f"schedule-rank{rank}.json").read_text()) for rank in (0, 1))
    tasks = [task for task, _ in zero["steps"]]
    assert tasks == [task for task, _ in one["steps"]] == ["translation", "response", "quick_thought", "nli"] * 2
    assert all(a != b for (_, a), (_, b) in zip(zero["steps"], one["steps"]))  # each process its own examples
    assert zero["logged"] == [["nli_loss", "quick_thought_loss", "response_loss", "translation_loss"]] * 2
    # batches of 3 translation pairs and 2 examples of the rest on each of the 2 processes, stated once
    assert zero["figures"] == [{"translation_global_batch": 6, "translation_in_batch_candidates": 6,
                                "response_global_batch": 4, "response_in_batch_candidates": 4,
                                "quick_thought_global_batch": 4, "quick_thought_in_batch_candidates": 4,
                                "nli_global_batch": 4}, {}]


# --- hard negatives (sec. 2.2, translation ranking) ---

def test_mined_hard_negatives_are_the_nearest_other_translations_of_the_same_language():
    from trainers.hard_negatives import mine_hard_negatives

    pairs = datasets.Dataset.from_dict({
        "src": ["red", "blue", "green", "rot?"], "tgt": ["rot", "blau", "grün", "rouge"],
        "src_lang": ["en"] * 4, "tgt_lang": ["de", "de", "de", "fr"]})
    vectors = {"red": [1.0, 0.0], "blue": [0.0, 1.0], "green": [0.6, 0.8], "rot?": [1.0, 0.1],
               "rot": [1.0, 0.05], "blau": [0.05, 1.0], "grün": [0.6, 0.8], "rouge": [1.0, 0.0]}
    embed = lambda texts: torch.tensor([vectors[t] for t in texts]).numpy()  # noqa: E731
    # fr has a single translation: too few to mine one negative from
    with pytest.raises(ValueError, match="Language 'fr' has 1 distinct translations: too few for k=1"):
        mine_hard_negatives(embed, pairs, k=1)
    mined = mine_hard_negatives(embed, pairs.select(range(3)), k=1)
    # red's nearest German translation other than its own ("rot") is grün; blue's is grün; green's is blau
    assert mined["negatives"] == [["grün"], ["grün"], ["blau"]]
    assert mine_hard_negatives(embed, pairs.select(range(3)), k=2)["negatives"][0] == ["grün", "blau"]


def test_mining_script_writes_k_negatives_per_pair_that_the_translation_task_reads(tmp_path, tokenizer_dir,
                                                                                   small_pairs):
    from trainers.hard_negatives import main

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, head_intermediate_size=8, nli_hidden_size=8, tasks=["translation"]))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    pairs = [row for row in small_pairs if row["tgt_lang"] == "de"][:40]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    main(["--model", str(tmp_path / "model"), "--pairs", str(tmp_path / "pairs.jsonl"), "--output",
          str(tmp_path / "mined.jsonl"), "--k", "3"])
    mined = translation_task(tmp_path / "mined.jsonl", hard_negatives=3)
    assert len(mined) == 40
    for row in mined:
        assert len(row["negatives"]) == 3 and row["tgt"] not in row["negatives"]
        assert set(row["negatives"]) <= {pair["tgt"] for pair in pairs}


def test_the_papers_320_wide_embeddings_are_taken_to_the_hidden_size(tmp_path):
    from transformers import AutoModel

    from modeling_ems.modeling_dual_encoder import FactorizedEmbedding, WordAndCharNgramEmbedding

    for input_type, kind in (("subword", FactorizedEmbedding), ("char_ngram", WordAndCharNgramEmbedding)):
        config = DualEncoderMultiTaskConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32, embedding_size=8, input_type=input_type,
                                            ngram_buckets=64)
        model = DualEncoderMultiTaskForPreTraining(config)
        embedding = model.get_input_embeddings()
        assert type(embedding) is kind and embedding.weight.shape == (50, 8)  # 8-wide words, a layer to 16
        assert embedding.embedding_projection.weight.shape == (16, 8)
        assert embedding(torch.tensor([[1, 2]])).shape == (1, 2, 16)
        model.encoder.save_pretrained(tmp_path / input_type)
        loaded = AutoModel.from_pretrained(tmp_path / input_type).eval()
        ids = torch.tensor([[3, 4, 5]])
        torch.testing.assert_close(loaded(ids).pooler_output, model.encoder.eval()(ids).pooler_output)
    with pytest.raises(Exception, match="embedding_size must be a positive integer"):  # StrictDataclass...Error
        DualEncoderMultiTaskConfig(embedding_size=0)
    plain = DualEncoderMultiTaskConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32)
    assert type(DualEncoderMultiTaskForPreTraining(plain).get_input_embeddings()) is torch.nn.Embedding
