"""The stream: the faust app that wires topics and tables to the stages.

:mod:`~arena_stream.streams.stages` holds what each stage does, as plain
functions; :mod:`~arena_stream.streams.app` connects them to topics and
tables; :mod:`~arena_stream.streams.worker` runs the app in an event loop.
"""
