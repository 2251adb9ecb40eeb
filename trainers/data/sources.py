"""Where the package's data comes from, in one place: the dataset id of every data source a config or a suite can
name, for a card's `datasets:` and the `dataset.type` of its `model-index` entries, with what a reader needs to
find the source (its title, address and licence: the card's "Data sources" section).

None of these sources is a dataset on the Hugging Face Hub, so each id is a stable descriptive name of its origin (the
shared data's and the shipped data's READMEs and NOTICEs say where each file was taken from). A Hub dataset a config
names is its own id; a local file of the user's has none (its `model-index` type is its file name)."""

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

# Where the data shipped with the package lies (`default/heldout.jsonl.gz`, `debian`: names relative to it).
SHIPPED = Path(str(files(__package__)))
# The shared data beside a clone, as configs name it.
SHARED = "../shared/data"


@dataclass(frozen=True)
class DataSource:
    """A source of data: what it is (with its authors), where to find it, under which terms."""

    title: str
    url: str | None  # None: a source known by its publication (in the title) alone
    license: str


DATA_SOURCES = {
    "libreoffice-translations": DataSource(
        "LibreOffice user-interface and help translations", "https://git.libreoffice.org/translations", "MPL-2.0"),
    "libreoffice-help": DataSource("LibreOffice help pages", "https://git.libreoffice.org/help", "MPL-2.0"),
    "debian-ddtp": DataSource(
        "Debian package descriptions and their translations by the Debian Description Translation Project (DDTP)",
        "https://ddtp.debian.org/", "the licences of the packages described; DDTP translations under its free licence"),
    "chatterbot-corpus": DataSource("chatterbot-corpus conversations", "https://github.com/gunthercox/chatterbot-corpus",
                                    "BSD-3-Clause"),
    "vader-sentiment": DataSource("VADER sentiment ground truth (Hutto & Gilbert 2014)",
                                  "https://github.com/cjhutto/vaderSentiment", "MIT"),
    "simlex-999": DataSource("SimLex-999 (Hill, Reichart & Korhonen 2015)", "https://fh295.github.io/simlex.html",
                             "the benchmark's research terms"),
    "wordsim353-sim": DataSource("WordSim353, similarity part (Agirre et al. 2009)",
                                 "http://alfonseca.org/eng/research/wordsim353.html", "the benchmark's research terms"),
    "men": DataSource("MEN (Bruni, Tran & Baroni 2014)", "https://staff.fnwi.uva.nl/e.bruni/MEN",
                      "the benchmark's research terms"),
    "semeval-2017-task2": DataSource("SemEval-2017 task 2, English word similarity (Camacho-Collados et al. 2017)",
                                     "https://alt.qcri.org/semeval2017/task2/", "the benchmark's research terms"),
    "lee50-documents": DataSource("Lee 50-document similarity ratings (Lee, Pincombe & Welsh 2005, \"An empirical "
                                  "evaluation of models of text document similarity\", CogSci)", None,
                                  "the benchmark's research terms"),
}

# Each data key -> its source's id: shipped data by its name under `SHIPPED`, shared data by its path under `SHARED`.
# A key covers everything below it (`default` holds default/train.jsonl.gz and default/heldout.jsonl.gz).
DATA_KEYS = {
    "default": "libreoffice-translations",  # the embedded corpus (trainers/data/default/NOTICE.md)
    "debian": "debian-ddtp",  # out-of-domain pairs (trainers/data/debian/NOTICE.md)
    "multitask/documents": "libreoffice-help",  # trainers/data/multitask/NOTICE.md
    "multitask/chatterbot.jsonl.gz": "chatterbot-corpus",
    f"{SHARED}/parallel": "libreoffice-translations",  # train.tsv.gz and the multi-parallel dev/ folder
    f"{SHARED}/documents": "libreoffice-help",
    f"{SHARED}/conversation/chatterbot.jsonl": "chatterbot-corpus",
    f"{SHARED}/classification/topics": "debian-ddtp",
    f"{SHARED}/classification/sentiment5": "vader-sentiment",
    f"{SHARED}/similarity/en-simlex999.tsv": "simlex-999",
    f"{SHARED}/similarity/en-wordsim353-sim.tsv": "wordsim353-sim",
    f"{SHARED}/similarity/en-men.tsv": "men",
    f"{SHARED}/similarity/en-semeval17.tsv": "semeval-2017-task2",
    f"{SHARED}/similarity/en-lee50-documents.tsv": "lee50-documents",
}


def data_key(source: str | Path) -> str | None:
    """The key of `DATA_KEYS` form of a source: shipped data by its name under `SHIPPED` (as a config names it, or
    as a path into the installed package), anything inside a `shared/data` folder as `../shared/data/...` (however the
    config reaches it); None for other data."""
    path = Path(source).expanduser()
    if not path.exists() and not path.is_absolute() and (SHIPPED / path).exists():  # `data_file`'s rule
        return path.as_posix()
    if path.is_absolute() and path.resolve().is_relative_to(SHIPPED.resolve()):
        return path.resolve().relative_to(SHIPPED.resolve()).as_posix()
    parts = path.parts
    for start in range(len(parts) - 2, -1, -1):
        if parts[start:start + 2] == ("shared", "data"):
            return "/".join((SHARED, *parts[start + 2:]))
    return None


def dataset_id(source: str | Path) -> str | None:
    """The dataset id of a data source that loaded: its source's id (`DATA_KEYS`, the longest key that covers it) for
    shipped and shared data, the name itself for a Hub dataset (neither a local path nor shipped data), None for a
    local file or folder of other data."""
    key = data_key(source)
    if key is not None:
        parts = key.split("/")
        for end in range(len(parts), 0, -1):
            if "/".join(parts[:end]) in DATA_KEYS:
                return DATA_KEYS["/".join(parts[:end])]
        return None
    return None if Path(source).expanduser().exists() else str(source)


def dataset_type(source: str | Path) -> str:
    """The `model-index` dataset type of evaluation data: its `dataset_id`, else (a local file of other data) its file
    name."""
    return dataset_id(source) or Path(source).name


def dataset_ids(sources) -> list[str]:
    """The card's `datasets`: the ids of `sources` that have one, each once, in order."""
    return list(dict.fromkeys(filter(None, map(dataset_id, sources))))
