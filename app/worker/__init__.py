"""The worker process: the Faust app, the batch path, the checkpoint, and every
correction of Faust (faust_corrections/). wiring.py composes it
(:func:`app.worker.wiring.create_worker`).

Nothing is imported here: a module of this package costs only what it imports
itself (the CLI loads Faust only for the commands that need it).
"""
