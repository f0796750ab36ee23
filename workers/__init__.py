"""Processes: the Celery app, the Kafka command consumer, the dev-stack launcher and the CLI."""
