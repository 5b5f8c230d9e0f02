"""Which Deployment the sidecar upgrade queue restarts next, and when a rollout counts as finished."""

from __future__ import annotations

from typing import Any

from candor_operator.api_names import SIDECAR_IMAGE_ANNOTATION, VERSION_ANNOTATION
from candor_operator.pod_census import count, on_old_sidecar
from candor_operator.sidecar_upgrade import PATCH_SEEN_WITHIN, UpgradeQueue, rollout_fields, rollout_finished


def body(generation: int = 2, observed: int = 2, desired: int = 3, replicas: int = 3, updated: int = 3,
         available: int = 3, progressing: dict[str, str] | None = None, paused: bool = False) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "spec": {"replicas": desired, "paused": paused},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                       "availableReplicas": available,
                       "conditions": [{"type": "Progressing", **progressing}] if progressing else []}}


def test_a_rollout_is_finished_as_kubectl_rollout_status_says_or_when_given_up() -> None:
    assert rollout_finished(rollout_fields(body()))
    assert not rollout_finished(rollout_fields(body(observed=1)))  # the controller has not seen the new template
    assert not rollout_finished(rollout_fields(body(updated=2)))  # not every replica on the new template
    assert not rollout_finished(rollout_fields(body(replicas=4)))  # an old ReplicaSet's pod is left
    assert not rollout_finished(rollout_fields(body(available=2)))  # a new pod not available yet
    gave_up = {"status": "False", "reason": "ProgressDeadlineExceeded"}
    assert rollout_finished(rollout_fields(body(updated=1, available=0, progressing=gave_up)))
    assert not rollout_finished(rollout_fields(body(observed=1, progressing=gave_up)))  # an older rollout's
    assert rollout_finished(rollout_fields(body(updated=1, paused=True)))  # will not move until resumed
    assert rollout_finished(rollout_fields({"metadata": {"generation": 1}, "spec": {"replicas": 0},
                                            "status": {"observedGeneration": 1}}))


def slim(name: str, config_hash: str | None, **status: Any) -> dict[str, Any]:
    return {"namespace": "ns", "name": name, "hash": config_hash, "rollout": rollout_fields(body(**status))}


def test_the_queue_restarts_one_at_a_time_and_drops_what_no_longer_waits() -> None:
    now = [0.0]
    queue = UpgradeQueue(clock=lambda: now[0])
    for name in ("a", "b", "c", "m"):
        queue.wait(("ns", name))
    olds = [slim("a", "old"), slim("b", "old"), slim("c", None), slim("m", "old")]
    listed = [(olds[0], "new"), (olds[1], "new"), (olds[2], "new"), (olds[3], None)]  # m: Manual
    chosen = queue.choose(listed)
    assert chosen is olds[0] and queue.waiting == 3
    queue.restarted(("ns", "a"), "new")
    assert queue.waiting == 2  # m left: no Automatic policy governs it
    assert queue.choose(listed) is None  # the index has not seen a's patch yet
    rolling = slim("a", "new", observed=1)
    assert queue.choose([(rolling, "new"), *listed[1:]]) is None  # a's rollout under way
    done = slim("a", "new")
    assert queue.choose([(done, "new"), *listed[1:]]) is olds[1]
    # b got the new hash from something else meanwhile (a policy change restarted it): it waits no more.
    queue.restarted(("ns", "c"), "new")
    now[0] += PATCH_SEEN_WITHIN + 1  # c's patch never showed: someone else changed its template since
    assert queue.choose([(done, "new"), (slim("b", "new"), "new"), (slim("c", "other"), "new")]) is None
    assert queue.waiting == 0


def test_a_pod_is_on_an_old_sidecar_by_its_release_or_its_recorded_image() -> None:
    def pod(annotations: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"annotations": {"candor.io/status": "injected", **annotations}}}

    current = pod({VERSION_ANNOTATION: "1.0", SIDECAR_IMAGE_ANNOTATION: "sidecar:1.0"})
    assert not on_old_sidecar(current, "1.0", "sidecar:1.0")
    assert on_old_sidecar(pod({VERSION_ANNOTATION: "0.9", SIDECAR_IMAGE_ANNOTATION: "sidecar:1.0"}), "1.0")
    assert on_old_sidecar(current, "1.0", "sidecar:1.0-patched")  # same release, another image
    assert not on_old_sidecar(pod({VERSION_ANNOTATION: "1.0"}), "1.0", "sidecar:1.0")  # image not recorded
    assert not on_old_sidecar({"metadata": {"annotations": {VERSION_ANNOTATION: "0.9"}}}, "1.0")  # no sidecar
    assert count([current], "1.0", "sidecar:1.1").other_version == 1
