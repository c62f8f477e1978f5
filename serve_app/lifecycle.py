"""One holder per replica that owns when an engine's weights are loaded, moved and dropped.

Engines only know *how* to load, unload and move their weights; this module decides *when*.
All transitions run under one asyncio lock, and the slow part of each (load, unload, move) runs
in a worker thread so the replica's event loop keeps accepting requests. A request that
arrives during a transition waits for the lock and then finds a usable model; an idle timer
re-checks, under the lock, that nothing is pending or running before it unloads anything.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from .config import LifecycleConfig
from .engines.base import Engine
from .errors import ModelLoadError, ServiceError
from .memory import cuda_memory_bytes, rss_bytes

log = logging.getLogger("ray.serve")

# States reported by /v1/status.
UNLOADED, LOADING, LOADED, OFFLOADING, OFFLOADED, RESTORING, UNLOADING, FAILED = (
    "unloaded", "loading", "loaded", "offloading", "offloaded", "restoring", "unloading", "failed")


class ModelHolder:
    def __init__(self, engine: Engine, lifecycle: LifecycleConfig, name: str = "",
                 on_event: Callable[[str, float], None] | None = None):
        """on_event(event, seconds) is told of "load", "unload", "offload", "restore"."""
        self.engine = engine
        self.lifecycle = lifecycle
        self.name = name or engine.model_id
        self.on_event = on_event or (lambda event, seconds: None)
        self.state = UNLOADED
        self.last_error: str | None = None
        self.last_used: float | None = None  # unix time the last request finished
        self.load_time_s: float | None = None  # duration of the last successful load/restore
        self._lock = asyncio.Lock()
        self._pending = 0  # requests accepted and not yet answered
        self._running = 0  # batches using the weights right now
        self._attempts = 0  # load attempts so far (lets waiters share one failure)
        self._idle_task: asyncio.Task | None = None
        self.events = {"load": 0, "unload": 0, "offload": 0, "restore": 0}  # counts

    # -- what the deployment calls ---------------------------------------------------------
    @contextlib.contextmanager
    def request(self):
        """Wrap one request from arrival to answer: while any is pending, nothing unloads."""
        self._pending += 1
        self._cancel_idle_timer()
        try:
            yield
        finally:
            self._pending -= 1
            self.last_used = time.time()
            self._maybe_start_idle_timer()

    @contextlib.asynccontextmanager
    async def use(self):
        """Hold a usable model for one batch: loads or restores it first if needed."""
        attempts_seen = self._attempts
        async with self._lock:
            if self.state == FAILED and self._attempts > attempts_seen:
                # A load failed while this batch waited: share that answer, don't retry at once.
                raise ModelLoadError(self.last_error)
            await self._make_ready()
            self._running += 1
        try:
            yield self.engine
        finally:
            self._running -= 1

    async def load(self) -> None:
        """Load now (start-up of resident models, or an operator's explicit load)."""
        async with self._lock:
            await self._make_ready()
        self._maybe_start_idle_timer()

    async def unload(self, force: bool = False) -> bool:
        """Drop the weights now if nothing uses them; an operator's unload ignores `pin`."""
        async with self._lock:
            if self._running:
                return False
            if self.state in (LOADED, OFFLOADED, FAILED) and (force or not self.lifecycle.pin):
                await self._unload()
                return True
            return False

    def status(self) -> dict:
        return {
            "state": self.state, "mode": self.lifecycle.mode, "pinned": self.lifecycle.pin,
            "idle_s": self.lifecycle.idle_s, "device": self.engine.device,
            "pending_requests": self._pending, "running_batches": self._running,
            "last_used": self.last_used, "load_time_s": self.load_time_s,
            "last_error": self.last_error, "load_attempts": self._attempts,
            "events": dict(self.events),
            "rss_bytes": rss_bytes(), "device_memory_bytes": cuda_memory_bytes(),
        }

    # -- transitions (called with the lock held) -------------------------------------------
    async def _make_ready(self) -> None:
        if self.state == LOADED:
            return
        if self.state == OFFLOADED:
            self.state = RESTORING
            started = time.monotonic()
            await asyncio.to_thread(self.engine.to_device, self.engine.device)
            self._done(LOADED, "restore", started)
            return
        started = self._begin_load()
        try:
            await asyncio.to_thread(self.engine.load)
        except Exception as exc:
            raise self._load_failed(exc) from None
        self._done(LOADED, "load", started)

    def _begin_load(self) -> float:
        self.state, self._attempts = LOADING, self._attempts + 1
        log.info("model %s: loading %s on %s", self.name, self.engine.model_id, self.engine.device)
        return time.monotonic()

    def _load_failed(self, exc: Exception) -> ModelLoadError:
        self.state = FAILED
        cause = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
        self.last_error = f"model {self.name!r} could not be loaded: {cause}"
        log.error("%s", self.last_error)
        self.engine.unload()  # drop any half-built weights
        return ModelLoadError(self.last_error)

    async def _unload(self) -> None:
        self.state = UNLOADING
        started = time.monotonic()
        await asyncio.to_thread(self.engine.unload)
        self._done(UNLOADED, "unload", started)

    async def _offload(self) -> None:
        self.state = OFFLOADING
        started = time.monotonic()
        await asyncio.to_thread(self.engine.to_device, "cpu")
        self._done(OFFLOADED, "offload", started)

    def _done(self, state: str, event: str, started: float) -> None:
        seconds = time.monotonic() - started
        self.state = state
        self.events[event] += 1
        if event in ("load", "restore"):
            self.load_time_s = seconds
        log.info("model %s: %s took %.2f s", self.name, event, seconds)
        self.on_event(event, seconds)

    # -- idle policy -----------------------------------------------------------------------
    def _maybe_start_idle_timer(self) -> None:
        lc = self.lifecycle
        if lc.pin or lc.mode in ("resident", "scale_to_zero"):
            return  # scale_to_zero: Ray's autoscaler stops the whole replica instead
        if lc.mode != "on_demand" and lc.idle_s == -1:
            return
        if self._pending == 0 and self._running == 0 and self.state == LOADED:
            self._cancel_idle_timer()
            # on_demand: dropped as soon as no request is waiting
            delay = 0.0 if lc.mode == "on_demand" else lc.idle_s
            self._idle_task = asyncio.get_running_loop().create_task(self._release_if_idle(delay))

    def _cancel_idle_timer(self) -> None:
        if self._idle_task is not None and not self._idle_task.done():
            self._idle_task.cancel()
        self._idle_task = None

    async def _release_if_idle(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self._lock:
            # Re-check under the lock: a request may have arrived while we slept or waited.
            if self._pending or self._running or self.state != LOADED:
                return
            if self.lifecycle.mode == "offload" and self.engine.device != "cpu":
                await self._offload()
            elif self.lifecycle.mode == "offload":
                # On CPU the weights already live in host RAM: offloading only changes the
                # state we report, so that status tells the truth about where they are.
                self.state = OFFLOADED
            else:
                await self._unload()
