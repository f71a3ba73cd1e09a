"""mastery-stream's processes: worker/ (the stream processor), notifier/
(webhook delivery), cli/ (the ``mastery`` command, the one place that composes
the worker and the API) and devstack/ (the whole system on one machine).
metrics.py, the Prometheus metrics and health server, is shared by the worker
and the notifier.
"""
