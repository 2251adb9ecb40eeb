"""MTEB on a folder this package writes: the folder loads as a sentence-transformers model and runs a local bitext
mining task built as MTEB's docs describe custom tasks (a subclass of a task type with its `TaskMetadata` and a
`load_data` of its own: no Hub); MTEB's F1 equals the one computed from the package's own embeddings."""

import numpy as np
import pytest

mteb = pytest.importorskip("mteb", reason="MTEB is the mteb extra: pip install '.[mteb]'")

SOURCES = ["open the file", "close the window", "save the sheet", "print the page"]
TARGETS = ["öffnen die datei", "schließen das fenster", "speichern die tabelle", "drucken die seite"]


def local_bitext_task():
    import datasets
    from mteb.abstasks import AbsTaskBitextMining
    from mteb.abstasks.task_metadata import TaskMetadata

    class LocalBitext(AbsTaskBitextMining):
        metadata = TaskMetadata(
            name="LocalBitext", description="English-German pairs shipped with the test.",
            dataset={"path": "local/bitext", "revision": "1"}, type="BitextMining", category="t2t",
            modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn", "deu-Latn"], main_score="f1",
            reference=None, date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
            dialect=None, sample_creation=None, bibtex_citation="")

        def load_data(self, **kwargs):
            self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_dict(
                {"sentence1": SOURCES, "sentence2": TARGETS})})
            self.data_loaded = True

    return LocalBitext()


def test_a_saved_folder_runs_a_local_mteb_task(saved_model):
    from sentence_transformers import SentenceTransformer

    from trainers.loading import load_embedder

    folder, _, _ = saved_model
    model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    results = mteb.evaluate(model, tasks=[local_bitext_task()], cache=None)
    (scores,) = results.task_results[0].scores["test"]
    embed, _ = load_embedder(folder, device="cpu")
    sources, targets = embed(SOURCES), embed(TARGETS)
    sources /= np.linalg.norm(sources, axis=1, keepdims=True)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    found = (sources @ targets.T).argmax(1)  # each source's nearest target by cosine, as MTEB mines
    assert scores["accuracy"] == pytest.approx(float(np.mean(found == np.arange(len(SOURCES)))))
