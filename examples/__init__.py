"""Runnable examples (``python examples/NAME.py``); a package so ``celery -A examples.celery_app`` works."""
