"""Multi-source classification (recipe `multisource`): the sequence-classification head, translators and their
cache, the three input settings, the trimmed mean, the metrics per label type, bad input, and the pipeline end to
end with a tiny translation model and a tiny classifier built here."""

import json
import re
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizerFast,
    MarianConfig,
    MarianMTModel,
)

from modeling_ems import EMSForPreTraining, EMSForSequenceClassification
from tests.conftest import save_tiny_model
from tests.test_model import run_without_package
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.multisource.recipe import ClassifierSettings
from trainers.recipes.multisource.report import combine, middle_mean, results_table, table_markdown
from trainers.recipes.multisource.sweep import SETTINGS, encode_setting
from trainers.recipes.multisource.translation import (
    FunctionTranslator,
    ModelTranslator,
    TranslationError,
    translate_cached,
)

CALLS: list[list[str]] = []  # every batch counting_translate was given


def counting_translate(texts):
    """A translator that records its calls: the translation is the text reversed."""
    CALLS.append(list(texts))
    return [text[::-1] for text in texts]


def short_translate(texts):
    return [text for text in texts[:-1]]  # one translation too few


@pytest.fixture(autouse=True)
def no_calls():
    CALLS.clear()


# --- the trimmed mean ------------------------------------------------------------------------------------------


def test_middle_mean_drops_the_best_and_the_worst_of_five():
    # sorted 0.1 0.5 0.6 0.7 0.9: the middle three average to (0.5 + 0.6 + 0.7) / 3 = 0.6
    assert middle_mean([0.5, 0.9, 0.7, 0.1, 0.6]) == pytest.approx(0.6)
    # one extreme value does not move it: (2 + 3 + 4) / 3 = 3
    assert middle_mean([3, 100, 2, 4, -50]) == pytest.approx(3.0)
    assert middle_mean([0.2, 0.8, 0.4]) == pytest.approx(0.4)  # three values: the median
    assert middle_mean([0.2, 0.4]) == pytest.approx(0.3)  # too few to drop any: the plain mean
    with pytest.raises(ValueError):
        middle_mean([])


def test_results_table_and_markdown_follow_table_2():
    runs = [{"setting": s, "seed": k, "test": t, "validation": t} for s, scores in
            {"A": [0.5, 0.6, 0.7], "B": [0.4, 0.4, 0.4], "A+B": [0.9, 0.7, 0.8]}.items() for k, t in enumerate(scores)]
    table = results_table(runs, list(SETTINGS), "accuracy", "some/model")
    assert table["settings"]["A"]["score"] == pytest.approx(0.6)
    assert table["settings"]["A+B"]["score"] == pytest.approx(0.8) and table["settings"]["A+B"]["trimmed"]
    text = table_markdown([table])
    assert "| A. Source | B. English | A+B (Proposed) |" in text
    assert "| some/model | accuracy | 0.600 | 0.400 | **0.800** |" in text


# --- metrics per label type --------------------------------------------------------------------------------------


def test_label_types_choose_qwk_and_accuracy():
    assert ClassifierSettings(label_type="ordinal").metric == "qwk"
    assert ClassifierSettings(label_type="categorical").metric == "accuracy"
    with pytest.raises(ValueError, match="label_type='nominal'"):
        ClassifierSettings(label_type="nominal")
    with pytest.raises(ValueError, match="classifier.settings"):
        ClassifierSettings(settings=["A", "C"])


# --- the classification head -------------------------------------------------------------------------------------


def test_ems_training_folder_loads_into_the_classifier_with_only_the_classifier_new(tiny_pretraining_model, tmp_path):
    folder = tmp_path / "pretraining"
    tiny_pretraining_model.save_pretrained(folder)
    assert "AutoModelForSequenceClassification" in json.loads((folder / "config.json").read_text())["auto_map"]
    model, info = EMSForSequenceClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(model.ems.embeddings.word_embeddings.weight,
                               tiny_pretraining_model.ems.embeddings.word_embeddings.weight)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids != 0).long()
    model.eval()
    output = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    pooled = tiny_pretraining_model.ems(ids, mask).pooler_output
    torch.testing.assert_close(output.logits, model.classifier(pooled))  # pooled embedding -> (dropout) -> linear
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, torch.tensor([0, 2])))


