"""Bitext mining with ratio-margin scores (BUCC protocol, EMS paper sec. 5.2 and its footnote 22, the
sentence-transformers bucc2018.py recipe; margin of Artetxe & Schwenk, 2019).

Pipeline: k nearest neighbours both ways (`knn`), ratio margin of each neighbour pair (`margin_scores`), the best
candidate of each source and each target kept one-to-one (`extract_pairs`), a score threshold chosen on a dev part
of the sources for the best F1 against the gold pairs (`select_threshold`), and precision / recall / F1 on the
remaining test sources with the `bitext_mining` metric (`evaluate_mining`, `BitextMiningEvaluator`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import load_metric
from .common import EmbedFn, checked_texts, embed_distinct, l2_normalize
from .knn import knn

MODES = ("max", "forward", "backward", "intersection")


@dataclass(frozen=True)
class MarginCandidates:
    """Nearest neighbours on the other side, nearest by cosine first, with their ratio-margin scores.

    `forward_indices[i]` are target rows near source i and `forward_scores[i]` their margins; `backward_*` the
    same from each target to the sources. `source_means[i]` / `target_means[j]` are the mean cosines of the k
    nearest neighbours of source i among the targets / of target j among the sources (the margin denominators).
    """

    forward_indices: np.ndarray
    forward_scores: np.ndarray
    backward_indices: np.ndarray
    backward_scores: np.ndarray
    source_means: np.ndarray
    target_means: np.ndarray


def ratio_margin(cosines, source_means, target_means) -> np.ndarray:
    """Ratio margin of Artetxe & Schwenk (2019), elementwise, from each side's mean cosine to its k nearest neighbours:
    cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)."""
    cosines = np.asarray(cosines, dtype=np.float64)
    return cosines / ((np.asarray(source_means, dtype=np.float64) + np.asarray(target_means, dtype=np.float64)) / 2)


def margin_scores(
    source,
    target,
    k: int = 4,
    candidates: int | None = None,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> MarginCandidates:
    """Ratio-margin scores of each source's and each target's `candidates` (default `k`) nearest neighbours.

    Built from two k-NN searches (source -> target and target -> source), so memory stays O((N + M) * candidates)
    and no N x M matrix is formed. The margin denominators use the `k` nearest neighbours (k = 4 in the paper).
    """
    source = l2_normalize(source, "source embeddings")
    target = l2_normalize(target, "target embeddings")
    smaller = min(source.shape[0], target.shape[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= smaller:
        raise ValueError(f"k={k!r} must be an int in [1, {smaller}] (the smaller side holds {smaller} sentences); "
                         "lower k or embed more sentences.")
    candidates = k if candidates is None else candidates
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < k:
        raise ValueError(f"candidates={candidates!r} must be an int >= k={k}: the margin needs the k nearest.")
    forward_cosines, forward_indices = knn(
        source, target, min(candidates, target.shape[0]), backend=backend, chunk_size=chunk_size
    )
    backward_cosines, backward_indices = knn(
        target, source, min(candidates, source.shape[0]), backend=backend, chunk_size=chunk_size
    )
    source_means = forward_cosines[:, :k].mean(axis=1)
    target_means = backward_cosines[:, :k].mean(axis=1)
    return MarginCandidates(
        forward_indices=forward_indices,
        forward_scores=ratio_margin(forward_cosines, source_means[:, None], target_means[forward_indices]),
        backward_indices=backward_indices,
        backward_scores=ratio_margin(backward_cosines, source_means[backward_indices], target_means[:, None]),
        source_means=source_means,
        target_means=target_means,
    )


def extract_pairs(margins: MarginCandidates, mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs `(source, target)` as an `(P, 2)` int64 array and their margins, best first, one-to-one.

    Artetxe & Schwenk (2019) candidate generation: "forward" takes each source's best target by margin,
    "backward" each target's best source, "intersection" the pairs found both ways, "max" the union of both. Pairs
    are then kept greedily by decreasing score so that each source and each target appears once.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    sources = np.arange(len(margins.forward_indices))
    targets = np.arange(len(margins.backward_indices))
    best_target = margins.forward_indices[sources, margins.forward_scores.argmax(axis=1)]
    best_source = margins.backward_indices[targets, margins.backward_scores.argmax(axis=1)]
    forward = (sources, best_target, margins.forward_scores.max(axis=1))
    backward = (best_source, targets, margins.backward_scores.max(axis=1))
    if mode == "forward":
        parts = [forward]
    elif mode == "backward":
        parts = [backward]
    elif mode == "intersection":
        mutual = best_source[best_target] == sources
        parts = [tuple(column[mutual] for column in forward)]
    else:
        parts = [forward, backward]
    pair_sources, pair_targets, scores = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(-scores, kind="stable")
    kept, used_sources, used_targets = [], set(), set()
    for position in order.tolist():
        source, target = int(pair_sources[position]), int(pair_targets[position])
        if source not in used_sources and target not in used_targets:
            used_sources.add(source)
            used_targets.add(target)
            kept.append(position)
    kept = np.asarray(kept, dtype=np.int64)
    return np.stack([pair_sources[kept], pair_targets[kept]], axis=1).astype(np.int64), scores[kept]


def gold_references(gold: Sequence[tuple[int, int]], num_sources: int, num_targets: int) -> np.ndarray:
    """Per-source gold target ids (-1 for none) from gold `(source, target)` pairs, checked against the corpus."""
    if len(gold) == 0:
        raise ValueError("gold holds no (source, target) pairs: mining F1 needs at least one gold translation pair.")
    pairs = np.asarray(gold)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"gold must be a list of (source_index, target_index) int pairs, got array shape {pairs.shape}"
                         f" of dtype {pairs.dtype}.")
    for column, side, size in ((0, "source", num_sources), (1, "target", num_targets)):
        bad = np.flatnonzero((pairs[:, column] < 0) | (pairs[:, column] >= size))
        if bad.size:
            raise ValueError(
                f"gold pair {bad[0]} {tuple(pairs[bad[0]].tolist())} has {side} index {pairs[bad[0], column]} outside "
                f"[0, {size}) ({size} {side} sentences); gold indices must point into the given texts."
            )
    sources, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"source {sources[counts > 1][0]} has {counts[counts > 1][0]} gold targets; the BUCC metric scores one "
            "target per source, keep one gold pair per source."
        )
    references = np.full(num_sources, -1, dtype=np.int64)
    references[pairs[:, 0]] = pairs[:, 1]
    return references


def predictions_above(pairs: np.ndarray, scores: np.ndarray, threshold: float, num_sources: int) -> np.ndarray:
    """Per-source mined target ids (-1 for none) from the pairs scoring at least `threshold`."""
    predictions = np.full(num_sources, -1, dtype=np.int64)
    kept = pairs[scores >= threshold]
    predictions[kept[:, 0]] = kept[:, 1]
    return predictions


def select_threshold(
    pairs: np.ndarray, scores: np.ndarray, references: np.ndarray, sources: np.ndarray | None = None
) -> tuple[float, float]:
    """The margin threshold with the best F1 of the pairs scoring at least it, and that F1 (BUCC dev tuning).

    `pairs` / `scores` are best first as from `extract_pairs`; `references` are per-source gold target ids (-1 for
    none). Only the pairs and gold of `sources` (default: all) count. Cuts fall at the midpoint between distinct
    scores; with no correct pair, the threshold lies just above the best score so that nothing is extracted.
    """
    part = np.zeros(len(references), dtype=bool)
    part[np.arange(len(references)) if sources is None else sources] = True
    num_gold = int((references[part] != -1).sum())
    if num_gold == 0:
        raise ValueError("select_threshold needs at least one source with a gold target among those to tune on.")
    inside = part[pairs[:, 0]]
    pairs, scores = pairs[inside], np.asarray(scores, dtype=np.float64)[inside]
    if len(scores) == 0:
        raise ValueError("No candidate pair has a source to tune on; extract candidates with mode='max'.")
    correct = np.cumsum(references[pairs[:, 0]] == pairs[:, 1])
    # F1 = 2PR / (P + R) with P = correct / extracted and R = correct / gold, for each prefix of the ranking
    f1 = 2 * correct / (np.arange(1, len(scores) + 1) + num_gold)
    cuts = np.flatnonzero(np.append(scores[:-1] > scores[1:], True))
    best = cuts[np.argmax(f1[cuts])]
    if f1[best] == 0:
        return float(np.nextafter(scores[0], np.inf)), 0.0
    threshold = (scores[best] + scores[best + 1]) / 2 if best + 1 < len(scores) else scores[best]
    return float(threshold), float(f1[best])


def split_sources(references: np.ndarray, dev_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted dev and test source ids, drawn with `seed` so that each part holds `dev_fraction` / the rest of both
    the sources with a gold target and those without (at least one gold source in each part)."""
    if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, (int, float)) or not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction={dev_fraction!r} must lie strictly between 0 and 1 (the share of sources "
                         "used to tune the threshold).")
    with_gold = np.flatnonzero(references != -1)
    if len(with_gold) < 2:
        raise ValueError(f"{len(with_gold)} gold pair(s) given: tuning on a dev part and scoring a test part needs "
                         "at least 2 (one per part).")
    rng = np.random.default_rng(seed)
    dev, test = [], []
    for group, in_both_parts in ((with_gold, True), (np.flatnonzero(references == -1), False)):
        shuffled = rng.permutation(group)
        cut = round(dev_fraction * len(shuffled))
        if in_both_parts:
            cut = min(max(cut, 1), len(shuffled) - 1)
        dev.append(shuffled[:cut])
        test.append(shuffled[cut:])
    return np.sort(np.concatenate(dev)), np.sort(np.concatenate(test))


