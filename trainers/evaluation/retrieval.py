"""Translation retrieval: P@1 by cosine similarity both ways (Tatoeba protocol, EMS paper sec. 5.1), P@N against
K = 999 random distractors (multi-task dual-encoder paper, Chidambaram et al. 2019, sec. 3.4), and margin-scored
retrieval from a large pool (ParaCrawl, 2k queries vs 200k candidates, EMS paper sec. 5.3). P@k values come from
the `precision_at_k` metric.

A hit is judged by text, as sentence-transformers' `TranslationEvaluator` does: a retrieved candidate whose text
equals the gold translation's is a hit even when it is another row. Test sets repeat translations (41 of the 79
files in ../shared/data/parallel/dev hold identical targets), and identical texts have identical embeddings, so
judging by row would count a tie lost to a copy of the gold as a miss. The functions on embedding arrays take the
text of each row as ids (`text_ids`); without them every row is its own text."""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm.auto import tqdm

from ..metrics import load_metric
from .common import EmbedFn, checked_texts, embed_distinct, l2_normalize
from .knn import BLOCK_ELEMENTS, checked_chunk_size, knn
from .mining import margin_scores, ratio_margin

# The char 2-4-gram TF-IDF baseline's settings.
TFIDF_OPTIONS = {"analyzer": "char_wb", "ngram_range": (2, 4), "lowercase": True, "sublinear_tf": True}


def cosine_similarity_matrix(source, target) -> np.ndarray:
    """`(len(source), len(target))` float32 cosines between the rows of two embedding arrays."""
    return l2_normalize(source, "source embeddings") @ l2_normalize(target, "target embeddings").T


def text_ids(texts: Sequence[str]) -> np.ndarray:
    """One id per text, equal for equal texts (the row of its first occurrence): how hits are judged by text."""
    first = {}
    return np.array([first.setdefault(text, row) for row, text in enumerate(texts)], dtype=np.int64)


def checked_ids(ids, count: int, name: str) -> np.ndarray:
    """`ids` (one per row of `name`) as an int64 array, or `arange(count)` (every row its own text) when None."""
    if ids is None:
        return np.arange(count)
    ids = np.asarray(ids)
    if ids.shape != (count,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} ids must be {count} ints, one per row of the {name} (e.g. `text_ids(texts)`), got "
                         f"an array of shape {ids.shape} and dtype {ids.dtype}.")
    return ids.astype(np.int64, copy=False)


def precision_at(rankings: np.ndarray, references: np.ndarray, cutoffs: Sequence[int]) -> dict[str, float]:
    """`precision_at_<n>` for each cut-off n, from per-query ranked candidate ids and gold ids."""
    return load_metric("precision_at_k").compute(predictions=rankings, references=references, k=list(cutoffs))


def checked_cutoffs(n: Sequence[int]) -> list[int]:
    """The P@N cut-offs as a sorted list, checked to be positive ints."""
    cutoffs = [n] if isinstance(n, (int, np.integer)) else list(n)
    if not cutoffs or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in cutoffs):
        raise ValueError(f"n={n!r} must be a positive int or a non-empty list of them (the P@N cut-offs).")
    return sorted({int(cut) for cut in cutoffs})


def _paired(queries, candidates, query_name: str, candidate_name: str) -> tuple[np.ndarray, np.ndarray]:
    queries, candidates = l2_normalize(queries, query_name), l2_normalize(candidates, candidate_name)
    if candidates.shape[0] < queries.shape[0]:
        raise ValueError(
            f"{queries.shape[0]} {query_name} but only {candidates.shape[0]} {candidate_name}: row i of the "
            f"{candidate_name} is the translation of {query_name} row i, so pass at least as many {candidate_name}."
        )
    return queries, candidates


