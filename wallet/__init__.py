"""Ethereum wallet manager domain: plain Python, never imports Celery, tasks or workers."""
