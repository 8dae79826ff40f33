"""Remove test-set prompts, their paraphrases and duplicates from a training prompt file.

For every test prompt, its ``--top-k`` most similar training prompts (sentence
embeddings, cosine >= ``--threshold``) are removed, as are training prompts
with the same normalised text as a test prompt, exact duplicates and near
duplicates (cosine >= ``--near-dup-threshold``) within the training file.
Kept prompts are written unchanged when they were in our format (converted to
it otherwise: any format ``publish`` reads is accepted, for the test sets too);
``--report`` says what was removed and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arena_stream.cli.arguments import INPUT_HELP, add_input_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", required=True, help=f"training prompts: {INPUT_HELP}")
    parser.add_argument("--against", required=True, nargs="+", metavar="TESTSET",
                        help="one or more test sets (any prompt format, fields inferred)")
    add_input_arguments(parser)
    parser.add_argument("--out", required=True, help="kept training prompts, JSONL")
    parser.add_argument("--top-k", type=int, default=5,
                        help="nearest training prompts checked per test prompt (default 5; "
                        "0: remove exact copies of test prompts only)")
    parser.add_argument("--threshold", type=float, default=0.85,
                        help="cosine similarity from which a neighbour is contaminated "
                        "(default 0.85)")
    parser.add_argument("--near-dup-threshold", type=float, default=0.95,
                        help="cosine similarity from which two training prompts are near "
                        "duplicates (default 0.95; above 1 disables)")
    parser.add_argument("--report", help="write a JSON report of every removal here")
    parser.add_argument("--embedding-model", help="sentence-transformers model directory "
                        "(default: bundled all-MiniLM-L6-v2)")


def _write_lines(path: str, lines: list[str]) -> None:
    """Write atomically, so a failed run never leaves a half-filtered file behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        for line in lines:
            handle.write(line + "\n")
    tmp.replace(target)


def main(args: argparse.Namespace) -> int:
    if args.top_k < 0:
        print("arena-stream decontaminate: error: --top-k must be >= 0", file=sys.stderr)
        return 2
    from arena_stream.cli.arguments import input_options
    from arena_stream.models.embeddings import embed
    from arena_stream.offline import decontaminate as dc

    mapping, source = input_options(args)
    records, bad = dc.read_prompts(args.prompts, require_final_user=False, unique_ids=False,
                                   mapping=mapping, options=source)
    for b in bad:
        print(f"{args.prompts}:{b.line}: skipped: {b.error}", file=sys.stderr)
    tests, problems = dc.read_tests(args.against)
    for problem in problems:
        print(problem, file=sys.stderr)
    options = dc.Options(top_k=args.top_k, threshold=args.threshold,
                         near_dup_threshold=args.near_dup_threshold)
    train_vectors = embed([r.text for r in records], model_path=args.embedding_model,
                          desc="embedding prompts")
    test_vectors = embed([t.text for t in tests], model_path=args.embedding_model,
                         desc="embedding test sets")
    result = dc.decontaminate(records, train_vectors, tests, test_vectors, options)

    _write_lines(args.out, [records[i].raw_line for i in result.kept])
    full = dc.report(result, bad, len(records) + len(bad), options,
                     prompts=args.prompts, against=args.against)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    brief = {k: full[k] for k in ("input_lines", "kept", "removed", "by_reason")}
    brief["bad_lines"] = len(bad)
    brief["test_prompts"] = len(tests)
    print(json.dumps(brief, indent=2))
    return 0
