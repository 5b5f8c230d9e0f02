"""Candor demo: replays the seed incident on one machine and measures the fix."""
