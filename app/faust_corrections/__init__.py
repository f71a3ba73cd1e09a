"""Every correction of faust-streaming's behaviour, in one package.

Versions checked: faust-streaming 0.15.3, aiokafka 0.14.0, Apache Kafka 4.4.0
(KRaft, app/embedded_kafka.py), on 2026-12-06. Each correction names the
upstream behaviour it corrects and the test, on Apache Kafka, that fails
without it (``pytest TEST --without NAME`` swaps it for Faust's own behaviour,
tests/switches/without.py); docs/upstream/ holds the drafts for upstream.

- :mod:`.transport`, ``_Consumer.stop_flow`` (``flow-stop-checkpoint``; a
  hook, not a correction): Faust stops the flow when a rebalance or a
  shutdown begins, then waits for every unacked event; the worker acks only
  after its checkpoint (app/checkpoint.py), so it is told to checkpoint at
  once. Test: tests/reliability/test_checkpoint_commit.py::
  test_a_rebalance_checkpoints_at_once_and_commits_what_it_stored.
- :mod:`.transport`, ``_Consumer.wait_first`` (``inline``): Faust's fetch
  loop awaits mode's ``wait_first`` for every record, over five tasks per
  record; the record is delivered inline unless the stream's queue is full.
  Test: tests/integration/test_faust_corrections.py::
  test_the_fetch_loop_delivers_records_without_a_task_each.
- :mod:`.transport`, ``LeanMonitor`` (``monitor``): Faust's Monitor does
  bookkeeping for every record for web views the worker turns off.
  Test: tests/integration/test_faust_corrections.py::
  test_the_monitor_keeps_no_per_record_bookkeeping.
- :mod:`.transport`, ``_Consumer._getmany`` (``buffered-wait``): Faust's
  fetch loop waits up to 1 s for records of the partitions it asks for, and
  leaves out those whose stream queue is under pressure; with all busy
  partitions left out, their fetched records waited out that second after
  the queue had drained (a replaying worker idled half its time). The wait
  is 50 ms, 5 ms while partitions are held back.
  Test: tests/unit/test_transport_buffered_wait.py.
- :mod:`.streams`, ``take_ready`` (``take-ready``): Faust's ``take_events``
  waits out its whole window after every batch that is not full, and acks a
  batch when the loop body returns; a batch is handed over once the records
  fetched so far are in it, and its acks are the caller's (public stream
  surface only). Test: tests/integration/test_faust_corrections.py::
  test_a_record_is_handed_over_without_waiting_out_the_window
  (and tests/unit/test_take_ready.py); the acks:
  tests/reliability/test_checkpoint_commit.py (``ack-after-checkpoint``).
- :mod:`.store`, ``PartitionStore``: Faust's RocksDB store reads and writes a
  key in the partition of "the current event" (and cannot write without
  one); the worker addresses the key's own partition, from the checkpoint.
  No Faust original to swap back (see docs/upstream/README.md); exercised on
  Apache Kafka by tests/reliability/test_checkpoint_commit.py and
  tests/reliability/test_local_store.py, unit tests in
  tests/unit/test_worker_store.py.
- :mod:`.transport`, ``_Consumer.getmany`` (``stale-fetch``): Faust's fetch
  loop decides delivery and gap acks by its "read offset", which a seek
  resets in a step of its own: records fetched before a seek were delivered
  after it (and the records fetched again below them dropped), and a seek
  landing mid-batch had offsets acked as a gap though their records were
  never processed (faust-streaming #216/#221). Records are delivered only
  while aiokafka's position is where their fetch left it, and gaps are acked
  only for offsets a fetch passed over. Tests: tests/unit/test_stale_fetch.py
  (Faust's own fetch loop rules, a stand-in consumer thread); on the broker
  the churn test below counts the stale records dropped.
- :mod:`.guards`, ``SkipGuard`` (``skip-guard``): Faust's fetch loop can skip
  records after a reassignment (faust-streaming #216/#221, still on 0.15.3);
  the worker exits (75) before acking them.
  Test: tests/integration/test_faust_corrections.py::
  test_no_record_is_skipped_while_members_come_and_go.
- :mod:`.recovery`, ``on_consistency_error`` (``consistency``): Faust's table
  recovery crashes (exit 1) on a ``ConsistencyError``; the worker reports a
  broker loss and exits 65. Test: tests/reliability/test_broker_restart.py::
  test_faust_consistency_error_ends_in_the_same_report.
- :mod:`.offsets`, ``checked_fetch_commit_offsets`` (``offset-fetch``):
  aiokafka reads an OffsetFetch answer's group-level error (v2+, e.g. a
  former coordinator's ``NOT_COORDINATOR``) as "no committed offset": the
  skip guard then restarted healthy workers after a broker pause, and a
  consumer would fall back to ``auto_offset_reset``. The copy raises it and
  aiokafka retries after a new coordinator lookup. Installed on import of
  this package, for every aiokafka consumer of the process.
  Tests: tests/unit/test_offset_fetch.py; on a cluster,
  tests/reliability/test_cluster_faults.py::test_a_broker_paused_for_20_s.
- :mod:`.restart`: the typed exceptions that end the worker process, and the
  one function that turns them into its exit code (not a correction).

Deleted in December 2026: the copy of ``_Consumer._commit_tps`` that ran the
checkpoint inside Faust's commit (the worker now acks only what a checkpoint
covers); and, as no failure on Apache Kafka showed without them, the
draining producer buffer and its raised limit (the worker puts nothing into
Faust's producer buffer), the seek of partitions without a committed offset
to their beginning, and the stall watchdog (docs/reliability.md says what
was tried).
"""

from app.faust_corrections import offsets as _offsets

_offsets.install()
