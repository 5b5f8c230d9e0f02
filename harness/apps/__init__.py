"""The apps run as subprocesses by the tests and benchmarks (Celery, RQ, WSGI, ASGI, plain HTTP), traced with
candor_tracer, and what their runs report back to the test."""
