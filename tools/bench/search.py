"""Benchmark the catalog search index on clustered synthetic embeddings.

    python -m shelfsight.tools.bench.search --sizes 10000 100000 1000000 --dim 128 --out DIR

For each size: N unit vectors drawn around ``--clusters`` random centres on the sphere
(mean cosine to the centre about 0.8), and ``--queries`` fresh held-out draws from the same
clusters. Within a cluster the spread lies in a random ``--intrinsic-dim``-dimensional
subspace (plus 10% isotropic noise), as deep embeddings vary along few directions; use
``--intrinsic-dim 0`` for isotropic noise in all dimensions, the hardest case for any
tree or graph index. The Annoy index is tuned exactly as `CatalogIndex.build` tunes it
(target recall@10, size budget, held-out catalog sample), then measured on the
evaluation queries: build time, file size, single-query latency p50/p99 (warm-up,
time.perf_counter), recall@10 against exact search, and exact numpy single-query latency
on the same vectors (the two timed alternately, query by query, so that other load on
the machine slows both alike). Writes DIR/bench_search.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from shelfsight.edge.catalog.ann import AnnoyBackend
from shelfsight.edge.catalog.tuning import TuningOptions, recall_at_k, tune
from shelfsight.edge.catalog.vectors import ExactSearch, unit_rows
from shelfsight.timing import latencies

SPREAD = 0.75  # norm of a vector's offset from its centre: cosine to the centre ~ 1/sqrt(1 + 0.75^2) = 0.8
ISOTROPIC_SHARE = 0.1  # share of the offset's variance spread over all dimensions in low-rank mode


class ClusteredVectors:
    """Gaussian clusters on the unit sphere; draws are reproducible for a seed."""

    def __init__(self, dim: int, clusters: int, intrinsic_dim: int, seed: int):
        if intrinsic_dim < 0 or intrinsic_dim > dim:
            raise SystemExit(f"--intrinsic-dim {intrinsic_dim} must be in 0..{dim}")
        rng = np.random.default_rng(seed)
        self.dim, self.intrinsic_dim = dim, intrinsic_dim
        self.centres = unit_rows(rng.normal(size=(clusters, dim)))
        self.bases = None
        if intrinsic_dim:
            q, _ = np.linalg.qr(rng.normal(size=(clusters, dim, intrinsic_dim)))
            self.bases = q.astype(np.float32)  # (C, D, r) orthonormal columns

    def draw(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            c = rng.integers(0, len(self.centres), m)
            iso = rng.normal(size=(m, self.dim)).astype(np.float32) / np.sqrt(self.dim)
            if self.bases is None:
                offset = iso
            else:
                z = rng.normal(size=(m, self.intrinsic_dim)).astype(np.float32) / np.sqrt(self.intrinsic_dim)
                low = np.empty_like(iso)
                order = np.argsort(c, kind="stable")
                bounds = np.searchsorted(c[order], np.arange(len(self.centres) + 1))
                for cluster, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                    rows = order[a:b]
                    low[rows] = z[rows] @ self.bases[cluster].T
                offset = np.sqrt(1 - ISOTROPIC_SHARE) * low + np.sqrt(ISOTROPIC_SHARE) * iso
            out[start:start + m] = unit_rows(self.centres[c] + SPREAD * offset)
        return out


def percentiles_ms(seconds: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(seconds, 50)) * 1e3, 4),
            "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 4),
            "runs": int(seconds.size)}


def bench_size(n: int, data: ClusteredVectors, n_queries: int, options: TuningOptions, workdir: Path,
               seed: int, min_seconds: float) -> dict:
    say = lambda msg: print(f"  [{n}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say("drawing vectors")
    vectors = data.draw(n, seed=seed + 1)
    queries = data.draw(n_queries, seed=seed + 2)
    exact = ExactSearch(vectors)
    say("exact top-10 of the evaluation queries")
    truth = np.asarray([rows for rows, _ in exact.query_batch(queries, options.k)])
    path = workdir / f"bench-{n}.ann"
    t0 = time.perf_counter()
    report = tune(vectors, path, options, progress=say)
    tuning_seconds = time.perf_counter() - t0
    backend = AnnoyBackend(path, data.dim, n, report.search_k, options.k)
    k = options.k
    recall = recall_at_k([backend.query(q, k)[0] for q in queries], truth)
    say("timing single queries")
    annoy_t, exact_t = latencies([lambda q: backend.query(q, k), lambda q: exact.query(q, k)], queries,
                                 min_seconds, warmup=20, min_runs=200)
    backend.close()
    size = path.stat().st_size
    path.unlink()
    annoy, ex = percentiles_ms(annoy_t), percentiles_ms(exact_t)
    return {
        "size": n, "dimension": data.dim, "n_trees": report.n_trees, "search_k": report.search_k,
        "build_seconds": report.build_seconds, "tuning_seconds": round(tuning_seconds, 2),
        "index_bytes": size, "index_mb": round(size / 1e6, 2), "raw_vectors_mb": round(n * data.dim * 4 / 1e6, 2),
        "recall_at_10": round(recall, 4), "tuning_recall_at_10": report.recall,
        "annoy": annoy, "exact": ex, "speedup_p50": round(ex["p50_ms"] / annoy["p50_ms"], 2),
        "auto_backend": "annoy" if annoy["p50_ms"] < ex["p50_ms"] else "exact",
        "tuning": report.to_dict(),
    }


def fingerprint() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "system": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "numpy": np.__version__, "annoy": metadata.version("annoy")}


def print_table(results: list[dict]) -> None:
    head = (f"{'vectors':>9} {'trees':>5} {'search_k':>8} {'build s':>8} {'MB':>8} {'recall@10':>9} "
            f"{'annoy p50':>9} {'p99':>7} {'exact p50':>9} {'p99':>7} {'speedup':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['size']:>9} {r['n_trees']:>5} {r['search_k']:>8} {r['build_seconds']:>8.2f} {r['index_mb']:>8.1f} "
              f"{r['recall_at_10']:>9.3f} {r['annoy']['p50_ms']:>9.3f} {r['annoy']['p99_ms']:>7.3f} "
              f"{r['exact']['p50_ms']:>9.3f} {r['exact']['p99_ms']:>7.3f} {r['speedup_p50']:>6.1f}x")
    print("latencies in ms per single query; MB = 10^6 bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--intrinsic-dim", type=int, default=16,
                        help="dimensions of the spread within a cluster; 0 = isotropic (default 16)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out evaluation queries")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--max-index-mb", type=float, default=None)
    parser.add_argument("--max-overhead", type=float, default=TuningOptions.max_overhead)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least timing per latency figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="directory for bench_search.json")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1000:
        parser.error("--sizes must each be at least 1000")
    options = TuningOptions(target_recall=args.target_recall, backend="annoy", max_index_mb=args.max_index_mb,
                            max_overhead=args.max_overhead, seed=args.seed)
    data = ClusteredVectors(args.dim, args.clusters, args.intrinsic_dim, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=args.out) as tmp:
        for n in args.sizes:
            print(f"size {n}", file=sys.stderr, flush=True)
            results.append(bench_size(n, data, args.queries, options, Path(tmp), args.seed, args.min_seconds))
    doc = {"benchmark": "shelfsight.search", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "device": fingerprint(),
           "data": {"dim": args.dim, "clusters": args.clusters, "intrinsic_dim": args.intrinsic_dim,
                    "spread": SPREAD, "queries": args.queries, "seed": args.seed},
           "options": options.to_dict(), "results": results}
    out = args.out / "bench_search.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print_table(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
