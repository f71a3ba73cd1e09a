"""``python -m app.cli``: the ``mastery`` command (app/cli/main.py)."""

from app.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
