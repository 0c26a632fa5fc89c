"""The contract between the API and the workers: spec, settings, Celery config, Redis store, diagnosis. No torch, no Flask."""
