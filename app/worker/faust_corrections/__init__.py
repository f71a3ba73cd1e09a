"""Every correction of faust-streaming's (and one of aiokafka's) behaviour, in
one package.

Versions checked: faust-streaming 0.15.3, aiokafka 0.14.0, Apache Kafka 4.4.0.
docs/upstream/README.md lists each correction with the upstream behaviour it
corrects and the test, on Apache Kafka, that fails without it (``pytest TEST
--without NAME`` swaps it for the original: tests/switches/without.py).
:mod:`.exit_policy` is not a correction: the typed exceptions that end the worker
process, and the one function that turns them into its exit code.

Importing this package installs the OffsetFetch correction (:mod:`.offsets`)
for every aiokafka consumer of the process.
"""

from app.worker.faust_corrections import offsets as _offsets

_offsets.install()