@pytest.mark.slow  # a second interpreter
def test_classifier_saves_and_loads_with_auto_classes(tiny_pretraining_model, tmp_path):
    model = EMSForSequenceClassification.from_pretrained(_saved(tiny_pretraining_model, tmp_path), num_labels=4).eval()
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(loaded) is EMSForSequenceClassification and loaded.config.num_labels == 4
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    expected = model(input_ids=ids).logits[0].tolist()
    out = run_without_package(textwrap.dedent(f"""
        import json, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        print(json.dumps([type(model).__name__, model(input_ids=torch.tensor({ids.tolist()})).logits[0].tolist()]))
        """), tmp_path)
    name, logits = json.loads(out.strip().splitlines()[-1])
    assert name == "EMSForSequenceClassification"
    assert logits == pytest.approx(expected, abs=1e-5)


def _saved(model: EMSForPreTraining, tmp_path):
    folder = tmp_path / "pretraining"
    model.save_pretrained(folder)
    return folder


# --- input settings ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory):
    words = "the cat sat on a mat die katze sass auf einer matte one two three four five six seven".split()
    vocab = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast(str(vocab))


def _rows(texts, translations):
    import datasets

    return datasets.Dataset.from_dict({"text": texts, "translation": translations, "label": [0] * len(texts)})


def test_pair_setting_holds_both_segments_and_truncates_both(bert_tokenizer):
    rows = _rows(["die katze sass auf einer matte"], ["the cat sat on a mat"])
    encoded = {s: encode_setting(bert_tokenizer, rows, s, max_length=64)[0] for s in SETTINGS}
    decode = lambda ids: bert_tokenizer.decode(ids)  # noqa: E731
    assert decode(encoded["A"]["input_ids"]) == "[CLS] die katze sass auf einer matte [SEP]"
    assert decode(encoded["B"]["input_ids"]) == "[CLS] the cat sat on a mat [SEP]"
    assert decode(encoded["A+B"]["input_ids"]) == ("[CLS] die katze sass auf einer matte [SEP] "
                                                   "the cat sat on a mat [SEP]")
    assert encoded["A+B"]["labels"] == 0
    # longest_first: a long source does not push the translation out
    long = _rows(["one two three four five six seven " * 4], ["the cat"])
    pair = bert_tokenizer.decode(encode_setting(bert_tokenizer, long, "A+B", max_length=12)[0]["input_ids"])
    assert pair == "[CLS] one two three four five six seven [SEP] the cat [SEP]"


