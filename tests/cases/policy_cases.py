"""HealthPolicy specs shared by the operator's Python tests and the API-server tests.

INVALID_POLICIES: (case id, spec, field the error must name). Each spec breaks exactly one rule of
crds/healthpolicy.yaml, so the same table proves candor_operator.policy.parse_policy and a real
kube-apiserver (with the CRD installed) refuse the same things, naming the same field.
"""

from __future__ import annotations

import copy
from typing import Any

SELECTOR: dict[str, Any] = {"matchLabels": {"app": "demo"}}


def valid_spec(**overrides: Any) -> dict[str, Any]:
    """A small valid spec; keyword arguments replace top-level fields (None removes one)."""
    spec: dict[str, Any] = {"selector": copy.deepcopy(SELECTOR)}
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


FULL_SPEC: dict[str, Any] = {
    "selector": {
        "matchLabels": {"app": "demo", "app.kubernetes.io/part-of": "shop"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                             {"key": "canary", "operator": "DoesNotExist"}],
    },
    "ingress": {"controller": "haproxy-ingress", "services": ["demo", "demo-admin"]},
    "httpCheck": {"path": "/health", "port": 9898, "interval": "1s", "timeout": "500ms", "rise": 2, "fall": 3,
                  "expectStatus": 200},
    "agentCheck": {"port": 9999, "interval": "1s",
                   "weight": {"from": ["cpu", "occupancy"], "targetPercent": 70, "minPercent": 10, "stepPercent": 10}},
    "memory": {"maxPercent": 75},
    "cpu": {"warnPercent": 90},
    "disk": {"paths": ["/data", "/tmp"], "maxPercent": 85},
    "deadlock": {"heartbeatTimeout": "15s", "maxJobDuration": "30m"},
    "slowStart": "1m",
    "maxConn": 30,
    "queueTimeout": "5s",
    "passive": {"observe": "layer7", "errorLimit": 10, "onError": "mark-down"},
    "metrics": {"finalScrapeTimeout": "30s"},
    "rollout": "Manual",
    "drain": {"enabled": True, "maxWait": "10s"},
}

