"""Evaluation's URLs; the REST API is in ``evaluation.urls.api`` (``api/v1/experiments/``,
mounted in config/urls.py)."""
