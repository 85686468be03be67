"""Training: the trainer and its step loop, the run directory, and the worker processes that
share each batch (the pool and its batch exchange)."""
