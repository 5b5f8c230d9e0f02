"""The drain before termination: the agent says `drain` before the app is told to stop, until HAProxy heard it.

The pod's termination runs every container's preStop hook at once. The sidecar's own hook
(`candor sidecar drain`, over the control socket) begins the drain; each app container's hook is an HTTP
GET of `/drain/wait`, which only waits: it returns once the drain has begun and every load balancer that
was polling this agent has heard `drain` since, and the kubelet sends the app SIGTERM only then.

Who counts as a load balancer still to be told: every source address that polled the agent within
`window` (one poll interval and a second: HAProxy polls on a fixed timer, so a peer that misses its poll by
more than a second has stopped). One that stops polling for that long has taken the server out of its checks
(MAINT, re-addressed, or removed): it sends no new requests either, so it is not waited for. So a wait
normally ends after one poll interval, at most one interval and a second after the last poll of a peer that
stopped, and never after more than `max_wait`.

A drain begun without a termination behind it (a hand-run `candor sidecar drain`) lifts itself after
`lift_after`: the agent says `ready` again, as after maintenance.

The modules, one concept each: `state` (where a drain stands, peer by peer, on a clock), `handshake` (the
sidecar's side on its event loop: begin, lift, /drain/wait, following and counting each drain), `held_waits`
(how many waits may be held at once) and `history` (what the drains did, for /metrics). The Sidecar only
wires the handshake to the agent, the HTTP routes, the control socket and SIGTERM.
"""
