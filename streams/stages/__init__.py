"""The stages of the stream, one module each: plain functions, testable without a broker.

Each stage takes a :class:`~arena_stream.streams.stages.base.Record`, its typed
state and a small context, and returns an
:class:`~arena_stream.streams.stages.base.Outcome` (events to send, state to
write). In the order a prompt meets them:

- :mod:`.intake` — validate and keep test-set prompts out (``intake``), then accept each
  id once whichever partition its publisher chose (``admit``);
- :mod:`.generate` — one player answers (one agent per player);
- :mod:`.collect` — wait for every player, form the battles once;
- :mod:`.sweep` — re-ask players whose answers never arrived (a timer);
- :mod:`.judge` — two games per battle, positions swapped, one verdict;
- :mod:`.rate` — incremental Elo in offset order, each judgment counted once;
- :mod:`.route` — judgments involving the target become training samples;
- :mod:`.trigger` — buffers that fire a training job at their threshold;
- :mod:`.versions` — every worker plays the newest published version;
- :mod:`.evaluate` — each new target version plays the held-out set (ids ``eval:v<N>:<id>``,
  rated apart, never trained on).
"""
