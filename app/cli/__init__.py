"""The ``mastery`` command line: main.py parses the command and runs it; the
other modules hold what one command family needs (``python -m app.cli`` runs
__main__.py).

Nothing is imported here: each command loads its own stack when it runs, so
``mastery api`` never loads Faust and ``mastery model trace`` loads neither.
"""
