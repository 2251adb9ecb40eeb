"""`recipe: multisource`: fine-tune a sequence classifier on the source text, its English translation, or both
(Multi-source paper, sec. 3-4: "[CLS] source sentence [SEP] English translation [SEP]").

What is this recipe's own:
* data: a folder with `train.tsv`, `validation.tsv`, `test.tsv` (columns `text`, `label` and optionally a
  translation column), label names from a `labels.json` beside them (or in the parent folder) when present;
* the translation of every text into English (`translation.py`: a column of the data, a seq2seq model, or
  a user function), cached per translator;
* three input settings: A the source alone, B the translation alone, A+B both through the tokenizer's pair
  encoding (`[CLS] a [SEP] b [SEP]` for BERT-style tokenizers, `a </s> b` for this package's), truncated
  `longest_first` so both segments keep their share;
* any `AutoModelForSequenceClassification` (a folder, a Hub id, `minilm`, or a folder of this package's encoders,
  whose head is `EMSForSequenceClassification`), AdamW at 2e-5, stopped once the validation metric has not improved
  for 3 epochs (sec. 4.1.2; `EpochPatience`), once per setting and seed;
* inputs as long as the data needs (`max_length: auto`: the length that keeps 99 % of each setting's training
  inputs whole, within the model's limit), with the share cut per split in the data report;
* the figure of each setting: the mean of the middle three of five seeds (best and worst dropped, sec. 4.1.2), in
  the paper's table 2 layout (`multisource_results.json`, `multisource_table.md`, `multisource_plot.png`);
* metrics through the package's `evaluate` modules: QWK for ordinal labels, accuracy for categorical ones.

Every (setting, seed) run is a plain `Trainer` run in `OUTPUT/runs/<setting>-seed<k>/` with its own checkpoints;
`MultiSourceSweep` (`sweep.py`) runs them one after the other, and a killed sweep restarts at the run it was in (from
that run's last complete checkpoint). The saved folder holds the classifier of the last setting (A+B by default)
with the best validation score; `report.py` writes the table and the plot.
"""

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import EvalResult
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from ...data.sources import dataset_ids, dataset_type
from ...encoding import model_token_limit
from ...evaluation.common import read_tsv
from ...loading import MINILM, read_sentence_transformer, resolve_model_setting
from ..base import Recipe, register_recipe
from .report import PLOT_FILE, RESULTS_FILE, SETTING_TITLES, TABLE_FILE, plot_tables, results_table, table_markdown
from .sweep import SETTINGS, MultiSourceSweep
from .translation import FunctionTranslator, ModelTranslator, translate_cached

logger = logging.getLogger(__name__)

# Label type -> metric module (trainers/metrics/): QWK for ordinal labels (WRIME), accuracy otherwise (Livedoor).
LABEL_METRICS = {"ordinal": "qwk", "categorical": "accuracy"}
SPLITS = ("train", "validation", "test")


@dataclass
class ClassifierSettings:
    """The `classifier` section."""

    model: str = MINILM  # a folder, a Hub id, or `minilm` (the installed all-MiniLM-L6-v2)
    label_type: str = "categorical"  # categorical: accuracy; ordinal: QWK
    settings: list[str] = field(default_factory=lambda: ["A", "B", "A+B"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # tokens per input (A+B shares them between both segments, longest_first); `auto`: per setting, the length that
    # holds `length_coverage` of the training inputs whole, at most the model's limit (the cut is in the data report)
    max_length: int | str = "auto"
    length_coverage: float = 0.99
    # epochs without improvement of the validation metric before stopping (sec. 4.1.2: "3 epochs of patience"),
    # however often it is evaluated; null: no early stopping (all training.num_train_epochs, the best one kept)
    patience: int | None = 3
    text_column: str = "text"
    label_column: str = "label"

    def __post_init__(self):
        if self.label_type not in LABEL_METRICS:
            raise ValueError(f"classifier.label_type={self.label_type!r}: use 'ordinal' (scored by QWK) or "
                             "'categorical' (scored by accuracy).")
        unknown = [name for name in self.settings if name not in SETTINGS]
        if unknown or not self.settings or len(set(self.settings)) != len(self.settings):
            raise ValueError(f"classifier.settings={self.settings!r}: list each of {list(SETTINGS)} at most once "
                             "(A: source, B: English translation, A+B: both).")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"classifier.seeds={self.seeds!r}: give distinct seeds (the paper: five).")
        if self.max_length != "auto" and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"classifier.max_length={self.max_length!r}: give a number of tokens (at least 2) or "
                             "auto (the length that keeps classifier.length_coverage of the training inputs whole).")
        if not 0 < self.length_coverage <= 1:
            raise ValueError(f"classifier.length_coverage={self.length_coverage!r}: give the share of training "
                             "inputs to keep whole, in (0, 1] (e.g. 0.99).")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"classifier.patience={self.patience!r}: give the epochs without improvement before "
                             "stopping (the paper: 3), or null for no early stopping.")

    @property
    def metric(self) -> str:
        return LABEL_METRICS[self.label_type]


