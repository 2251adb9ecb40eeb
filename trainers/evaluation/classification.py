"""Zero-shot cross-lingual classification on frozen sentence embeddings (EMS paper sec. 5.4-5.5, MLDoc and Amazon
reviews): an MLP trained on one language, early-stopped on that language's validation split, tested on others;
the mean and standard deviation over several seeds."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import load_metric
from .common import EmbedFn, embed_distinct, read_tsv

Split = tuple[Sequence[str], Sequence[int]]
METRICS = ("accuracy", "qwk")


def check_split(split: Split, num_labels: int, what: str) -> tuple[list[str], np.ndarray]:
    texts, labels = split
    if len(texts) != len(labels):
        raise ValueError(f"The {what} split has {len(texts)} texts and {len(labels)} labels: pass one label per text.")
    if len(texts) == 0:
        raise ValueError(f"The {what} split is empty: pass at least one labelled text.")
    for index, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < num_labels:
            raise ValueError(
                f"Label {label!r} of text {index} in the {what} split is not an int in [0, {num_labels}): "
                "map the labels to 0..num_labels-1 or raise num_labels."
            )
    return list(texts), np.asarray(labels, dtype=np.int64)


def read_split(path: Path, limit: int | None) -> Split:
    table = read_tsv(path, ["text", "label"], limit=limit)
    try:
        return table["text"], [int(label) for label in table["label"]]
    except ValueError as error:
        raise ValueError(f"{path} holds a label that is not an integer ({error}): write labels as 0..n-1.") from None


class ZeroShotClassificationEvaluator:
    """Train an MLP classifier on frozen embeddings of `train` (early stopping on `validation`) and report `metric`
    on each split of `tests`, keyed by language: the mean over `seeds` and its (population) standard deviation.

    The classifier has one hidden layer with tanh (multi-task paper sec. 4.2) and dropout, trained with Adam on
    cross-entropy; training stops once the validation loss has not improved for `patience` epochs, and the
    classifier of the best validation loss is tested.
    """

    def __init__(
        self,
        train: Split,
        validation: Split,
        tests: Mapping[str, Split],
        num_labels: int,
        metric: str = "accuracy",
        seeds: Sequence[int] = (0, 1, 2, 3, 4),
        name: str = "classification",
        hidden_size: int = 512,
        dropout: float = 0.2,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        max_epochs: int = 100,
        patience: int = 5,
    ):
        if num_labels < 2:
            raise ValueError(f"num_labels is {num_labels}: a classifier needs at least 2 labels.")
        if metric not in METRICS:
            raise ValueError(f"metric is {metric!r}: choose one of {METRICS} ('qwk' for ordinal labels).")
        if not tests:
            raise ValueError("tests is empty: pass at least one test split, keyed by language.")
        if not seeds:
            raise ValueError("seeds is empty: pass at least one seed.")
        if min(hidden_size, batch_size, max_epochs, patience) < 1:
            raise ValueError(
                f"hidden_size={hidden_size}, batch_size={batch_size}, max_epochs={max_epochs} and "
                f"patience={patience} must all be at least 1."
            )
        self.train = check_split(train, num_labels, "train")
        self.validation = check_split(validation, num_labels, "validation")
        self.tests = {language: check_split(split, num_labels, f"{language} test") for language, split in tests.items()}
        self.num_labels, self.metric_name, self.seeds, self.name = num_labels, metric, tuple(seeds), name
        self.hidden_size, self.dropout, self.learning_rate = hidden_size, dropout, learning_rate
        self.batch_size, self.max_epochs, self.patience = batch_size, max_epochs, patience
        self.metric = load_metric(metric)

    @classmethod
    def from_tsv_dirs(
        cls,
        train_dir: str | Path,
        test_dirs: Mapping[str, str | Path],
        num_labels: int | None = None,
        limit: int | None = None,
        **kwargs,
    ) -> "ZeroShotClassificationEvaluator":
        """Train on `train_dir/train.tsv`, early-stop on `train_dir/validation.tsv`, test on `test_dirs[lang]/test.tsv`
        (columns `text, label`), the first `limit` rows of each. `num_labels` defaults to the length of a
        `labels.json` in `train_dir` or its parent, e.g. topics: `from_tsv_dirs("topics/en", {"de": "topics/de"})`."""
        train_dir = Path(train_dir)
        if num_labels is None:
            label_files = [folder / "labels.json" for folder in (train_dir, train_dir.parent)]
            found = [path for path in label_files if path.exists()]
            if not found:
                raise ValueError(f"No labels.json in {train_dir} or its parent: pass num_labels.")
            num_labels = len(json.loads(found[0].read_text(encoding="utf-8")))
        return cls(
            read_split(train_dir / "train.tsv", limit),
            read_split(train_dir / "validation.tsv", limit),
            {language: read_split(Path(folder) / "test.tsv", limit) for language, folder in test_dirs.items()},
            num_labels,
            **kwargs,
        )

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        languages = list(self.tests)
        groups = {"train": self.train[0], "validation": self.validation[0]}
        groups.update({f"{language} test": self.tests[language][0] for language in languages})
        train_x, validation_x, *test_xs = (torch.from_numpy(x) for x in embed_distinct(embed, groups, np.float32))
        train_y, validation_y = torch.from_numpy(self.train[1]), torch.from_numpy(self.validation[1])
        extra = {"num_labels": self.num_labels} if self.metric_name == "qwk" else {}
        scores = {language: [] for language in languages}
        for seed in self.seeds:
            classifier = self.fit(train_x, train_y, validation_x, validation_y, seed)
            with torch.no_grad():
                for language, test_x in zip(languages, test_xs):
                    predictions = classifier(test_x).argmax(dim=1).tolist()
                    references = self.tests[language][1].tolist()
                    result = self.metric.compute(predictions=predictions, references=references, **extra)
                    scores[language].append(result[self.metric_name])
        results = {}
        for language, values in scores.items():
            key = f"{self.name}_{language}_{self.metric_name}"
            results[key], results[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        return results

    def fit(
        self, train_x: torch.Tensor, train_y: torch.Tensor, validation_x: torch.Tensor, validation_y: torch.Tensor,
        seed: int,
    ) -> torch.nn.Module:
        """The MLP of the best validation loss, in eval mode; the seed fixes initialisation, shuffling and dropout."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            classifier = torch.nn.Sequential(
                torch.nn.Linear(train_x.shape[1], self.hidden_size),
                torch.nn.Tanh(),
                torch.nn.Dropout(self.dropout),
                torch.nn.Linear(self.hidden_size, self.num_labels),
            )
            optimizer = torch.optim.Adam(classifier.parameters(), lr=self.learning_rate)
            best_loss, best_state, stale_epochs = float("inf"), None, 0
            for _ in range(self.max_epochs):
                classifier.train()
                for batch in torch.randperm(len(train_x)).split(self.batch_size):
                    optimizer.zero_grad()
                    F.cross_entropy(classifier(train_x[batch]), train_y[batch]).backward()
                    optimizer.step()
                classifier.eval()
                with torch.no_grad():
                    loss = F.cross_entropy(classifier(validation_x), validation_y).item()
                if loss < best_loss:
                    best_loss, stale_epochs = loss, 0
                    best_state = {key: value.clone() for key, value in classifier.state_dict().items()}
                else:
                    stale_epochs += 1
                    if stale_epochs >= self.patience:
                        break
        if best_state is None:
            raise ValueError(
                f"The validation loss was never finite with seed {seed}: lower learning_rate ({self.learning_rate})."
            )
        classifier.load_state_dict(best_state)
        return classifier.eval()
