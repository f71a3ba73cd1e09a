"""Shared infrastructure: settings, topic names, the event producer, the broker
profile and topic readers.

Both sides import it (the API to produce ingested events, the worker and the
CLI for everything): ``api`` and ``app`` never import each other; only the CLI
(``app.cli``) composes the two.
"""
