"""gunicorn settings of the gunicorn tests: two sync workers, recycled after 3 requests, killed after 1 s."""

from candor_tracer.gunicorn import post_fork, when_ready, worker_exit

__all__ = ["post_fork", "when_ready", "worker_exit"]

workers = 2
timeout = 1  # SIGABRT after 1-2 s without a heartbeat to the arbiter, SIGKILL one arbiter turn later
max_requests = 3
max_requests_jitter = 0
loglevel = "warning"
