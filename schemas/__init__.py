"""Pydantic models shared by the worker and the API: events and API bodies."""