def test_the_sweep_tokenizes_each_input_once_and_only_the_cut_ones_again(bert_tokenizer, monkeypatch):
    """The token counts (for the length and the cut) and the inputs come from one tokenization; an input longer than
    the length goes through the tokenizer a second time, truncated. The inputs equal the tokenizer's own truncation
    of every row."""
    from types import SimpleNamespace

    from trainers.recipes.multisource.sweep import MultiSourceSweep

    words = "one two three four five six seven".split()
    splits = {name: _rows([" ".join(words[: 1 + (i * 3 + shift) % 7]) for i in range(size)],
                          [" ".join(["the cat sat"] * (1 + i % 2)) for i in range(size)])
              for name, size, shift in (("train", 10, 0), ("validation", 6, 1), ("test", 5, 2))}
    max_length = 7
    # token counts of each input, whole, from the tokenizer itself: [CLS] a [SEP] (b [SEP])
    counts = {(setting, name): [len(bert_tokenizer(*(row[c] for c in SETTINGS[setting]))["input_ids"]) for row in rows]
              for setting in SETTINGS for name, rows in splits.items()}
    cut = {setting: sum(n > max_length for name in splits for n in counts[setting, name]) for setting in SETTINGS}
    assert all(0 < cut[setting] < 21 for setting in SETTINGS)  # some inputs cut in every setting, not all
    expected = {(setting, name): encode_setting(bert_tokenizer, rows, setting, max_length).to_list()
                for setting in SETTINGS for name, rows in splits.items()}

    tokenized: dict[str, int] = {}  # texts given to the tokenizer, per setting (A+B: one per pair)
    call = type(bert_tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        setting = "A+B" if args else ("B" if text[0].startswith("the cat") else "A")
        tokenized[setting] = tokenized.get(setting, 0) + len(text)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(bert_tokenizer), "__call__", counting)
    recipe = SimpleNamespace(settings=ClassifierSettings(max_length=max_length, seeds=[0]),
                             evaluation={"validation": splits["validation"], "test": splits["test"]})
    sweep = MultiSourceSweep(recipe, None, bert_tokenizer, splits["train"])
    assert tokenized == {setting: 21 + cut[setting] for setting in SETTINGS}  # was 2 x 21: measured, then encoded
    for (setting, name), rows in expected.items():
        assert sweep.inputs[setting][name].to_list() == rows
        share = sum(n > max_length for n in counts[setting, name]) / len(rows)
        assert sweep.lengths[setting]["cut"][name] == round(share, 4)
    assert sweep.lengths["A"]["median_tokens"] == float(np.median(counts["A", "train"]))


def test_package_tokenizer_pairs_keep_both_segments(tokenizer_dir, small_pairs):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    source, translation = small_pairs[0]["tgt"], "Open the file."
    assert len(tokenizer(source * 5)["input_ids"]) > 24
    ids = encode_setting(tokenizer, _rows([source * 5], [translation]), "A+B", max_length=24)[0]["input_ids"]
    assert len(ids) == 24 and ids.count(tokenizer.eos_token_id) == 1  # a </s> b: the pair encoding's separator
    after = ids[ids.index(tokenizer.eos_token_id) + 1:]
    assert after == tokenizer(translation)["input_ids"]  # the short translation whole, the long source truncated


# --- translators and their cache ---------------------------------------------------------------------------------


def test_translations_are_computed_once_per_text_and_translator(tmp_path):
    translator = FunctionTranslator("tests.test_multisource:counting_translate")
    texts = ["Hallo Welt", "Guten Tag", "Hallo Welt"]
    assert translate_cached(translator, texts, tmp_path) == ["tleW ollaH", "gaT netuG", "tleW ollaH"]
    assert CALLS == [["Hallo Welt", "Guten Tag"]]  # the duplicate is translated once
    assert translate_cached(translator, ["Guten Tag", "Neu"], tmp_path) == ["gaT netuG", "ueN"]
    assert CALLS[1:] == [["Neu"]]  # only the new text


def test_a_translator_returning_another_number_of_texts_is_refused(tmp_path):
    translator = FunctionTranslator("tests.test_multisource:short_translate")
    with pytest.raises(TranslationError, match="returned 1 translations for 2 texts"):
        translate_cached(translator, ["a", "b"], tmp_path)
    with pytest.raises(ValueError, match="module:name"):
        FunctionTranslator("no_colon")


def test_a_translation_function_is_found_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_mt.py").write_text("def to_english(texts):\n    return [t.upper() for t in texts]\n")
    monkeypatch.chdir(tmp_path)  # as documented: the working directory's module, with no PYTHONPATH set
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert FunctionTranslator("my_mt:to_english")(["hallo"]) == ["HALLO"]
    with pytest.raises(ValueError, match=r"translation.function='my_mt:nothing': my_mt \(.*my_mt.py\) has no"):
        FunctionTranslator("my_mt:nothing")
    with pytest.raises(ValueError, match=r"module 'no_mt' cannot be imported .*put it in the working directory"):
        FunctionTranslator("no_mt:to_english")