@dataclass
class TranslationSettings:
    """The `translation` section: exactly one of `column`, `model`, `function` (none when only A runs)."""

    column: str | None = None  # a column of the TSVs that holds the English translation (e.g. `en`)
    model: str | None = None  # a seq2seq translation model: folder or Hub id (Marian, M2M100, ...)
    function: str | None = None  # module:function taking a list of texts, returning their translations
    num_beams: int = 5  # the paper's beam width (sec. 4.1.2)
    batch_size: int = 16
    max_length: int = 256  # source tokens given to the translation model
    max_new_tokens: int = 256
    source_language: str | None = None  # for multilingual models (M2M100: src_lang)
    target_language: str = "en"
    cache_dir: str | None = None  # None: $HF_DATASETS_CACHE/ems_translations

    def __post_init__(self):
        given = [name for name in ("column", "model", "function") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"translation sets {given}: choose one source of translations (column, model or "
                             "function).")

    @property
    def kind(self) -> str | None:
        return next((name for name in ("column", "model", "function") if getattr(self, name)), None)

    def translator(self):
        if self.model:
            return ModelTranslator(self.model, self.num_beams, self.batch_size, self.max_length, self.max_new_tokens,
                                   self.source_language, self.target_language)
        return FunctionTranslator(self.function)


def find_labels(folder: Path) -> tuple[Path | None, list[str] | None]:
    """The label names of a `labels.json` (a list) in `folder` or its parent."""
    for path in (folder / "labels.json", folder.parent / "labels.json"):
        if path.is_file():
            names = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
                raise ValueError(f"{path} must hold a non-empty list of label names, got {names!r}.")
            return path, names
    return None, None


def sorted_labels(values) -> list[str]:
    """The distinct labels in order: numerically when every label is a number (signed ones too: WRIME's -2..2 are
    ordered -2, -1, 0, 1, 2, as QWK needs), else as text."""
    distinct = set(values)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def label_ids(values: list[str], names: list[str], where: str, label_set: str) -> list[int]:
    """Each label as its index in `names`: a label may be given by name or by its index."""
    index = {name: position for position, name in enumerate(names)}
    ids = []
    for line, value in enumerate(values, start=2):
        if value in index:
            ids.append(index[value])
        elif value.strip().isdigit() and int(value) < len(names):
            ids.append(int(value))
        else:
            raise ValueError(f"{where}, line {line}: label {value!r} is not in the label set {label_set} "
                             f"({len(names)} labels: {names[:12]}{' ...' if len(names) > 12 else ''}); fix the row "
                             "or add the label to the set.")
    return ids


def resolve_classifier(value: str, config_source: str) -> tuple[Path, str]:
    """The folder holding `classifier.model`'s transformer and tokenizer, and the name to show it by."""
    folder, hub_id = resolve_model_setting(value, "classifier.model", config_source)
    layout = read_sentence_transformer(folder)
    transformer = layout.transformer if layout is not None else folder
    if not (transformer / "config.json").is_file():
        raise ValueError(f"classifier.model={value!r}: {transformer} has no config.json, so it holds no "
                         "transformers model.")
    return transformer, hub_id or str(folder)


