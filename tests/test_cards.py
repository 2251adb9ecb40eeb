import re
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from trainers.recipes import load_run_config
from trainers.recipes.ems import EMSRecipe


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
    """The EMS recipe's card for `model` saved in `folder`, with the shipped default config."""
    EMSRecipe(load_run_config("configs/ems_default.yaml"), folder).card(model, results)


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
    assert values["libreoffice-parallel", "en-de"] == 0.5 and values["libreoffice-parallel", "average"] == 0.55
    assert values["out-of-domain-parallel", "en-fr"] == 0.3
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
