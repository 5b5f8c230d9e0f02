"""A list-and-watch cache of one kind of object (Services, Deployments, governed pods), slimmed as it arrives,
outside kopf.

Why not kopf's indices and event handlers: kopf runs every object it watches through its per-object machinery
(a worker, a memory, a Body view, handler invocations), and until the initial listing of every index is done,
each object's worker waits on one shared condition that every newly indexed object notifies, so that start
costs the square of the objects watched. In a cluster of 10,000 Services and 5,000 Deployments, of which Candor
governs a few hundred, an operator start took minutes and its memory passed 250 MiB (bench/operator_scale.py).
kopf now watches HealthPolicies only; these caches keep what decisions need of every Service and Deployment
(services.slim_service, rollout.slim_deployment), listed in pages of 500 so a large list never sits in memory
whole, and hand each change to a handler, at most `CONCURRENCY` at a time and in order per object.

`get(namespace)` answers like the kopf index it replaces: the slim objects of one namespace.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import aiohttp

from candor_operator.kube import ApiError, KubeClient

logger = logging.getLogger("candor.operator")

PAGE = 500  # objects per list request
WATCH_SECONDS = 300  # the server ends a watch after this (and a random part of it), like client-go's reflectors
CONCURRENCY = 16  # handlers running at once (each may write through the API)
RETRY_SECONDS = (1.0, 30.0)  # backoff between failed lists or watches: first, ceiling

Slim = Callable[[Mapping[str, Any]], Any]  # what the cache keeps of an object; None: nothing (not of interest)
Handler = Callable[[str | None, dict[str, Any]], Awaitable[None]]  # (event type, None while listing; the object)


class Informer:
    """The slim objects at `path_of(namespace)` (None: the whole cluster) in `namespaces` (empty: the whole
    cluster), kept current by list and watch; `handler` hears of each object listed or changed. With
    `label_selector`, the API server sends only the objects it selects (it filters the watch too: an object
    that stops matching arrives as DELETED)."""

    def __init__(self, kind: str, client: Callable[[], KubeClient], path_of: Callable[[str | None], str],
                 namespaces: Sequence[str], slim: Slim, handler: Handler | None = None,
                 on_watching: Callable[[str], None] | None = None, page: int = PAGE,
                 label_selector: str | None = None) -> None:
        # on_watching(kind): called when a watch is accepted after the first listing (for the readiness check)
        self.kind = kind
        self._client = client
        self._path_of = path_of
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._slim = slim
        self._page = str(page)
        self._selection = {"labelSelector": label_selector} if label_selector else {}
        self._handler = handler
        self._on_watching = on_watching
        self._store: dict[str, dict[str, Any]] = {}  # namespace -> name -> slim object
        self._listed: set[str | None] = set()
        self.synced = asyncio.Event()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._task: asyncio.Task[Any] | None = None

    # ---- what the handlers read ---------------------------------------------------------------------------

    def get(self, namespace: str) -> list[Any] | None:
        store = self._store.get(namespace)
        return list(store.values()) if store else None

    def __iter__(self) -> Iterator[str]:
        """The namespaces holding objects, as iterating kopf's index gives its keys."""
        return iter([namespace for namespace, store in self._store.items() if store])

    async def wait_synced(self) -> None:
        await self.synced.wait()

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"candor informer {self.kind}")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._running.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        await asyncio.gather(*(self._follow(scope) for scope in self._scopes))

    async def _follow(self, scope: str | None) -> None:
        """List, then watch from the list's version; list again when the watch's version is too old (410)."""
        delay = RETRY_SECONDS[0]
        while True:
            try:
                version: str | None = await self._list(scope)
                delay = RETRY_SECONDS[0]
                while version is not None:
                    version = await self._watch(scope, version)
            except asyncio.CancelledError:
                raise
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                logger.warning("watching %s: %s; again in %.0f s", self.kind, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])

    async def _list(self, scope: str | None) -> str:
        """Replaces the scope's objects with a fresh listing (in pages); the list's resourceVersion."""
        fresh: dict[str, dict[str, Any]] = {}
        params = {"limit": self._page, **self._selection}
        while True:
            page = await self._client().request("GET", self._path_of(scope), params=params)
            for item in page.get("items") or []:
                slim = self._slimmed(item)
                if slim is not None:
                    fresh.setdefault(_namespace(item), {})[_name(item)] = slim
                # Handed on page by page (a handler reads the policies, not this cache), so no more than a
                # page of whole objects is held at a time.
                await self._dispatch(None, self._reference(item, page))
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params["continue"] = str(metadata["continue"])
        before = self._store if scope is None else {scope: self._store.get(scope, {})}
        if scope is None:
            self._store = fresh
        else:
            self._store[scope] = fresh.get(scope, {})
        # A listing after a 410 replaces the cache: what was deleted in the gap left no watch event, so the
        # handlers hear of it here (as DELETED, with the name alone), or they would count it forever.
        for namespace, objects in before.items():
            for name in objects.keys() - fresh.get(namespace, {}).keys():
                await self._dispatch("DELETED", {"metadata": {"namespace": namespace, "name": name}})
        self._listed.add(scope)
        if len(self._listed) == len(self._scopes):
            self.synced.set()
        return str(metadata.get("resourceVersion") or "")

    def _opened(self) -> None:
        """A watch was accepted: once listed too, the readiness check counts this kind as followed."""
        if self.synced.is_set() and self._on_watching is not None:
            self._on_watching(self.kind)

    def _slimmed(self, item: Mapping[str, Any]) -> Any:
        try:
            return self._slim(item)
        except Exception:  # one malformed object must not stop the cache (kopf's indexers log and go on too)
            logger.exception("cannot read %s %s/%s", self.kind, _namespace(item), _name(item))
            return None

    def _reference(self, item: dict[str, Any], page: Mapping[str, Any]) -> dict[str, Any]:
        """A listed item as a watch event carries it (lists name kind and apiVersion once, for all items)."""
        item.setdefault("kind", str(page.get("kind", "")).removesuffix("List"))
        if "apiVersion" in page:
            item.setdefault("apiVersion", page["apiVersion"])
        return item

    async def _watch(self, scope: str | None, version: str) -> str | None:
        """Follows one watch stream; the version to watch on from, or None when a new list is needed."""
        params = {"resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(int(WATCH_SECONDS * (1 + random.random()))), **self._selection}
        async for event in self._client().watch(self._path_of(scope), params, timeout=2 * WATCH_SECONDS + 30,
                                                opened=self._opened):
            kind, item = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if item.get("code") == 410:  # the version is gone from the server's window: list afresh
                    return None
                raise ApiError(int(item.get("code") or 500), "WATCH", self._path_of(scope), str(item.get("message")))
            version = str((item.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            namespace, name = _namespace(item), _name(item)
            slim = self._slimmed(item) if kind != "DELETED" else None
            if slim is None:
                self._store.get(namespace, {}).pop(name, None)
            else:
                self._store.setdefault(namespace, {})[name] = slim
            await self._dispatch(str(kind), item)
        return version

    async def _dispatch(self, kind: str | None, item: dict[str, Any]) -> None:
        """Runs the handler for one event, after any earlier one for the same object; waits while
        `CONCURRENCY` handlers run, so a burst of events holds no more than that many objects."""
        if self._handler is None:
            return
        await self._limit.acquire()
        key = (_namespace(item), _name(item))
        task = asyncio.create_task(self._handle(self._running.get(key), kind, item))
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: tuple[str, str], done: asyncio.Task[None]) -> None:
        self._limit.release()
        if self._running.get(key) is done:
            del self._running[key]

    async def _handle(self, previous: asyncio.Task[None] | None, kind: str | None, item: dict[str, Any]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        assert self._handler is not None
        try:
            await self._handler(kind, item)
        except Exception:
            # As kopf does with a failing event handler: logged, and the next event of the object tries again.
            logger.exception("handling %s %s/%s failed", self.kind, _namespace(item), _name(item))


def _namespace(item: Mapping[str, Any]) -> str:
    return str((item.get("metadata") or {}).get("namespace") or "")


def _name(item: Mapping[str, Any]) -> str:
    return str((item.get("metadata") or {}).get("name") or "")
