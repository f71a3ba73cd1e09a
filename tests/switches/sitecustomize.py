"""Applies ``MASTERY_TEST_WITHOUT`` (comma-separated names of
:mod:`tests.switches.without`) in a process a test started."""

import os

if names := [n for n in os.environ.get("MASTERY_TEST_WITHOUT", "").split(",") if n]:
    from tests.switches.without import apply

    apply(names)
