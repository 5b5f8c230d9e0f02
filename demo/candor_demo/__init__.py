"""Candor demo: replays a job-seconds and health incident on one machine and measures the fix."""
