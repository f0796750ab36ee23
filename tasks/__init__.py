"""Thin Celery adapters over the domain: ints and strings in, a small summary out."""