@pytest.fixture(scope="module")
def tiny_translation_model(tmp_path_factory, tokenizer_dir):
    """A 1-layer MarianMT model (random weights) with the package's SentencePiece tokenizer."""
    folder = tmp_path_factory.mktemp("marian")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_model_translator_translates_in_batches_with_beams(tiny_translation_model, tmp_path):
    translator = ModelTranslator(tiny_translation_model, num_beams=2, batch_size=2, max_new_tokens=4, progress=False)
    texts = ["Datei öffnen", "Speichern unter", "Drucken"]
    out = translate_cached(translator, texts, tmp_path)
    assert len(out) == 3 and all(isinstance(text, str) for text in out)
    assert "beams=2" in translator.id
    translator.model = None  # a second call must not need the model: everything is cached
    assert translate_cached(translator, texts, tmp_path) == out


def test_the_beam_width_and_the_forced_target_language_reach_generate(tiny_translation_model, monkeypatch):
    """Sec. 4.1.2 translates with beam width 5: what `generate` receives, batch by batch; and for a multilingual
    model (M2M100-style `get_lang_id`), the target language as the forced first token."""
    translator = ModelTranslator(tiny_translation_model, num_beams=5, batch_size=2, max_new_tokens=7, progress=False)
    calls = []
    real_generate = translator.model.generate

    def generate(**options):
        calls.append({key: value for key, value in options.items() if key not in ("input_ids", "attention_mask")}
                     | {"rows": len(options["input_ids"])})
        return real_generate(**options)

    monkeypatch.setattr(translator.model, "generate", generate)
    translator(["Datei öffnen", "Speichern unter", "Drucken"])
    assert calls == [{"num_beams": 5, "max_new_tokens": 7, "rows": 2}, {"num_beams": 5, "max_new_tokens": 7, "rows": 1}]

    monkeypatch.setattr(type(translator.tokenizer), "get_lang_id", lambda self, code: {"en": 3}[code], raising=False)
    multilingual = ModelTranslator(tiny_translation_model, num_beams=5, progress=False, target_language="en")
    assert multilingual.generate_options == {"forced_bos_token_id": 3}


# --- the recipe end to end ---------------------------------------------------------------------------------------


