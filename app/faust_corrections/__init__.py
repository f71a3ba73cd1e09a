"""Every correction of faust-streaming's behaviour, in one package.

Verified on faust-streaming 0.15.x (0.15.3) with aiokafka 0.14 (the pinned
range in pyproject.toml). Each module names the upstream behaviour it corrects:

- :mod:`.transport`: the consumer's fetch wait follows the broker profile
  (Faust hard-codes 1.5 s); partitions without a committed offset are read
  from the beginning after an assignment (aiokafka leaves them where the
  fetcher was, past records Faust dropped at the rebalance); the producer
  buffer's flush waits for every record put before it (Faust's gives up after
  0.1 s); and the commit hook that lets the worker's write-back checkpoint run
  at the exact moment Faust picks the offsets to commit.
- :mod:`.streams`: ``take_ready``, batches handed over as soon as the records
  fetched so far are in them (Faust's ``take_events`` waits its whole window
  after every batch that is not full).
- :mod:`.store`: reads and writes a registration's state in *its own*
  partition of the RocksDB store (Faust addresses "the current event's"
  partition, which inside a batch is the batch's last event).
- :mod:`.guards`: the skip guard (Faust's fetch loop can skip records after a
  rebalance, faust-streaming #216/#221) and the stall watchdog.
- :mod:`.restart`: the typed exceptions that end the worker process, and the
  one function that turns them into its exit code.
"""