def evaluate_mining(
    source_embeddings,
    target_embeddings,
    gold: Sequence[tuple[int, int]],
    dev_fraction: float = 0.5,
    seed: int = 0,
    k: int = 4,
    mode: str = "max",
    backend: str = "auto",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Mine the whole corpus, tune the threshold on a dev part of the sources, and score the other (test) sources.

    Returns `precision`, `recall`, `f1` on the test sources (the `bitext_mining` metric), the tuned `threshold`
    and the `dev_f1` it reached.
    """
    source = l2_normalize(source_embeddings, "source embeddings")
    target = l2_normalize(target_embeddings, "target embeddings")
    references = gold_references(gold, len(source), len(target))
    dev, test = split_sources(references, dev_fraction, seed)
    margins = margin_scores(source, target, k=k, backend=backend, chunk_size=chunk_size)
    pairs, scores = extract_pairs(margins, mode)
    threshold, dev_f1 = select_threshold(pairs, scores, references, dev)
    predictions = predictions_above(pairs, scores, threshold, len(references))
    results = load_metric("bitext_mining").compute(predictions=predictions[test], references=references[test])
    return {**results, "threshold": threshold, "dev_f1": dev_f1}


class BitextMiningEvaluator:
    """BUCC-style bitext mining of an embedding function on a comparable corpus with gold translation pairs.

    `gold` lists `(source_index, target_index)` translation pairs; the other sentences are unpaired. Calling the
    evaluator with `embed` (texts -> `(len(texts), dim)` array) returns `{name}_f1`, `{name}_precision`,
    `{name}_recall` (test sources), `{name}_threshold` and `{name}_dev_f1`; see `evaluate_mining`.
    """

    def __init__(
        self,
        sources: list[str],
        targets: list[str],
        gold: Sequence[tuple[int, int]],
        dev_fraction: float = 0.5,
        seed: int = 0,
        k: int = 4,
        mode: str = "max",
        backend: str = "auto",
        chunk_size: int | None = None,
        name: str = "bitext",
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}.")
        self.sources = checked_texts(sources, "sources")
        self.targets = checked_texts(targets, "targets")
        split_sources(gold_references(gold, len(self.sources), len(self.targets)), dev_fraction, seed)
        self.gold = [tuple(pair) for pair in gold]
        self.options = {"dev_fraction": dev_fraction, "seed": seed, "k": k, "mode": mode, "backend": backend,
                        "chunk_size": chunk_size}
        self.name = name

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        (sources,) = embed_distinct(embed, {"source": self.sources})
        (targets,) = embed_distinct(embed, {"target": self.targets})
        results = evaluate_mining(sources, targets, self.gold, **self.options)
        return {f"{self.name}_{key}": value for key, value in results.items()}
