"""The notifier process (``mastery notifier``): status changes delivered to
the partners' webhooks (service.py), its metrics and readiness (metrics.py).

Nothing is imported here.
"""