INVALID_POLICIES: list[tuple[str, dict[str, Any], str]] = [
    ("no selector", valid_spec(selector=None), "spec.selector"),
    ("empty selector", valid_spec(selector={}), "spec.selector"),
    ("selector with empty lists", valid_spec(selector={"matchLabels": {}, "matchExpressions": []}), "spec.selector"),
    ("bad label value", valid_spec(selector={"matchLabels": {"app": "has space"}}), "spec.selector.matchLabels.app"),
    ("label key with a space and !", valid_spec(selector={"matchLabels": {"bad key!": "x"}}),
     "spec.selector.matchLabels"),
    ("label key with two slashes", valid_spec(selector={"matchLabels": {"a/b/c": "x"}}), "spec.selector.matchLabels"),
    ("label key with an uppercase prefix", valid_spec(selector={"matchLabels": {"Example.COM/app": "x"}}),
     "spec.selector.matchLabels"),
    ("label key name over 63", valid_spec(selector={"matchLabels": {"a" * 64: "x"}}), "spec.selector.matchLabels"),
    ("label key prefix over 253", valid_spec(selector={"matchLabels": {("a" * 60 + ".") * 5 + "/app": "x"}}),
     "spec.selector.matchLabels"),
    ("expression key name over 63",
     valid_spec(selector={"matchExpressions": [{"key": "k" * 64, "operator": "Exists"}]}),
     "spec.selector.matchExpressions[0].key"),
    ("In without values", valid_spec(selector={"matchExpressions": [{"key": "tier", "operator": "In"}]}),
     "spec.selector.matchExpressions[0].values"),
    ("unknown selector operator",
     valid_spec(selector={"matchExpressions": [{"key": "tier", "operator": "Like", "values": ["a"]}]}),
     "spec.selector.matchExpressions[0].operator"),
    ("unknown controller", valid_spec(ingress={"controller": "nginx"}), "spec.ingress.controller"),
    ("bad service name", valid_spec(ingress={"services": ["Demo_Service"]}), "spec.ingress.services[0]"),
    ("duplicate service", valid_spec(ingress={"services": ["demo", "demo"]}), "spec.ingress.services[1]"),
    ("duration without unit", valid_spec(httpCheck={"interval": "10"}), "spec.httpCheck.interval"),
    ("duration with a space", valid_spec(httpCheck={"interval": "2 s"}), "spec.httpCheck.interval"),
    ("duration with a trailing newline", valid_spec(slowStart="30s\n"), "spec.slowStart"),
    ("duration in days (not Go's grammar)", valid_spec(deadlock={"maxJobDuration": "1d"}),
     "spec.deadlock.maxJobDuration"),
    ("negative duration", valid_spec(slowStart="-1s"), "spec.slowStart"),
    ("duration as a number", valid_spec(agentCheck={"interval": 2}), "spec.agentCheck.interval"),
    ("check interval too short", valid_spec(httpCheck={"interval": "50ms"}), "spec.httpCheck.interval"),
    ("check interval too long", valid_spec(httpCheck={"interval": "2h"}), "spec.httpCheck.interval"),
    ("check timeout above interval", valid_spec(httpCheck={"interval": "1s", "timeout": "2s"}),
     "spec.httpCheck.timeout"),
    ("check path without slash", valid_spec(httpCheck={"path": "health"}), "spec.httpCheck.path"),
    ("check path with space", valid_spec(httpCheck={"path": "/he alth"}), "spec.httpCheck.path"),
    ("check path with a trailing newline", valid_spec(httpCheck={"path": "/health\n"}), "spec.httpCheck.path"),
    ("check path with comment sign", valid_spec(httpCheck={"path": "/health#x"}), "spec.httpCheck.path"),
    ("check port 0", valid_spec(httpCheck={"port": 0}), "spec.httpCheck.port"),
    ("agent port 65536", valid_spec(agentCheck={"port": 65536}), "spec.agentCheck.port"),
    ("load weight from nothing", valid_spec(agentCheck={"weight": {"from": []}}), "spec.agentCheck.weight.from"),
    ("load weight from an unknown figure", valid_spec(agentCheck={"weight": {"from": ["cpu", "disk"]}}),
     "spec.agentCheck.weight.from[1]"),
    ("load weight from cpu twice", valid_spec(agentCheck={"weight": {"from": ["cpu", "cpu"]}}),
     "spec.agentCheck.weight.from[1]"),
    ("load weight target 100", valid_spec(agentCheck={"weight": {"targetPercent": 100}}),
     "spec.agentCheck.weight.targetPercent"),
    ("load weight min 0 (load alone never drains)", valid_spec(agentCheck={"weight": {"minPercent": 0}}),
     "spec.agentCheck.weight.minPercent"),
    ("load weight step 51", valid_spec(agentCheck={"weight": {"stepPercent": 51}}),
     "spec.agentCheck.weight.stepPercent"),
    ("cpu warn 0", valid_spec(cpu={"warnPercent": 0}), "spec.cpu.warnPercent"),
    ("port as a string", valid_spec(httpCheck={"port": "9898"}), "spec.httpCheck.port"),
    ("agent port equals check port", valid_spec(httpCheck={"port": 9000}, agentCheck={"port": 9000}),
     "spec.agentCheck.port"),
    ("rise 0", valid_spec(httpCheck={"rise": 0}), "spec.httpCheck.rise"),
    ("fall 101", valid_spec(httpCheck={"fall": 101}), "spec.httpCheck.fall"),
    ("expected status 700", valid_spec(httpCheck={"expectStatus": 700}), "spec.httpCheck.expectStatus"),
    ("memory percent 0", valid_spec(memory={"maxPercent": 0}), "spec.memory.maxPercent"),
    ("memory percent 150", valid_spec(memory={"maxPercent": 150}), "spec.memory.maxPercent"),
    ("memory percent fractional", valid_spec(memory={"maxPercent": 80.5}), "spec.memory.maxPercent"),
    ("disk percent 101", valid_spec(disk={"maxPercent": 101}), "spec.disk.maxPercent"),
    ("relative disk path", valid_spec(disk={"paths": ["data"]}), "spec.disk.paths[0]"),
    ("heartbeat timeout too short", valid_spec(deadlock={"heartbeatTimeout": "500ms"}),
     "spec.deadlock.heartbeatTimeout"),
    ("max job duration below heartbeat timeout",
     valid_spec(deadlock={"heartbeatTimeout": "1m", "maxJobDuration": "30s"}),
     "spec.deadlock.maxJobDuration"),
    ("slow start shorter than the check interval", valid_spec(slowStart="1s", httpCheck={"interval": "5s"}),
     "spec.slowStart"),
    ("slow start shorter than the agent interval", valid_spec(slowStart="3s", agentCheck={"interval": "10s"}),
     "spec.slowStart"),
    ("slow start over an hour", valid_spec(slowStart="2h"), "spec.slowStart"),
    ("maxConn 0", valid_spec(maxConn=0), "spec.maxConn"),
    ("maxConn too large", valid_spec(maxConn=1_000_000), "spec.maxConn"),
    ("queue timeout without maxConn", valid_spec(queueTimeout="5s"), "spec.queueTimeout"),
    ("queue timeout too long", valid_spec(maxConn=30, queueTimeout="10m"), "spec.queueTimeout"),
    ("passive without observe", valid_spec(passive={"errorLimit": 10}), "spec.passive.observe"),
    ("unknown observe layer", valid_spec(passive={"observe": "layer3"}), "spec.passive.observe"),
    ("unknown on-error action", valid_spec(passive={"observe": "layer4", "onError": "restart"}),
     "spec.passive.onError"),
    ("error limit 0", valid_spec(passive={"observe": "layer4", "errorLimit": 0}), "spec.passive.errorLimit"),
    ("final scrape timeout too long", valid_spec(metrics={"finalScrapeTimeout": "1h"}),
     "spec.metrics.finalScrapeTimeout"),
    ("unknown rollout", valid_spec(rollout="Sometimes"), "spec.rollout"),
    ("drain enabled as a string", valid_spec(drain={"enabled": "yes"}), "spec.drain.enabled"),
    ("drain wait too long", valid_spec(drain={"maxWait": "11m"}), "spec.drain.maxWait"),
    ("drain wait shorter than the agent interval", valid_spec(drain={"maxWait": "5s"}, agentCheck={"interval": "10s"}),
     "spec.drain.maxWait"),
]
