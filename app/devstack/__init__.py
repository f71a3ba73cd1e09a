"""The whole system on one machine: embedded Apache Kafka and valkey, the
worker, API and notifier processes pointed at them (stack.py, ``mastery
dev``), and workloads to stream. Used by ``mastery dev`` and ``mastery
produce``, the tests and the benchmarks.

Nothing is imported here.
"""