def pool_retrieval(
    queries,
    candidates,
    n: Sequence[int] = (1,),
    margin: bool = False,
    k: int = 4,
    backend: str = "auto",
    chunk_size: int | None = None,
    candidate_ids=None,
) -> dict[str, float]:
    """P@N of finding each query's translation among all candidates; returns `precision_at_<n>` for each n.

    Row i of `candidates` translates query i; rows from `len(queries)` on are extra pool (ParaCrawl protocol,
    EMS paper sec. 5.3: 2k queries against 200k candidates). With `margin`, the max(n, k) nearest candidates by
    cosine are re-ranked by ratio margin with k neighbours both ways (Artetxe & Schwenk 2019), as in the paper.
    `candidate_ids` (`text_ids` of the candidate texts) make any candidate with the gold's text a hit.
    """
    queries, candidates = _paired(queries, candidates, "queries", "candidates")
    cutoffs = checked_cutoffs(n)
    ids = checked_ids(candidate_ids, candidates.shape[0], "candidate")
    if margin:
        margins = margin_scores(queries, candidates, k=k, candidates=max(k, cutoffs[-1]), backend=backend,
                                chunk_size=chunk_size)
        order = np.argsort(-margins.forward_scores, axis=1, kind="stable")
        rankings = np.take_along_axis(margins.forward_indices, order, axis=1)
    else:
        rankings = knn(queries, candidates, cutoffs[-1], backend=backend, chunk_size=chunk_size)[1]
    return precision_at(ids[rankings[:, : cutoffs[-1]]], ids[: queries.shape[0]], cutoffs)


def checked_num_distractors(num_distractors: int, available: int, cutoffs: Sequence[int]) -> int:
    """`num_distractors` checked to be a positive int below `available` targets, leaving room for P@max(cutoffs)."""
    if isinstance(num_distractors, bool) or not isinstance(num_distractors, (int, np.integer)) or num_distractors < 1:
        raise ValueError(f"num_distractors={num_distractors!r} must be a positive int (K random distractors).")
    if num_distractors >= available:
        raise ValueError(f"num_distractors={num_distractors} needs at least {num_distractors + 1} targets (pool texts "
                         f"included), got {available}; lower num_distractors or add targets.")
    if max(cutoffs) > num_distractors + 1:
        raise ValueError(f"P@{max(cutoffs)} exceeds the {num_distractors + 1} ranked candidates (gold + "
                         f"num_distractors={num_distractors}); lower precision_at or raise num_distractors.")
    return int(num_distractors)


def draw_distractors(num_sources: int, num_targets: int, num_distractors: int, seed: int = 0) -> np.ndarray:
    """`(num_sources, num_distractors + 1)` target rows ranked for each source: row i draws `num_distractors`
    distinct targets other than i uniformly with `seed`, then its gold target i last."""
    rng = np.random.default_rng(seed)
    candidates = np.empty((num_sources, num_distractors + 1), dtype=np.int64)
    for row in range(num_sources):
        others = rng.choice(num_targets - 1, size=num_distractors, replace=False)
        candidates[row, :-1] = others + (others >= row)  # skip the gold target
        candidates[row, -1] = row  # gold last, so that the stable sort ranks ties against it
    return candidates


