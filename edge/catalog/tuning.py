"""Choose the search backend and Annoy's n_trees / search_k for a target recall.

Recall@k is measured against exact search on held-out queries: the caller's (e.g. the
validation embeddings) or, when it has none, a sample of catalog vectors left out of the
candidate indexes (the chosen tree count is then rebuilt over all vectors). Querying with
vectors that are in the index overstates a tree index's recall (0.95 measured that way was
0.91 on held-out vectors in our clustered benchmark), so that is not done. For each tree
count of a doubling ladder that fits the size budget, the smallest search_k reaching the
target is found (doubling, then bisection; the recall's one-sided 95% lower confidence bound
must reach the target, so that unseen queries keep it) and its single-query latency measured; more
trees are tried while they cut search_k (the candidates each query scores, what its time
is proportional to, and unlike a timing on a busy machine, reproducible) by at least 10%.
The chosen Annoy setting is then timed against exact numpy search on the same vectors
(single queries, median), and the faster one is chosen.
All of it is recorded in `TuningReport` (the index spec's "tuning" section).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from shelfsight.atomic import publish
from shelfsight.errors import ConfigError
from shelfsight.timing import latencies

from .ann import AnnoyBackend, annoy_available, annoy_node_bytes, build_annoy
from .vectors import ExactSearch

BACKENDS = ("auto", "annoy", "exact")
MIN_ANN_VECTORS = 1000  # below this "auto" searches exactly unmeasured: tens of microseconds, timing noise would decide
MIN_TUNABLE_VECTORS = 100  # a forced Annoy index needs a held-out tenth of at least 10 queries
Z_ONE_SIDED_95 = 1.645
FEWER_BY = 0.9  # more trees must cut search_k to 90% or less to be kept (and tried further)


@dataclass(frozen=True)
class TuningOptions:
    """How the index is tuned.

    Attributes:
        target_recall: recall@k against exact search that Annoy must reach, in (0, 1].
        k: the k of recall@k (and what search_k is tuned for).
        n_queries: held-out queries used for the measurement (fewer if fewer are available).
        backend: "auto" (faster of Annoy and exact, measured), "annoy" or "exact".
        max_overhead: the trees may add at most this share to the one node per vector that
            every Annoy file holds (N x (12 + 4 D) bytes); None for no relative limit.
        free_mb: an Annoy file up to this many MB is never refused for its overhead (small
            catalogs are not worth trading query speed for bytes).
        max_index_mb: absolute limit on the Annoy file in MB (10^6 bytes); None for none.
        max_trees: largest tree count tried.
        seed: Annoy's random seed and the query sampler's.
        n_jobs: threads for Annoy's build (1 gives reproducible trees; -1 uses all cores).
    """

    target_recall: float = 0.95
    k: int = 10
    n_queries: int = 500
    backend: str = "auto"
    max_overhead: float | None = 0.15
    free_mb: float = 8.0
    max_index_mb: float | None = None
    max_trees: int = 64
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"target_recall {self.target_recall} must be in (0, 1]")
        if self.k < 1 or self.n_queries < 1 or self.max_trees < 1:
            raise ConfigError(f"k, n_queries and max_trees must be >= 1, got "
                              f"{self.k}, {self.n_queries}, {self.max_trees}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} unknown, expected one of {BACKENDS}")
        if self.max_overhead is not None and self.max_overhead < 0:
            raise ConfigError(f"max_overhead {self.max_overhead} must be >= 0 or None")
        if self.free_mb < 0:
            raise ConfigError(f"free_mb {self.free_mb} must be >= 0")
        if self.max_index_mb is not None and self.max_index_mb <= 0:
            raise ConfigError(f"max_index_mb {self.max_index_mb} must be > 0 or None")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ConfigError(f"n_jobs {self.n_jobs} must be >= 1, or -1 for all cores")

    def budget_bytes(self, n: int, dimension: int) -> float:
        """Largest Annoy file allowed for n vectors of this dimension (inf for no limit)."""
        relative = math.inf if self.max_overhead is None else (1.0 + self.max_overhead) * n * annoy_node_bytes(dimension)
        absolute = math.inf if self.max_index_mb is None else self.max_index_mb * 1e6
        return min(max(relative, self.free_mb * 1e6), absolute)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Trial:
    """One Annoy setting measured during tuning."""

    n_trees: int
    search_k: int
    recall: float
    recall_low: float  # one-sided 95% lower confidence bound of ``recall``; must reach the target
    index_bytes: int
    build_seconds: float
    query_ms: float


@dataclass(frozen=True)
class TuningReport:
    """What tuning measured and chose.

    ``backend`` is "annoy" or "exact"; ``reason`` says why in one sentence. For "annoy",
    ``n_trees``/``search_k``/``recall`` are the chosen setting and the Annoy file is at the
    path given to `tune`; for "exact" they describe the best Annoy trial, if any.
    """

    backend: str
    reason: str
    n_trees: int | None
    search_k: int | None
    recall: float | None
    k: int
    target_recall: float
    queries: int
    query_source: str
    exact_query_ms: float | None
    annoy_query_ms: float | None
    index_bytes: int | None
    budget_bytes: float | None
    build_seconds: float | None
    tuning_seconds: float
    trials: tuple[Trial, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trials"] = [asdict(t) for t in self.trials]
        d["budget_bytes"] = None if self.budget_bytes in (None, math.inf) else int(self.budget_bytes)
        return d


def recall_per_query(found: Sequence[Sequence[int]], truth: np.ndarray) -> np.ndarray:
    """For each query, the share of its true top-k rows (a row of truth, (Q, k)) in ``found``."""
    truth = np.asarray(truth)
    if truth.ndim != 2 or len(found) != truth.shape[0] or truth.shape[1] == 0:
        raise ConfigError(f"recall: {len(found)} result lists for truth of shape {truth.shape}")
    k = truth.shape[1]
    return np.asarray([len(set(map(int, f[:k])) & set(map(int, t))) / k for f, t in zip(found, truth)])


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean share of each query's true top-k rows (truth, (Q, k)) present in ``found``."""
    return float(recall_per_query(found, truth).mean())


