"""List dead-lettered messages, or re-publish one once it is fixed.

Each dead letter says which stage rejected what and why, and keeps the
original bytes. ``--republish OFFSET`` sends the original (or, with
``--fixed FILE``, a corrected message) back in at the stage that rejected it:
a prompt to ``prompts`` (validated again by intake), a battle the judge could
not decide to ``battles`` (checked to be a battle first). Where it goes is
decided here from the stage, never read from the record: anyone who can write
the dead-letter topic must not be able to make an operator publish to, say,
``models``. Other stages' letters are not re-published (the sweep re-asks
missing players by itself).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--stage", help="only this stage (intake, generate, judge, ...)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--republish", type=int, metavar="OFFSET",
                        help="re-publish the dead letter at this offset")
    parser.add_argument("--fixed", help="file with the corrected message to publish instead")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import msgspec

    from arena_stream.config import load
    from arena_stream.kafka.deadletter import original_bytes
    from arena_stream.kafka.io import producer, read_all, topic_name
    from arena_stream.schemas import Battle, DeadLetter, decode

    # stage -> (where its originals go back in, the type they must decode as; None: intake
    # validates it)
    republish_to: dict[str, tuple[str, type | None]] = {
        "intake": ("prompts", None),
        "judge": ("battles", Battle),
    }

    config = load(args.config)
    records = asyncio.run(read_all(config, "deadletter"))
    letters: list[tuple[int, DeadLetter]] = []
    for r in records:
        try:
            letters.append((r.offset, decode(r.value or b"", DeadLetter)))
        except msgspec.MsgspecError as exc:
            print(f"offset {r.offset}: not a dead letter, skipped ({exc})", file=sys.stderr)
    if args.republish is not None:
        found = dict(letters).get(args.republish)
        if found is None:
            print(f"no dead letter at offset {args.republish}", file=sys.stderr)
            return 2
        entry = republish_to.get(found.stage)
        if entry is None:
            print(f"a {found.stage!r} dead letter is not re-published "
                  f"(only {', '.join(republish_to)} ones are)", file=sys.stderr)
            return 2
        topic_key, event_type = entry
        if args.fixed:
            from pathlib import Path

            payload: bytes | None = Path(args.fixed).read_bytes().strip()
        else:
            payload = original_bytes(found)
        if payload is None:
            why = "only its beginning was kept" if found.truncated else "none was kept"
            print(f"this dead letter's original cannot be re-published ({why}); "
                  "give a corrected one with --fixed FILE", file=sys.stderr)
            return 2
        if event_type is not None:
            try:
                decode(payload, event_type)
            except msgspec.MsgspecError as exc:
                print(f"not a {event_type.__name__}: {exc}", file=sys.stderr)
                return 2
        topic = topic_name(config, topic_key)

        async def send() -> None:
            async with producer(config) as p:
                key = found.key.encode() if found.key else None
                await p.send_and_wait(topic, payload, key=key)

        asyncio.run(send())
        print(f"re-published offset {args.republish} to {topic}")
        return 0
    for offset, d in letters:
        if args.stage and d.stage != args.stage:
            continue
        if args.json:
            sys.stdout.write(msgspec.json.encode({"offset": offset, **msgspec.to_builtins(d)})
                             .decode() + "\n")
        else:
            print(f"{offset:>6}  {d.stage:<10} {printable(d.reason):<16} "
                  f"{printable(d.ref or d.key or '-'):<24} {printable(d.error[:100])}")
    return 0


def printable(text: str) -> str:
    """``text`` with control characters (ANSI escapes, newlines) shown, never obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