def distractor_retrieval(
    sources,
    targets,
    n: Sequence[int] = (1,),
    num_distractors: int = 999,
    margin: bool = False,
    k: int = 4,
    seed: int = 0,
    backend: str = "auto",
    chunk_size: int | None = None,
    target_ids=None,
) -> dict[str, float]:
    """P@N of ranking each source's translation among it and `num_distractors` random other targets (Chidambaram
    et al. 2019, sec. 3.4: K = 999); returns `precision_at_<n>` for each n.

    Row i of `targets` translates source i; rows from `len(sources)` on only serve as distractors. Distractors are
    drawn per source with `seed` (`draw_distractors`) from all other targets; a distractor scoring the same as the
    gold target ranks before it. A hit is a candidate among the first n whose id in `target_ids` (`text_ids` of the
    target texts; default: its row) equals the gold's, so a drawn copy of the gold text counts as the gold. With
    `margin`, cosines are replaced by ratio margins whose k-neighbourhoods span all sources and all targets.
    """
    sources, targets = _paired(sources, targets, "sources", "targets")
    cutoffs = checked_cutoffs(n)
    num_distractors = checked_num_distractors(num_distractors, targets.shape[0], cutoffs)
    ids = checked_ids(target_ids, targets.shape[0], "target")
    candidates = draw_distractors(sources.shape[0], targets.shape[0], num_distractors, seed)
    # values held per gathered target row: its dimension, or its mean stored values when sparse
    width = targets.nnz // targets.shape[0] + 1 if sparse.issparse(targets) else targets.shape[1]
    step = checked_chunk_size(chunk_size, max(1, BLOCK_ELEMENTS // (candidates.shape[1] * width)))
    scores = np.empty(candidates.shape, dtype=np.float64)
    for start in range(0, sources.shape[0], step):
        rows = slice(start, start + step)
        scores[rows] = candidate_cosines(sources[rows], targets, candidates[rows])
    if margin:
        margins = margin_scores(sources, targets, k=k, backend=backend, chunk_size=chunk_size)
        scores = ratio_margin(scores, margins.source_means[:, None], margins.target_means[candidates])
    order = np.argsort(-scores, axis=1, kind="stable")[:, : cutoffs[-1]]
    return precision_at(ids[np.take_along_axis(candidates, order, axis=1)], ids[: sources.shape[0]], cutoffs)


def candidate_cosines(sources, targets, candidates: np.ndarray) -> np.ndarray:
    """`(len(sources), c)` dot products of source i with the target rows `candidates[i]` (unit rows: cosines), for
    dense arrays or CSR arrays alike."""
    if not sparse.issparse(sources):
        return np.einsum("qd,qcd->qc", sources, targets[candidates])
    repeated = sources[np.repeat(np.arange(sources.shape[0]), candidates.shape[1])]
    return repeated.multiply(targets[candidates.ravel()]).sum(axis=1).reshape(candidates.shape)


class RetrievalEvaluator:
    """Translation retrieval of an embedding function on parallel `sources` / `targets` (row i translates row i).

    Calling it with `embed` (texts -> `(len(texts), dim)` array) returns Tatoeba P@1 by cosine both ways over the
    pairs: `{name}_p@1` (mean), `{name}_p@1_src2tgt`, `{name}_p@1_tgt2src`. With `precision_at` (e.g. `(1, 5, 10)`)
    it adds `{name}_p@{n}_k{num_distractors}` for each n, sources against `num_distractors` random distractor
    targets drawn with `seed` (`distractor_retrieval`, `_margin` appended when `margin`). With a `pool` of extra
    target-language texts it adds `{name}_pool_p@1_margin`: margin-scored P@1 of the sources among targets + pool
    (`pool_retrieval`), and the pool also supplies distractors. Every hit is judged by text: a retrieved text equal
    to the gold translation is a hit (see the module docstring). `note` says how the evaluator was set up where a
    reader of the results needs to know it (`run_suite` reports it beside the metrics).
    """

    def __init__(
        self,
        sources: list[str],
        targets: list[str],
        pool: list[str] | None = None,
        precision_at: Sequence[int] | None = None,
        num_distractors: int = 999,
        margin: bool = False,
        k: int = 4,
        seed: int = 0,
        backend: str = "auto",
        chunk_size: int | None = None,
        name: str = "retrieval",
        note: str | None = None,
    ):
        self.sources = checked_texts(sources, "sources")
        self.targets = checked_texts(targets, "targets")
        if len(self.sources) != len(self.targets):
            raise ValueError(f"{len(self.sources)} sources but {len(self.targets)} targets: retrieval needs parallel "
                             "lists where targets[i] translates sources[i].")
        self.pool = [] if pool is None else checked_texts(pool, "pool")
        self.precision_at = None if precision_at is None else checked_cutoffs(precision_at)
        if self.precision_at is not None:
            num_distractors = checked_num_distractors(num_distractors, len(self.targets) + len(self.pool),
                                                      self.precision_at)
        self.num_distractors, self.margin, self.k, self.seed = num_distractors, margin, k, seed
        self.search = {"backend": backend, "chunk_size": chunk_size}
        self.name, self.note = name, note

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        (sources,) = embed_distinct(embed, {"source": self.sources}, allow_sparse=True)
        (targets,) = embed_distinct(embed, {"target": self.targets + self.pool}, allow_sparse=True)
        sources, targets = l2_normalize(sources, "source embeddings"), l2_normalize(targets, "target embeddings")
        paired = targets[: len(self.sources)]
        source_ids, target_ids = text_ids(self.sources), text_ids(self.targets + self.pool)
        forward = pool_retrieval(sources, paired, candidate_ids=target_ids[: len(self.sources)],
                                 **self.search)["precision_at_1"]
        backward = pool_retrieval(paired, sources, candidate_ids=source_ids, **self.search)["precision_at_1"]
        results = {"p@1": (forward + backward) / 2, "p@1_src2tgt": forward, "p@1_tgt2src": backward}
        if self.precision_at is not None:
            suffix = f"_k{self.num_distractors}" + ("_margin" if self.margin else "")
            precision = distractor_retrieval(sources, targets, self.precision_at, self.num_distractors, self.margin,
                                             self.k, self.seed, target_ids=target_ids, **self.search)
            results.update({f"p@{cut}{suffix}": precision[f"precision_at_{cut}"] for cut in self.precision_at})
        if self.pool:
            results["pool_p@1_margin"] = pool_retrieval(sources, targets, margin=True, k=self.k,
                                                        candidate_ids=target_ids, **self.search)["precision_at_1"]
        return {f"{self.name}_{key}": value for key, value in results.items()}


class TfidfPool:
    """The character 2-4-gram TF-IDF baseline as an embedding function over one retrieval pool.

    Fitted on `texts` (duplicates kept); each distinct text gets its unit TF-IDF vector as a row of a scipy CSR
    array (one column per n-gram, about 150 stored values per sentence), so memory grows with the pool, not with its
    square. The evaluators that take it (retrieval, margin, eigen-similarity) score the sparse rows exactly; the
    others refuse them (`embed_distinct`). It embeds only texts of its pool."""

    def __init__(self, texts: Sequence[str]):
        texts = list(texts)
        vectorizer = TfidfVectorizer(**TFIDF_OPTIONS).fit(texts)
        self.texts = list(dict.fromkeys(texts))
        self.vectors = sparse.csr_array(vectorizer.transform(self.texts))
        self.index = {text: row for row, text in enumerate(self.texts)}

    def __call__(self, texts: Sequence[str]) -> sparse.csr_array:
        missing = [text for text in texts if text not in self.index]
        if missing:
            raise ValueError(f"TF-IDF is fitted on its retrieval pool and cannot embed {len(missing)} texts outside "
                             f"it, e.g. {missing[0]!r}.")
        return self.vectors[[self.index[text] for text in texts]]


def tfidf_embedder(evaluator: RetrievalEvaluator) -> TfidfPool:
    """TF-IDF fitted on everything a retrieval evaluator embeds: its sources, targets and extra pool."""
    return TfidfPool(evaluator.sources + evaluator.targets + list(getattr(evaluator, "pool", None) or []))


def retrieval_by_language(pairs, embed: EmbedFn | None = None, progress: str | None = None
                          ) -> dict[str, dict[str, float]]:
    """Tatoeba P@1 per language pair of a pair dataset (`src, tgt, src_lang, tgt_lang`), each pair's pool its own
    rows, plus `"average"` over the language pairs: `RetrievalEvaluator` on each language pair, with `embed`, or with
    the char 2-4-gram TF-IDF baseline fitted on that pool when `embed` is None. Keys are `src_lang-tgt_lang`; `p@1`
    is the mean of both directions, hits judged by text. `progress`: the label of a progress bar over the language
    pairs (none when None)."""
    groups = defaultdict(lambda: ([], []))
    for row in pairs:
        sources, targets = groups[f"{row['src_lang']}-{row['tgt_lang']}"]
        sources.append(row["src"])
        targets.append(row["tgt"])
    if not groups:
        raise ValueError("No pairs to evaluate retrieval on.")
    results = {}
    for name in tqdm(sorted(groups), desc=progress, disable=progress is None):
        evaluator = RetrievalEvaluator(*groups[name], name=name)
        metrics = evaluator(embed if embed is not None else tfidf_embedder(evaluator))
        results[name] = {key.removeprefix(f"{name}_"): value for key, value in metrics.items()}
        results[name]["size"] = len(evaluator.sources)
    results["average"] = {key: float(np.mean([r[key] for r in results.values()]))
                          for key in ("p@1", "p@1_src2tgt", "p@1_tgt2src")}
    return results
