"""Real processes the tests and benchmarks start (the sidecar, the operator, HAProxy rigs, redis-server,
CPU cgroups), the free ports they listen on and the one polling wait."""