def write_folder(folder, pairs, labels=("a", "b", "c"), sizes=(16, 8, 8), label_of=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(list(labels)))
    start = 0
    for split, size in zip(("train", "validation", "test"), sizes):
        lines = ["text\tlabel\ten"]
        for index, row in enumerate(pairs[start:start + size]):
            label = label_of(index) if label_of else index % len(labels)
            lines.append(f"{row['tgt']}\t{label}\t{row['src']}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += size
    return folder


@pytest.fixture
def tiny_setup(tmp_path, tokenizer_dir, small_pairs):
    pairs = [row for row in small_pairs if row["tgt_lang"] == "de" and "\t" not in row["src"] + row["tgt"]]
    data = write_folder(tmp_path / "data", pairs)
    classifier = tmp_path / "encoder"
    save_tiny_model(classifier, tokenizer_dir)
    return data, classifier


def config_file(tmp_path, data, model, **sections):
    config = {
        "recipe": "multisource",
        "classifier": {"model": str(model), "label_type": "categorical", "settings": ["A", "B", "A+B"],
                       "seeds": [0, 1, 2], "max_length": 24, "patience": None},  # one epoch: no early stopping
        "translation": {"function": "tests.test_multisource:counting_translate", "cache_dir": str(tmp_path / "mt")},
        "data": {"train": str(data)},
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                     "disable_tqdm": True, "dataloader_num_workers": 0},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def test_pipeline_end_to_end_with_resume(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    output_dir = tmp_path / "out"
    results = run_recipe(load_run_config(config_file(tmp_path, data, classifier)), output_dir)
    texts = 16 + 8 + 8
    assert sum(len(batch) for batch in CALLS) == texts  # each text translated once, for both B and A+B
    table = results["table"]
    assert table["metric"] == "accuracy" and list(table["settings"]) == ["A", "B", "A+B"]
    for setting, entry in table["settings"].items():
        assert entry["seeds"] == [0, 1, 2] and len(entry["test"]) == 3
        assert entry["score"] == pytest.approx(sorted(entry["test"])[1])  # middle one of three
        assert all(0 <= score <= 1 for score in entry["test"])
    assert json.loads((output_dir / "multisource_results.json").read_text()) == table
    assert "A+B (Proposed)" in (output_dir / "multisource_table.md").read_text()
    assert (output_dir / "multisource_plot.png").stat().st_size > 1000
    card = (output_dir / "README.md").read_text()
    assert "A+B (Proposed)" in card and "pipeline_tag: text-classification" in card
    from huggingface_hub import ModelCard

    widget = ModelCard.load(output_dir / "README.md").data.widget  # test inputs as the A+B classifier reads them:
    texts = [line.split("\t")[0] for line in (data / "test.tsv").read_text(encoding="utf-8").splitlines()[1:4]]
    assert widget == [{"text": f"{text} </s> {text[::-1]}"} for text in texts]  # the package's tokenizer pairs by </s>
    saved = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert type(saved) is EMSForSequenceClassification and saved.config.id2label == {0: "a", 1: "b", 2: "c"}
    best = max((run for run in results["runs"] if run["setting"] == "A+B"), key=lambda run: run["validation"])
    assert f"seed {best['seed']}" in card
    combined = combine([str(output_dir), str(output_dir)], str(tmp_path / "both"), ["de", "fr"])
    assert combined.count("| accuracy |") == 2 and (tmp_path / "both.png").is_file()

    # resume: the finished runs are read back, one interrupted run (no result yet) is trained again
    (output_dir / "runs" / "B-seed1" / "run_result.json").unlink()
    CALLS.clear()
    again = run_recipe(load_run_config(config_file(tmp_path, data, classifier)), output_dir)
    assert CALLS == []  # translations come from the cache
    before = {(r["setting"], r["seed"]): r for r in results["runs"]}
    for run in again["runs"]:
        if (run["setting"], run["seed"]) != ("B", 1):
            assert run == before[(run["setting"], run["seed"])]
    assert again["runs"][4]["test"] == pytest.approx(before[("B", 1)]["test"])  # same seed, same data: same run


def test_ordinal_labels_are_scored_by_qwk(tmp_path, tokenizer_dir, small_pairs):
    pairs = [row for row in small_pairs if row["tgt_lang"] == "fr" and "\t" not in row["src"] + row["tgt"]]
    data = write_folder(tmp_path / "data", pairs, labels=("0", "1", "2", "3", "4"))
    classifier = tmp_path / "encoder"
    save_tiny_model(classifier, tokenizer_dir)
    path = config_file(tmp_path, data, classifier, classifier={"label_type": "ordinal", "settings": ["A"],
                                                               "seeds": [0]}, translation={"function": None})
    results = run_recipe(load_run_config(path), tmp_path / "out")
    assert results["table"]["metric"] == "qwk" and not results["table"]["settings"]["A"]["trimmed"]
    assert CALLS == []  # source only: nothing translated
    # the reported score is QWK of the saved (best-validation) classifier's test predictions
    import datasets

    from trainers.metrics import load_metric

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    lines = [line.split("\t") for line in (data / "test.tsv").read_text().splitlines()[1:]]
    rows = datasets.Dataset.from_dict({"text": [line[0] for line in lines], "label": [int(line[1]) for line in lines]})
    batch = tokenizer.pad(encode_setting(tokenizer, rows, "A", 24).remove_columns("labels")[:], return_tensors="pt")
    with torch.no_grad():
        predictions = model(**batch).logits.argmax(-1).tolist()
    expected = load_metric("qwk").compute(predictions=predictions, references=rows["label"], num_labels=5)["qwk"]
    assert results["table"]["settings"]["A"]["test"] == [pytest.approx(expected, abs=1e-6)]


def test_signed_ordinal_labels_are_ordered_as_numbers_without_a_labels_file(tmp_path, tiny_setup):
    from trainers.metrics import load_metric
    from trainers.recipes.multisource.recipe import sorted_labels

    data, classifier = tiny_setup
    (data / "labels.json").unlink()  # the label set comes from train.tsv: WRIME's signed scale
    signed = ["-2", "-1", "0", "1", "2"]
    for split in ("train", "validation", "test"):
        lines = (data / f"{split}.tsv").read_text().splitlines()
        rows = [line.split("\t") for line in lines[1:]]
        body = [f"{text}\t{signed[index % 5]}\t{en}" for index, (text, _, en) in enumerate(rows)]
        (data / f"{split}.tsv").write_text("\n".join([lines[0], *body]) + "\n")
    recipe_labels = _load_data(tmp_path, data, classifier, classifier={"label_type": "ordinal"})
    assert recipe_labels[0]["label"][:5] == [0, 1, 2, 3, 4]  # -2 is the lowest class, 2 the highest
    assert sorted_labels(["10", "9", "-1", "0.5"]) == ["-1", "0.5", "9", "10"]
    assert sorted_labels(["b", "a", "10", "9"]) == ["10", "9", "a", "b"]  # not all numbers: as text
    # what the order is worth: predictions one step off on the signed scale, scored with the numeric order and with
    # the text order ("0" < "1" < "2" < "-1" < "-2"), which puts -1 three classes away from 0
    qwk = load_metric("qwk")
    truth, predicted = [-2, -1, 0, 1, 2], [-1, 0, 1, 2, 2]
    right = {label: index for index, label in enumerate([-2, -1, 0, 1, 2])}
    as_text = {label: index for index, label in enumerate([0, 1, 2, -1, -2])}  # "0" < "1" < "2" < "-1" < "-2"
    scores = [qwk.compute(predictions=[order[p] for p in predicted], references=[order[t] for t in truth],
                          num_labels=5)["qwk"] for order in (right, as_text)]
    assert scores == [pytest.approx(0.8), pytest.approx(0.25)]


# --- early stopping in epochs and inputs as long as the data ---------------------------------------------------


class _State:
    def __init__(self):
        self.best_metric, self.epoch = None, 0.0


def _stopping_epoch(callback, scores, evaluations_per_epoch):
    """Feed validation scores to an early-stopping callback as the Trainer does (`best_metric` is updated after the
    callbacks); the epoch at which it stops training, or None."""
    from transformers import TrainerControl, TrainingArguments

    args = TrainingArguments(output_dir="unused", metric_for_best_model="accuracy", greater_is_better=True,
                             eval_strategy="steps", report_to="none")
    state, control = _State(), TrainerControl()
    for index, score in enumerate(scores, start=1):
        state.epoch = index / evaluations_per_epoch
        callback.on_evaluate(args, state, control, metrics={"eval_accuracy": score})
        if control.should_training_stop:
            return state.epoch
        state.best_metric = score if state.best_metric is None else max(state.best_metric, score)
    return None


def test_patience_counts_epochs_not_evaluations():
    from transformers import EarlyStoppingCallback

    from trainers.recipes.multisource.sweep import EpochPatience

    # best at epoch 1.0, then no improvement: evaluated once per epoch, 3 epochs of patience stop at epoch 4
    flat = [0.5] + [0.4] * 20
    assert _stopping_epoch(EpochPatience(3), flat, 1) == 4.0
    # evaluated four times per epoch, the paper's patience still waits 3 epochs: best at 0.25, stop at 3.25
    assert _stopping_epoch(EpochPatience(3), flat, 4) == 3.25
    # transformers' callback counts evaluations: it would stop 3 evaluations (0.75 epochs) after the best
    assert _stopping_epoch(EarlyStoppingCallback(early_stopping_patience=3), flat, 4) == 1.0
    # an improvement restarts the count: best again at epoch 3.0 (0.6), stop at 6.0
    assert _stopping_epoch(EpochPatience(3), [0.5, 0.4, 0.6] + [0.6] * 10, 1) == 6.0  # equal is no improvement
    assert _stopping_epoch(EpochPatience(3), [0.1, 0.2, 0.3, 0.4], 1) is None


def test_early_stopping_stops_training(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    # learning rate 1e-12: the validation metric never improves on the first evaluation; evaluated every half epoch
    # (16 texts, batches of 8: 2 steps an epoch), patience 2 epochs of at most 10: training stops at epoch 2.5
    path = config_file(tmp_path, data, classifier, classifier={"settings": ["A"], "seeds": [0], "patience": 2},
                       translation={"function": None},
                       training={"num_train_epochs": 10, "learning_rate": 1e-12, "eval_strategy": "steps",
                                 "eval_steps": 1, "save_strategy": "steps", "save_steps": 1})
    results = run_recipe(load_run_config(path), tmp_path / "out")
    assert [run["epochs"] for run in results["runs"]] == [2.5]
    assert results["runs"][0]["global_step"] == 5


def test_covering_length_keeps_the_share_asked_for():
    from trainers.recipes.multisource.sweep import covering_length

    lengths = np.arange(1, 101)  # 1 .. 100 tokens
    assert covering_length(lengths, 0.99, None) == 99  # 99 of 100 inputs whole
    assert covering_length(lengths, 1.0, None) == 100
    assert covering_length(lengths, 0.5, None) == 50
    assert covering_length(lengths, 0.99, 64) == 64  # never past the model's limit


def test_the_model_limit_is_the_smaller_of_the_tokenizer_and_the_positions(bert_tokenizer):
    """`input_limit` caps `max_length: auto` by `model_token_limit`, which `encode` truncates at too."""
    from types import SimpleNamespace

    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    from trainers.encoding import model_token_limit, truncation_length

    tokenizer = SimpleNamespace(model_max_length=512)
    assert model_token_limit(tokenizer, SimpleNamespace(max_position_embeddings=514)) == 512  # XLM-R: 2 offsets
    assert model_token_limit(tokenizer, SimpleNamespace(max_position_embeddings=128)) == 128
    assert model_token_limit(tokenizer, SimpleNamespace()) == 512
    assert bert_tokenizer.model_max_length == VERY_LARGE_INTEGER  # built without a limit: "no limit"
    assert model_token_limit(bert_tokenizer, SimpleNamespace(max_position_embeddings=64)) == 64
    assert model_token_limit(bert_tokenizer) is None
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    assert truncation_length(model, bert_tokenizer) == 64 and truncation_length(model, bert_tokenizer, 8) == 8


def test_auto_length_follows_the_data_and_reports_the_cut(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    path = config_file(tmp_path, data, classifier, classifier={"settings": ["A", "A+B"], "seeds": [0],
                                                               "max_length": "auto", "length_coverage": 0.25})
    recipe_results = run_recipe(load_run_config(path), tmp_path / "out")
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())["data"]["input_length"]
    tokenizer = AutoTokenizer.from_pretrained(classifier)
    lines = [line.split("\t") for line in (data / "train.tsv").read_text().splitlines()[1:]]
    lengths = {"A": sorted(len(tokenizer(text)["input_ids"]) for text, _, _ in lines),
               "A+B": sorted(len(tokenizer(text, text[::-1])["input_ids"]) for text, _, _ in lines)}  # the translator
    # the fewest tokens keeping a quarter of the 16 texts whole: the 4th shortest; the tiny model reads 32 at most
    expected = {setting: min(values[3], 32) for setting, values in lengths.items()}
    assert expected["A"] < 32 == expected["A+B"]  # one setting set by the data, the other by the model's limit
    assert {setting: entry["max_length"] for setting, entry in report.items()} == expected
    for setting, entry in report.items():
        assert entry["cut"]["train"] == sum(n > expected[setting] for n in lengths[setting]) / 16
    assert recipe_results["table"]["settings"].keys() == {"A", "A+B"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| A+B | 32 | {int(np.median(lengths['A+B']))} |" in card


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classifier, training, message", [
    ({"patience": 3}, {"num_train_epochs": 3}, "could never stop"),
    ({"patience": 1}, {"num_train_epochs": 2, "max_steps": 10}, "remove max_steps"),
    ({"max_length": "long"}, {}, "classifier.max_length='long'"),
    ({"length_coverage": 1.5}, {}, "classifier.length_coverage=1.5"),
    ({"patience": 0}, {}, "classifier.patience=0"),
])
def test_settings_that_make_no_sense_are_refused(tmp_path, tiny_setup, classifier, training, message):
    from trainers.recipes import get_recipe

    data, model = tiny_setup
    with pytest.raises(ValueError, match=re.escape(message)):
        get_recipe("multisource")(load_run_config(config_file(tmp_path, data, model, classifier=classifier,
                                                              training=training)), tmp_path / "out")



def _load_data(tmp_path, data, model, **sections):
    from trainers.recipes import get_recipe

    config = load_run_config(config_file(tmp_path, data, model, **sections))
    return get_recipe("multisource")(config, tmp_path / "out").load_data()


def test_a_label_missing_from_the_label_set_is_refused(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    lines = (data / "test.tsv").read_text().splitlines()
    text, _, en = lines[3].split("\t")
    lines[3] = f"{text}\t7\t{en}"
    (data / "test.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"test.tsv, line 4: label '7' is not in the label set .*labels.json"):
        _load_data(tmp_path, data, classifier)


def test_an_empty_source_text_is_refused(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    lines = (data / "train.tsv").read_text().splitlines()
    lines[2] = "\t".join([" ", *lines[2].split("\t")[1:]])
    (data / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train.tsv, line 3: the source text \('text'\) is empty"):
        _load_data(tmp_path, data, classifier)


def test_a_missing_validation_split_is_refused(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    (data / "validation.tsv").unlink()
    with pytest.raises(ValueError, match="has no validation.tsv: early stopping needs a validation split"):
        _load_data(tmp_path, data, classifier)


def test_a_translator_returning_too_few_texts_stops_the_recipe(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    with pytest.raises(TranslationError, match="returned 15 translations for 16 texts"):
        _load_data(tmp_path, data, classifier, translation={"function": "tests.test_multisource:short_translate"})


def test_settings_with_a_translation_need_a_translator(tmp_path, tiny_setup):
    data, classifier = tiny_setup
    with pytest.raises(ValueError, match="need an English translation: set translation.column"):
        _load_data(tmp_path, data, classifier, translation={"function": None})


def test_no_data_folder_says_what_to_pass(tmp_path, tiny_setup):
    _, classifier = tiny_setup
    config = load_run_config(config_file(tmp_path, "x", classifier), ["data.train=null"])
    from trainers.recipes import get_recipe

    with pytest.raises(ValueError, match="data.train is not set .* --set data.train="):
        get_recipe("multisource")(config, tmp_path / "out").load_data()
    config = load_run_config(config_file(tmp_path, tmp_path / "absent", classifier))
    with pytest.raises(ValueError, match="absent.* is not a folder: .* --set data.train="):
        get_recipe("multisource")(config, tmp_path / "out").load_data()