@register_recipe
class MultiSourceRecipe(Recipe):
    name = "multisource"
    sections = {"classifier": ClassifierSettings, "translation": TranslationSettings}
    example_config = "multisource_topics"
    publish_ignore = ("runs",)  # every (setting, seed) run; the folder itself holds the kept classifier
    launcher = "python"  # the sweep runs its trainers one after the other, in one process
    # Trainer settings the method fixes unless the config says otherwise (sec. 4.1.2: AdamW, 2e-5, early stopping
    # on the validation metric evaluated at every epoch; the paper gives no maximum: 20 epochs here).
    training_defaults = {"learning_rate": 2e-5, "optim": "adamw_torch", "num_train_epochs": 20,
                         "eval_strategy": "epoch",
                         "save_strategy": "epoch", "load_best_model_at_end": True, "greater_is_better": True,
                         "save_total_limit": 1, "report_to": "none"}

    def __init__(self, run_config, output_dir):
        settings = run_config.classifier
        training = {**self.training_defaults, "metric_for_best_model": settings.metric, **run_config.training}
        if not training["load_best_model_at_end"] or training["metric_for_best_model"] != settings.metric:
            raise ValueError(
                f"training section of {run_config.source}: early stopping needs load_best_model_at_end: true and "
                f"metric_for_best_model: {settings.metric} (the metric of classifier.label_type "
                f"{settings.label_type!r}); got {training['load_best_model_at_end']} and "
                f"{training['metric_for_best_model']!r}.")
        epochs, patience = training["num_train_epochs"], settings.patience
        if training.get("max_steps", -1) > 0:
            raise ValueError(f"training.max_steps={training['max_steps']} in {run_config.source}: recipe multisource "
                             "trains up to training.num_train_epochs and stops early by classifier.patience (in "
                             "epochs); remove max_steps.")
        if patience is not None and epochs <= patience:
            raise ValueError(
                f"training.num_train_epochs={epochs} with classifier.patience={patience} in {run_config.source}: "
                f"early stopping needs {patience} epochs without improvement, so it could never stop before the "
                f"end. Raise num_train_epochs (the maximum, e.g. {patience + 10}) or set classifier.patience: null "
                "to train every epoch and keep the best.")
        if run_config.evaluation.suite:
            raise ValueError(f"evaluation.suite in {run_config.source}: recipe multisource evaluates on the data "
                             "folder's validation and test splits; remove the evaluation section.")
        super().__init__(dataclasses.replace(run_config, training=training), output_dir)
        self.settings: ClassifierSettings = settings
        needs_translation = any("translation" in SETTINGS[s] for s in settings.settings)
        if needs_translation and run_config.translation.kind is None:
            raise ValueError(f"classifier.settings {settings.settings} in {run_config.source} need an English "
                             "translation: set translation.column (a column of the TSVs, e.g. en), "
                             "translation.model (a seq2seq model folder or Hub id) or translation.function "
                             "(module:function).")
        self.translation: TranslationSettings | None = run_config.translation if needs_translation else None
        self.classifier_folder, self.classifier_source = resolve_classifier(settings.model, run_config.source)
        self.labels: list[str] = []
        self.evaluation: dict[str, datasets.Dataset] = {}
        self.sweep: MultiSourceSweep | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.run_config.data.train)

    @property
    def train_name(self) -> str:
        return str(self.data_dir / "train.tsv")

    def load_data(self):
        """The three splits as datasets with columns `text`, `label` (ids into `self.labels`) and, when a setting
        needs it, `translation`; the training split capped at `data.max_train_pairs` texts (a seeded sample)."""
        data = self.run_config.data
        if data.train is None:
            raise ValueError(f"data.train is not set in {self.run_config.source}: pass the folder that holds "
                             "train.tsv, validation.tsv and test.tsv (columns text, label and the translation "
                             "column), e.g. --set data.train=../shared/data/classification/topics/de.")
        if data.heldout or data.out_of_domain:
            raise ValueError(f"data.heldout / data.out_of_domain in {self.run_config.source}: recipe multisource "
                             "evaluates on the folder's validation.tsv and test.tsv; remove them.")
        folder = self.data_dir
        if not folder.is_dir():
            raise ValueError(f"data.train={data.train!r} in {self.run_config.source} is not a folder: pass the folder "
                             "that holds train.tsv, validation.tsv and test.tsv (columns text, label and the "
                             "translation column), e.g. --set data.train=../shared/data/classification/topics/de.")
        for split in SPLITS:
            if not (folder / f"{split}.tsv").is_file():
                what = ("early stopping needs a validation split: hold out part of train.tsv as validation.tsv"
                        if split == "validation" else f"add {split}.tsv")
                raise ValueError(f"{folder} has no {split}.tsv: {what} (columns text, label).")
        settings, translation = self.settings, self.translation
        columns = [settings.text_column, settings.label_column]
        if translation is not None and translation.kind == "column":
            columns.append(translation.column)
        tables = {split: read_tsv(folder / f"{split}.tsv", columns) for split in SPLITS}
        label_file, names = find_labels(folder)
        if names is None:  # the labels of the training split, in sorted order
            names = sorted_labels(tables["train"][settings.label_column])
            label_set = f"of {folder / 'train.tsv'} (no labels.json beside the data)"
        else:
            label_set = str(label_file)
        if settings.label_type == "categorical" and len(names) < 2:
            raise ValueError(f"The label set {label_set} has {len(names)} label: a classifier needs at least 2.")
        self.labels = names
        splits = {}
        for split, table in tables.items():
            where = str(folder / f"{split}.tsv")
            texts = table[settings.text_column]
            for line, text in enumerate(texts, start=2):
                if not text.strip():
                    raise ValueError(f"{where}, line {line}: the source text ({settings.text_column!r}) is empty; "
                                     "remove the row or fill in its text.")
            rows = {"text": texts, "label": label_ids(table[settings.label_column], names, where, label_set)}
            if translation is not None and translation.kind == "column":
                rows["translation"] = table[translation.column]
                for line, text in enumerate(rows["translation"], start=2):
                    if not text.strip():
                        raise ValueError(f"{where}, line {line}: the translation column {translation.column!r} is "
                                         "empty; fill it in or translate with translation.model instead.")
            splits[split] = datasets.Dataset.from_dict(rows)
        if data.max_train_pairs is not None and data.max_train_pairs < len(splits["train"]):
            splits["train"] = splits["train"].shuffle(seed=0).select(range(data.max_train_pairs))
        if translation is not None and translation.kind != "column":
            translator = translation.translator()
            for split, rows in splits.items():
                translated = translate_cached(translator, rows["text"], translation.cache_dir)
                splits[split] = rows.add_column("translation", translated)
            self.data_report["translator"] = {"id": translator.id}
        elif translation is not None:
            self.data_report["translator"] = {"id": f"column={translation.column}"}
        for split, rows in splits.items():
            self.data_report[split] = {"source": str(folder / f"{split}.tsv"), "texts": len(rows)}
        self.data_report["labels"] = {"names": names, "label_set": label_set}
        self.evaluation = {"validation": splits["validation"], "test": splits["test"]}
        return splits["train"], self.evaluation

    def prepare_tokenizer(self, train, args):
        # trust_remote_code=False: this package's tokenizers are plain tokenizer.json files (no question asked)
        return AutoTokenizer.from_pretrained(self.classifier_folder, trust_remote_code=False)

    def load_classifier(self):
        """`classifier.model` with a newly initialised classification layer over `self.labels`."""
        return AutoModelForSequenceClassification.from_pretrained(
            self.classifier_folder, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={name: index for index, name in enumerate(self.labels)}, trust_remote_code=False)

    def fit(self, train, tokenizer, args, resume):
        """The sweep (`MultiSourceSweep`): every setting and seed, one fine-tuning each; inputs are tokenized per
        setting."""
        self.sweep = MultiSourceSweep(self, args, tokenizer, train, self.input_limit(tokenizer))
        self.data_report["input_length"] = self.sweep.lengths
        return self.sweep.run(resume)

    def input_limit(self, tokenizer) -> int | None:
        """The most tokens the classifier reads (`model_token_limit`: its tokenizer's and its position embeddings')."""
        return model_token_limit(tokenizer, AutoConfig.from_pretrained(self.classifier_folder, trust_remote_code=False))

    def save(self, model, tokenizer):
        """The kept classifier (and its tokenizer) as the output folder's model."""
        shutil.copytree(self.sweep.best_folder, self.output_dir, dirs_exist_ok=True)
        return model

    def evaluate(self, model, tokenizer, evaluation) -> dict:
        """The table from the sweep's runs (each run tested its best-validation checkpoint), written beside the
        model as JSON, markdown and a plot."""
        runs = self.sweep.results
        table = results_table(runs, self.settings.settings, self.settings.metric, self.classifier_source)
        (self.output_dir / RESULTS_FILE).write_text(json.dumps(table, indent=2))
        (self.output_dir / TABLE_FILE).write_text(table_markdown([table], [Path(self.classifier_source).name]))
        plot_tables([table], self.output_dir / PLOT_FILE, [Path(self.classifier_source).name])
        return {"table": table, "runs": runs}

    def summary(self, results: dict) -> dict:
        """The figure of each setting (table 2), by the label type's metric."""
        table = results["table"]
        return {"metric": table["metric"], **{setting: entry["score"] for setting, entry in table["settings"].items()}}

    def saved_run(self, results: dict) -> dict:
        """The run whose classifier the folder holds: the last setting's best on validation."""
        saved = self.settings.settings[-1]
        return max((run for run in results["runs"] if run["setting"] == saved), key=lambda run: run["validation"])

    def card_data(self, model, results: dict) -> dict:
        """The classifier's card metadata: its test score on the data (typed by the data's id,
        `trainers.data.sources`), the data as `datasets`, a widget of test inputs and the classifier it started from
        as `base_model` when that is a Hub model."""
        best = self.saved_run(results)
        entry = EvalResult(task_type="text-classification", task_name="Text classification",
                           dataset_type=dataset_type(self.data_dir), dataset_name=str(self.data_dir),
                           dataset_split="test", metric_type=self.settings.metric,
                           metric_name=f"{self.settings.metric} ({best['setting']})",
                           metric_value=round(best["test"], 4))
        card_data = {"library_name": "transformers", "pipeline_tag": "text-classification",
                     "tags": ["text-classification", "multi-source", "machine-translation"], "eval_results": [entry],
                     "datasets": dataset_ids([self.data_dir]) or None, "widget": self.widget(best["setting"])}
        if not Path(self.settings.model).expanduser().is_dir():
            card_data["base_model"] = self.classifier_source
        return card_data

    def widget(self, setting: str, examples: int = 3) -> list[dict]:
        """The Hub widget of the card: the first test inputs as the saved classifier reads them in `setting`; both
        segments of A+B in one text, joined by the tokenizer's separator (`[SEP]`; `</s>` for this package's
        tokenizers, which pair segments with it), as NLI cards give a pair."""
        columns, rows = SETTINGS[setting], self.evaluation["test"]
        separator = ""
        if len(columns) > 1:
            tokenizer = AutoTokenizer.from_pretrained(self.output_dir)
            marker = tokenizer.sep_token or tokenizer.eos_token
            separator = f" {marker} " if marker else " "
        return [{"text": separator.join(row[column] for column in columns)}
                for row in rows.select(range(min(examples, len(rows))))]

    def card_context(self, model, results: dict) -> dict:
        best, name = self.saved_run(results), Path(self.classifier_source).name
        return dict(
            classifier=self.classifier_source, saved_setting=best["setting"],
            saved_title=SETTING_TITLES[best["setting"]], saved_seed=best["seed"], saved_test=best["test"],
            metric=self.settings.metric, label_type=self.settings.label_type, labels=self.labels,
            translator=self.data_report.get("translator", {}).get("id", "none (source only)"),
            table=table_markdown([results["table"]], [name]), plot=PLOT_FILE, seeds=self.settings.seeds,
            data=str(self.data_dir), input_length=self.data_report.get("input_length", {}),
            patience=self.settings.patience,
        )
