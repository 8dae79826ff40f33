"""Build a WizardArena-style offline test set (diverse + hard) from a prompt source.

``arena-stream testset build --prompts in.jsonl --out testset.jsonl`` clusters
the prompts with K-Means over sentence embeddings, takes a few per cluster
(diverse), asks the configured judge to rate the difficulty of a per-cluster
pool and keeps the hardest (hard). Defaults are the paper's (500 clusters,
2 per cluster, a pool of 20 per cluster, 1000 hard), clamped to the data.
Ratings are cached (``--cache``, SQLite, keyed on the prompt and everything about the
judge), so an interrupted build resumes where it stopped.
Any judge rates: an in-process one from its token probabilities, a served one in
writing (``[judge] scoring``, ``[judge] difficulty_template``). The summary counts
rated and unrated prompts and the hard prompts kept against those asked for,
with the difficulty distribution of the pool and of the hard subset; a hard
subset that is empty or under half of what was asked for is an error (exit 1,
nothing written) unless ``--allow-partial``.
The prompts may be in any format ``publish`` reads; the test set is written in ours.
"""

from __future__ import annotations

import argparse
import json
import sys

from arena_stream.cli.arguments import INPUT_HELP, add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="testset_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build the test set", description=__doc__)
    b.add_argument("--prompts", required=True, help=f"input prompts: {INPUT_HELP}")
    add_input_arguments(b)
    b.add_argument("--out", required=True, help="output JSONL test set")
    b.add_argument("--config", help="TOML config whose [judge] rates difficulty "
                   "(default: the embedded default)")
    b.add_argument("--clusters", type=int, default=500, help="K-Means clusters (default 500)")
    b.add_argument("--per-cluster", type=int, default=2,
                   help="diverse prompts per cluster (default 2)")
    b.add_argument("--hard-pool", type=int, default=20,
                   help="prompts per cluster rated for difficulty (default 20)")
    b.add_argument("--hard", type=int, default=1000,
                   help="hardest rated prompts kept (default 1000; 0: no hard subset, no judge)")
    b.add_argument("--seed", type=int, default=0, help="seed for K-Means and sampling")
    b.add_argument("--diverse-pick", choices=["random", "centroid"], default="random",
                   help="per cluster: seeded random sample (paper) or nearest to the centroid")
    b.add_argument("--cache", help="difficulty ratings cache, an SQLite file shared with "
                   "`eval` if you like (default: <out>.cache.sqlite)")
    b.add_argument("--retry-unrated", action="store_true",
                   help="ask again for prompts cached as unrated (unreadable judge answers)")
    b.add_argument("--embedding-model", help="sentence-transformers model directory "
                   "(default: bundled all-MiniLM-L6-v2)")
    b.add_argument("--allow-partial", action="store_true",
                   help="write the test set even when the hard subset is empty or under "
                   "half of --hard")


def _check(args: argparse.Namespace) -> str | None:
    for name in ("clusters", "per_cluster"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1"
    for name in ("hard_pool", "hard"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    if args.hard > 0 and args.hard_pool < 1:
        return "--hard needs --hard-pool >= 1"
    return None


def main(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem:
        print(f"arena-stream testset: error: {problem}", file=sys.stderr)
        return 2
    import asyncio

    from arena_stream.cli.arguments import input_options
    from arena_stream.models.embeddings import embed
    from arena_stream.offline import testset

    mapping, source = input_options(args)
    records, bad = testset.read_prompts(args.prompts, mapping=mapping, options=source)
    for b in bad:
        print(f"{args.prompts}:{b.line}: skipped: {b.error}", file=sys.stderr)
    if not records:
        print(f"arena-stream testset: error: no usable prompt in {args.prompts}", file=sys.stderr)
        return 1
    options = testset.BuildOptions(
        clusters=args.clusters, per_cluster=args.per_cluster, hard_pool=args.hard_pool,
        hard=args.hard, seed=args.seed, diverse_pick=args.diverse_pick,
    )
    vectors = embed([r.text for r in records], model_path=args.embedding_model,
                    desc="embedding")

    rater = None
    cache = None
    store = None
    cache_path = args.cache or f"{args.out}.cache.sqlite"
    if options.hard > 0:
        from arena_stream.config import load
        from arena_stream.judges.difficulty import build_difficulty_rater
        from arena_stream.offline.cache import OfflineCache, model_fingerprint

        config = load(args.config)
        cache = OfflineCache(cache_path)
        rater = build_difficulty_rater(config.judge)
        store = testset.RatingCache(cache, rater.name, model_fingerprint(config.judge))

    async def run() -> testset.BuildResult:
        try:
            return await testset.build(
                records, vectors, options, rater=rater, cache=store,
                retry_unrated=args.retry_unrated,
            )
        finally:
            if rater is not None:
                await rater.aclose()

    try:
        result = asyncio.run(run())
    finally:
        if cache is not None:
            cache.close()
    print(json.dumps(testset.summary(result, bad, len(records) + len(bad)), indent=2))
    problem = testset.shortfall(result)
    if problem and not args.allow_partial:
        print(f"arena-stream testset: error: {problem}; nothing written to {args.out}; "
              f"ratings cache: {cache_path} (a new run resumes from it: failed calls are "
              "asked again, unrated prompts with --retry-unrated; --allow-partial writes "
              "what there is)", file=sys.stderr)
        return 1
    testset.write_jsonl(args.out, result.records)
    if problem:
        print(f"arena-stream testset: warning: {problem} (--allow-partial: written anyway)",
              file=sys.stderr)
    if result.rating is not None and result.rating.failed:
        print(f"arena-stream testset: {result.rating.failed} rating calls failed "
              f"(not cached; run again to retry them; cache: {cache_path})", file=sys.stderr)
    return 0
