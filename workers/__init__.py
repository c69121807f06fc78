"""Workers: the Celery app and thin tasks that run the core trainer/sampler in a child process."""
