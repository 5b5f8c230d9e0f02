"""The pod contract: the names the operator's injection writes into a governed pod, and the tracer and the
sidecar read there.

One home for each, so the parts cannot drift apart: the injection (candor_operator.injection) sets these
environment variables, mounts these folders and points the probes and hooks at these endpoints; the tracer
(in the app containers) and the sidecar find them under the same names. It lives in the tracer, the lowest
layer, because every part may import the tracer and the tracer nothing of Candor's; it imports nothing.
"""

from __future__ import annotations

# Environment variables.
STATE_DIR_ENV = "CANDOR_STATE_DIR"  # every container: the journals' folder (the tracer writes, the sidecar reads)
APP_MEMORY_LIMIT_ENV = "CANDOR_APP_MEMORY_LIMIT"  # the sidecar: the app container's limits.memory (downward API)
CONTROL_SOCKET_ENV = "CANDOR_CONTROL_SOCKET"  # `candor sidecar` and `candor sidecar drain`: the control socket
POD_IP_ENV = "POD_IP"  # the sidecar: the pod's address (downward API), where an app bound to it only listens

# Folders mounted into the pod's containers.
STATE_DIR = "/var/run/candor"  # the journals: an emptyDir mounted into every container
PODINFO_DIR = "/etc/podinfo"  # the pod's labels and annotations (a downwardAPI volume), in the sidecar
PODINFO_ANNOTATIONS = "annotations"  # the file of that volume holding the annotations
# The control socket's folder: an in-memory emptyDir mounted into the sidecar container alone, so only a
# process there (its preStop hook) can begin a drain.
CONTROL_DIR = "/run/candor-control"
CONTROL_SOCKET = f"{CONTROL_DIR}/sidecar.sock"

# The sidecar's ports when the HealthPolicy does not choose others.
DEFAULT_HTTP_PORT = 9898  # /health, /livez, /readyz, /metrics, /drain/wait
DEFAULT_AGENT_PORT = 9999  # the HAProxy agent-check

# The sidecar container's termination message file: the kubelet's default `terminationMessagePath`, which the
# injection states explicitly. The sidecar leaves its last drain's summary there; the kubelet copies it into the
# pod's status when the container exits, where the operator reads it (the sidecar holds no API credentials).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# The sidecar's endpoints that the pod's probes and hooks call (on the HTTP port).
LIVENESS_PATH = "/livez"  # the sidecar container's livenessProbe
SERVING_PATH = "/health/app"  # its readinessProbe: the app accepts connections on its serving ports
DRAIN_WAIT_PATH = "/drain/wait"  # each app container's preStop hook: returns once the load balancers heard the drain
