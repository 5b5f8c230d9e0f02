"""Candor tracer: job-seconds counters that include in-flight work at every scrape."""
