"""The demo's two timetables: the full run (~3 min, 15 s scrapes, a common production interval) and --quick
(~70 s, 2 s scrapes).

Times are seconds after Prometheus first scraped every target (the script's zero). Instance i has job-length
setting `job_max[i]`, so the three panels of the busy-workers figure are three job-length regimes (jobs up
to 1 s, 15 s, 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass

INSTANCES = ("resizer-1", "resizer-2", "resizer-3")
WORKERS_PER_INSTANCE = 10
MEMORY_LIMIT_BYTES = 256 * 1024 * 1024  # the "container limit" each instance reports (CANDOR_APP_MEMORY_LIMIT)
MEMORY_MAX_PERCENT = 80
MEMORY_FILL_PERCENT = 88


@dataclass(frozen=True)
class DemoSettings:
    name: str
    scrape_interval: float
    job_max: tuple[float, float, float]  # per instance
    heartbeat_interval: float  # CANDOR_HEARTBEAT_INTERVAL of the apps: bounds the work a SIGKILL can lose
    evaluation_interval: float  # the sidecars' check evaluation period
    agent_interval: str  # HAProxy agent-inter (policy.agentCheck.interval)
    http_interval: str  # HAProxy inter for httpchk (policy.httpCheck.interval)
    slow_start: str  # policy.slowStart
    final_scrape_timeout: str  # policy.metrics.finalScrapeTimeout
    memory_fault_at: float  # instance 2 allocates past 80 % of its limit
    memory_free_at: float  # ... and frees it again; then the slow-start ramp
    sigkill_at: float  # a worker process of instance 3 is SIGKILLed mid-job (not before it has run a while)
    sigkill_min_inflight: float  # only a job that has been running at least this long is killed
    starve_at: float  # instance 1's CPU limit drops to `starve_cores` and a CPU hog starts in its cgroup
    starve_end_at: float  # ... and both are lifted again; its weight and share should recover before the SIGTERM
    sigterm_at: float  # instance 1 (app, then its sidecar) gets SIGTERM
    end_at: float  # the last scrape we wait for
    request_rate: float  # load generator requests per second through HAProxy
    starve_cores: float = 0.25  # the starved instance's CPU limit (a hog in its group uses all of it)
    skip_first_scrapes: int = 1  # the first interval may still hold a worker's start-up


FULL = DemoSettings(
    name="full", scrape_interval=15.0, job_max=(1.0, 15.0, 30.0), heartbeat_interval=0.25, evaluation_interval=0.25,
    agent_interval="2s", http_interval="2s", slow_start="20s", final_scrape_timeout="40s",
    memory_fault_at=40.0, memory_free_at=65.0, sigkill_at=95.0, sigkill_min_inflight=5.0, starve_at=100.0,
    starve_end_at=120.0, sigterm_at=140.0, end_at=175.0, request_rate=25.0, skip_first_scrapes=1)

QUICK = DemoSettings(
    name="quick", scrape_interval=2.0, job_max=(0.5, 4.0, 8.0), heartbeat_interval=0.1, evaluation_interval=0.2,
    agent_interval="1s", http_interval="1s", slow_start="6s", final_scrape_timeout="10s",
    memory_fault_at=6.0, memory_free_at=13.0, sigkill_at=24.0, sigkill_min_inflight=1.0, starve_at=26.0,
    starve_end_at=34.0, sigterm_at=41.0, end_at=49.0, request_rate=25.0, skip_first_scrapes=1)


def settings_for(quick: bool) -> DemoSettings:
    return QUICK if quick else FULL