def recall_lower_bound(per_query: np.ndarray) -> float:
    """One-sided 95% lower confidence bound of the mean recall (normal approximation):
    a setting tuned to this bound keeps the target on queries it has not seen."""
    n = per_query.size
    spread = float(per_query.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
    return float(per_query.mean()) - Z_ONE_SIDED_95 * spread


class _Queries:
    """Held-out query vectors and their exact top-k rows in the tuning index."""

    def __init__(self, exact: ExactSearch, vectors: np.ndarray, k: int):
        self.vectors, self.k = vectors, k
        self.truth = np.asarray([rows for rows, _ in exact.query_batch(vectors, k)])

    def recall(self, backend: AnnoyBackend) -> np.ndarray:
        return recall_per_query([backend.query(q, self.k)[0] for q in self.vectors], self.truth)


def _tune_search_k(backend: AnnoyBackend, queries: _Queries, target: float,
                   cap: int) -> tuple[int, float, float]:
    """Smallest search_k (within ~15%) whose recall's lower confidence bound reaches
    ``target``, by doubling from Annoy's default and then bisection.

    Returns:
        (search_k, mean recall, lower bound); at ``cap`` if the target is never reached.
    """
    def measure(sk: int) -> tuple[float, float]:
        backend.search_k = sk
        per_query = queries.recall(backend)
        return float(per_query.mean()), recall_lower_bound(per_query)

    lo, hi = 0, max(1, backend.n_trees * queries.k)
    mean, low = measure(hi)
    while low < target and hi < cap:
        lo, hi = hi, min(cap, hi * 2)
        mean, low = measure(hi)
    best = (hi, mean, low)
    while low >= target and lo and hi / lo > 1.15:
        mid = (lo + hi) // 2
        m, lb = measure(mid)
        if lb >= target:
            hi, best = mid, (mid, m, lb)
        else:
            lo = mid
    backend.search_k = best[0]
    return best


def _trial(unit_vectors: np.ndarray, n_trees: int, path: Path, queries: _Queries,
           options: TuningOptions) -> Trial:
    n, d = unit_vectors.shape
    t0 = time.perf_counter()
    size = build_annoy(unit_vectors, n_trees, path, options.seed, options.n_jobs)
    build_seconds = time.perf_counter() - t0
    backend = AnnoyBackend(path, d, n, search_k=n_trees * options.k, k=options.k)
    search_k, recall, low = _tune_search_k(backend, queries, options.target_recall, cap=max(n * n_trees, 1))
    k = options.k
    ms = _ms(latencies([lambda q: backend.query(q, k)], queries.vectors, 0.2)[0])
    backend.close()
    return Trial(n_trees, search_k, round(recall, 4), round(low, 4), size, round(build_seconds, 3), ms)


def tune(unit_vectors: np.ndarray, path: Path, options: TuningOptions,
         queries: np.ndarray | None = None, progress: Callable[[str], None] | None = None) -> TuningReport:
    """Measure and choose the backend for (N, D) unit vectors; write the Annoy file to ``path``
    when Annoy is chosen (nothing is left there otherwise).

    Args:
        unit_vectors: the index's vectors, unit length, float32.
        path: where the chosen Annoy index goes; candidates are written beside it.
        options: target recall, budget, backend policy.
        queries: held-out unit query vectors (Q, D), e.g. validation embeddings; None holds
            out a sample of the catalog vectors instead.
        progress: called with a short line per step (e.g. a logger or a progress bar's writer).

    Raises:
        ConfigError: backend "annoy" was requested but no setting reaches the target within
            the size budget, or there are too few vectors to measure recall.
    """
    say = progress or (lambda _msg: None)
    report = functools.partial(_report, options, time.perf_counter(), say)
    n, d = unit_vectors.shape
    k = options.k
    if options.backend == "exact":
        return report("exact", "exact search was requested", None)
    if options.backend == "auto" and not annoy_available():
        return report("exact", "exact: annoy is not installed (pip install 'shelfsight[annoy]')", None)
    if n < MIN_ANN_VECTORS and options.backend == "auto":
        return report("exact", f"exact: {n} vectors are fewer than {MIN_ANN_VECTORS}, too few to gain from an "
                      f"ANN index", None)
    if n < max(MIN_TUNABLE_VECTORS, 10 * (k + 1)):
        raise ConfigError(f"an Annoy index needs at least {max(MIN_TUNABLE_VECTORS, 10 * (k + 1))} vectors to "
                          f"tune recall@{k}, got {n}")
    tuning_vectors, query_vectors, source = _held_out(unit_vectors, queries, options)
    exact = ExactSearch(tuning_vectors)
    tq = _Queries(exact, query_vectors, k)
    budget = options.budget_bytes(n, d)
    # candidates hold fewer vectors than the final index: their budget shrinks in proportion
    trials, best = _search_ladder(tuning_vectors, Path(path), tq, options, budget * len(exact) / n, say)
    measured = dict(queries=len(tq.vectors), query_source=source, budget_bytes=budget, trials=trials)
    if best is None:
        exact_ms = _ms(latencies([lambda q: exact.query(q, k)], tq.vectors, 0.2)[0])
        why = (f"no Annoy setting reached recall@{k} {options.target_recall} within {_mb(budget)} (tried: "
               + ", ".join(f"{t.n_trees} trees {t.recall:.3f} {t.index_bytes / 1e6:.1f} MB" for t in trials) + ")")
        if options.backend == "annoy":
            raise ConfigError(why)
        return report("exact", f"exact: {why}", None, exact_query_ms=exact_ms, **measured)
    return _annoy_or_exact(unit_vectors, Path(path), options, exact, tq, best, measured, report)


def _report(options: TuningOptions, t_start: float, say: Callable[[str], None], backend: str, reason: str,
            best: Trial | None, **measured) -> TuningReport:
    """The report of a decision (said to ``progress`` as well); unmeasured fields stay empty."""
    say(reason)
    return TuningReport(
        backend=backend, reason=reason, n_trees=best and best.n_trees, search_k=best and best.search_k,
        recall=best and best.recall, k=options.k, target_recall=options.target_recall,
        annoy_query_ms=best and best.query_ms, tuning_seconds=round(time.perf_counter() - t_start, 3),
        **{"queries": 0, "query_source": "none", "exact_query_ms": None, "index_bytes": None,
           "budget_bytes": None, "build_seconds": None, "trials": (), **measured})


def _held_out(unit_vectors: np.ndarray, queries: np.ndarray | None,
              options: TuningOptions) -> tuple[np.ndarray, np.ndarray, str]:
    """The vectors the candidate indexes hold, the queries that measure them, and where those came from."""
    n = unit_vectors.shape[0]
    if queries is None:  # hold a sample of the catalog out of the candidate indexes
        held = np.random.default_rng(options.seed).permutation(n)[:min(options.n_queries, n // 10)]
        keep = np.ones(n, bool)
        keep[held] = False
        return unit_vectors[keep], unit_vectors[np.sort(held)], "catalog sample held out of the candidate indexes"
    pick = np.random.default_rng(options.seed).permutation(queries.shape[0])[:options.n_queries]
    return unit_vectors, queries[np.sort(pick)], "held-out queries given"


def _annoy_or_exact(unit_vectors: np.ndarray, path: Path, options: TuningOptions, exact: ExactSearch,
                    tq: "_Queries", best: Trial, measured: dict, report: Callable[..., TuningReport]) -> TuningReport:
    """Time the best Annoy setting against exact search; keep (or rebuild over every vector) the winner."""
    k, d = options.k, unit_vectors.shape[1]
    chosen = AnnoyBackend(_candidate(path, best.n_trees), d, len(exact), best.search_k, k)
    exact_t, annoy_t = latencies([lambda q: exact.query(q, k), lambda q: chosen.query(q, k)], tq.vectors, 0.3)
    chosen.close()
    exact_ms, annoy_ms = _ms(exact_t), _ms(annoy_t)
    best = replace(best, query_ms=annoy_ms)
    measured["exact_query_ms"] = exact_ms
    timing = (f"{annoy_ms:.3f} ms per query at recall@{k} {best.recall:.3f} (n_trees={best.n_trees}, "
              f"search_k={best.search_k}) vs exact {exact_ms:.3f} ms over {len(exact)} vectors, timed alternately")
    if options.backend == "auto" and exact_ms <= annoy_ms:
        _remove(_candidate(path, best.n_trees))
        return report("exact", f"exact: Annoy is no faster: {timing}", best, **measured)
    if len(exact) == unit_vectors.shape[0]:
        publish(_candidate(path, best.n_trees), path)
        size, build_seconds = best.index_bytes, best.build_seconds
    else:  # the held-out sample goes back in: build the chosen setting over every vector
        _remove(_candidate(path, best.n_trees))
        t0 = time.perf_counter()
        size = build_annoy(unit_vectors, best.n_trees, path, options.seed, options.n_jobs)
        build_seconds = round(time.perf_counter() - t0, 3)
    why = ("annoy was requested: " if options.backend == "annoy" else
           f"annoy: {exact_ms / annoy_ms:.1f}x faster than exact search: ") + timing
    return report("annoy", why, best, **dict(measured, index_bytes=size, build_seconds=build_seconds))


def _ms(seconds: np.ndarray) -> float:
    return round(float(np.median(seconds)) * 1e3, 4)


def _candidate(path: Path, n_trees: int) -> Path:
    return path.with_name(f"{path.name}.{n_trees}trees.tmp")


def _search_ladder(unit_vectors: np.ndarray, path: Path, queries: _Queries, options: TuningOptions,
                   budget: float, say: Callable[[str], None]) -> tuple[tuple[Trial, ...], Trial | None]:
    """Try 2, 4, 8, ... trees (capped by the size budget and max_trees); return every trial
    and the chosen one, whose file is left at `_candidate(path, n_trees)`."""
    n, d = unit_vectors.shape
    base = n * annoy_node_bytes(d)  # one node per vector, whatever the tree count
    trials: list[Trial] = []
    best: Trial | None = None
    n_trees = min(2, options.max_trees)
    while True:
        trial = _trial(unit_vectors, n_trees, _candidate(path, n_trees), queries, options)
        trials.append(trial)
        say(f"annoy n_trees={trial.n_trees}: search_k={trial.search_k} recall@{options.k}={trial.recall:.3f} "
            f"(>= {trial.recall_low:.3f}) "
            f"{trial.query_ms:.3f} ms/query, {trial.index_bytes / 1e6:.1f} MB")
        per_tree = max(1.0, (trial.index_bytes - base) / n_trees)
        most = options.max_trees if not math.isfinite(budget) else min(options.max_trees,
                                                                         int((budget - base) // per_tree))
        reached = trial.recall_low >= options.target_recall
        if trial.index_bytes > budget or not reached:
            _remove(_candidate(path, n_trees))
            if trial.index_bytes > budget:  # over budget: fewer trees once, if that can fit
                if best is None and 1 <= most < n_trees and most not in {t.n_trees for t in trials}:
                    n_trees = most
                    continue
                break
        elif best is None or trial.search_k <= FEWER_BY * best.search_k:
            if best is not None:
                _remove(_candidate(path, best.n_trees))
            best = trial
        else:  # not enough less work to be worth the larger file: keep the smaller index, stop
            _remove(_candidate(path, n_trees))
            break
        step = min(n_trees * 2, most)
        if step <= n_trees:
            break
        n_trees = step
    return tuple(trials), best


def _mb(budget: float) -> str:
    return "no size limit" if not math.isfinite(budget) else f"{budget / 1e6:.1f} MB"


def _remove(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
