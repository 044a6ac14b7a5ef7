"""Fault-test harness: real `processor run` children, TCP proxies, dedicated Redis servers,
a ledger of what the producer added, and the one invariant every scenario ends with.

Everything here is synchronous from the test's point of view: the processes under test
are separate, the proxies run their own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from processor.core.settings import Settings

T = TypeVar("T")
Db = psycopg.Connection[tuple[object, ...]]
Key = tuple[str, int]  # (device_id, ts_ms)
Item = tuple[dict[bytes, bytes], Key | None, str | None]  # fields, key if valid, reason if not


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"PROCESSOR_{name.upper()}"] = str(value)
    env.update({f"PROCESSOR_{k.upper()}": v for k, v in overrides.items()})
    return env


def wait_for(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll a zero-argument callable until it returns true or the timeout passes."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_stable(read: Callable[[], object], for_s: float, timeout: float) -> bool:
    """Poll until `read()` has returned the same value for `for_s` seconds (False if it is
    still changing when the timeout passes)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= for_s:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- metrics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One /metrics page, parsed with prometheus_client's text parser."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls(
            [
                (s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        return sum(
            v
            for n, lab, v in self.samples
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )


def total(scrapes: Iterable[Scrape], name: str, **labels: str) -> float:
    return sum(s.value(name, **labels) for s in scrapes)


# -- processes ----------------------------------------------------------------------


class ProcessorProcess:
    """One `python -m processor run` (or another `command`) child with its own log file."""

    def __init__(
        self, settings: Settings, *args: str, command: str = "run", **overrides: str
    ) -> None:
        self.env = settings_env(settings, **overrides)
        self.command = command
        self.args = args
        self.name = self.env.get("PROCESSOR_CONSUMER", "?")
        self.log = Path(tempfile.mkstemp(prefix="processor-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self.last_scrape: Scrape | None = None

    def start(self) -> ProcessorProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor", self.command, *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code (SIGKILL and -9 if it does not stop in time)."""
        if not self.alive():
            return self.wait(1)
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 120) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def events(self) -> list[dict[str, Any]]:
        """The child's JSON log lines (non-JSON lines skipped)."""
        out = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out

    def count_events(self, name: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == name)

    def wait_event(self, name: str, timeout: float = 60) -> bool:
        """Until the child logs `name` (False if it exits first or the timeout passes); the
        default allows for a loaded machine, where starting a child takes seconds."""
        return wait_for(
            lambda: self.count_events(name) > 0 or not self.alive(), timeout, 0.05
        ) and (self.count_events(name) > 0)

    def log_lines(self) -> int:
        return len(self.output().splitlines())

    @property
    def http_port(self) -> int:
        """The metrics port the child bound (it runs with PROCESSOR_HTTP_PORT=0)."""
        if self._port is None:
            assert self.wait_event("http_listening"), self.tail()
            found = next(e for e in self.events() if e.get("event") == "http_listening")
            self._port = int(found["port"])
        return self._port

    def metrics(self, timeout: float = 30) -> Scrape:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
        self.last_scrape = Scrape.parse(text)
        return self.last_scrape

    def rss_kib(self) -> int:
        """VmRSS of the child from /proc (0 once it is gone)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        """User + system CPU time of the child so far, from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.alive():
            self.kill9()
        elif self.proc is not None:
            self.proc.wait(10)
        self.log.unlink(missing_ok=True)


class Spawner:
    """Starts processor children (metrics on a port of their own) and remembers them."""

    def __init__(self) -> None:
        self.procs: list[ProcessorProcess] = []

    def __call__(
        self,
        settings: Settings,
        consumer: str,
        *args: str,
        http: bool = True,
        command: str = "run",
        **env: str,
    ) -> ProcessorProcess:
        if http:
            env = {"http_enabled": "true", "http_port": "0", **env}
        proc = ProcessorProcess(settings, *args, command=command, consumer=consumer, **env)
        self.procs.append(proc.start())
        return proc

    def close(self, dump: bool) -> None:
        for proc in self.procs:
            if dump:
                state = "alive" if proc.alive() else f"exit {proc.proc and proc.proc.poll()}"
                print(f"\n===== processor {proc.name} (pid {proc.pid}, {state}) =====")
                print(proc.tail(150))
            proc.close()


# -- TCP proxy ----------------------------------------------------------------------


@dataclass
class _Trigger:
    pattern: bytes
    forward: bool  # forward the matching chunk (the server executes it), then lose the reply
    times: int
    delay_s: float
    fired: int = 0
    stall: bool = False  # swallow the chunk and hold the link open: a peer gone without a FIN


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    dead: bool = False
    stalled: bool = False
    hold_down: bool = False


class TcpProxy:
    """A TCP proxy on 127.0.0.1 that can stall, cut and refuse, for fault tests.

    - `pause(up, down)` / `resume()`: stop forwarding in either direction (the data waits
      in the proxy and the kernel buffers; nothing is lost unless the links are then cut).
    - `cut()`: reset every open connection (RST), dropping whatever the proxy holds.
    - `refuse(True)`: new connections are reset as soon as they are accepted.
    - `cut_on(pattern, forward=...)`: when a client→server chunk contains `pattern`, either
      drop it and reset the link (the server never sees the command) or forward it, keep
      the reply from the client, and reset the link (the command ran, its reply is lost).
    - `stall_on(pattern)`: when a client→server chunk contains `pattern`, swallow it and
      keep the link open with nothing flowing and no FIN or RST, as a server whose host
      vanished looks to the client.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", name: str = "proxy"):
        self.target = (target_host, target_port)
        self.name = name
        self.port = 0
        self.connections = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flow = {"up": True, "down": True}
        self._refusing = False
        self._triggers: list[_Trigger] = []

    # control, from the test's thread

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def pause(self, up: bool = True, down: bool = True) -> None:
        self._call(self._set_flow(up=not up, down=not down))

    def resume(self) -> None:
        self._call(self._set_flow(up=True, down=True))

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        return self._call(self._cut_all())

    def refuse(self, on: bool = True) -> None:
        self._call(self._set_refusing(on))

    def cut_on(
        self, pattern: bytes, *, forward: bool, times: int = 1, delay_s: float = 0.1
    ) -> None:
        self._call(self._add_trigger(_Trigger(pattern, forward, times, delay_s)))

    def stall_on(self, pattern: bytes) -> None:
        self._call(self._add_trigger(_Trigger(pattern, False, 1, 0.0, stall=True)))

    def fired(self) -> int:
        """How many triggers fired so far."""
        return self._call(self._count_fired())

    def clear_triggers(self) -> None:
        self._call(self._add_trigger(None))

    def close(self) -> None:
        if not self._thread.is_alive():
            if not self._loop.is_closed():
                self._loop.close()
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # inside the proxy's loop

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_flow(self, *, up: bool, down: bool) -> None:
        self._flow["up"] = up
        self._flow["down"] = down

    async def _set_refusing(self, on: bool) -> None:
        self._refusing = on

    async def _add_trigger(self, trigger: _Trigger | None) -> None:
        if trigger is None:
            self._triggers.clear()
        else:
            self._triggers.append(trigger)

    async def _count_fired(self) -> int:
        return sum(t.fired for t in self._triggers)

    async def _cut_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._kill(link)
        await asyncio.sleep(0.02)
        return len(links)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        await asyncio.sleep(0.02)

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    def _kill(self, link: _Link) -> None:
        if link.dead:
            return
        link.dead = True
        self.resets += 1
        self._reset(link.client)
        self._reset(link.server)
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.resets += 1
            self._reset(writer)
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(writer)
            return
        self.connections += 1
        link = _Link(writer, s_writer)
        self._links.add(link)
        up = asyncio.create_task(self._pump(link, reader, s_writer, "up"))
        down = asyncio.create_task(self._pump(link, s_reader, writer, "down"))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not link.dead:
                link.dead = True
                self._links.discard(link)
                for w in (writer, s_writer):
                    w.close()
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            for w in (writer, s_writer):
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
            while not link.dead:
                data = await reader.read(65536)
                if not data:
                    return
                await self._until_flowing(link, direction)
                if link.dead:
                    return
                trigger = self._match(data) if direction == "up" else None
                if trigger is not None and trigger.stall:
                    link.stalled = True
                    await self._until_flowing(link, direction)  # held until the proxy closes
                    return
                if trigger is not None and not trigger.forward:
                    self._kill(link)
                    return
                if trigger is not None:
                    link.hold_down = True
                writer.write(data)
                await writer.drain()
                if trigger is not None:
                    await asyncio.sleep(trigger.delay_s)
                    self._kill(link)
                    return

    async def _until_flowing(self, link: _Link, direction: str) -> None:
        """Polls: paused, held (a reply to lose) or cut, whichever ends first."""
        while True:
            held = (
                not self._flow[direction]
                or (direction == "down" and link.hold_down)
                or link.stalled
            )
            if link.dead or not held:
                return
            await asyncio.sleep(0.01)

    def _match(self, data: bytes) -> _Trigger | None:
        for trigger in self._triggers:
            if trigger.fired < trigger.times and trigger.pattern in data:
                trigger.fired += 1
                return trigger
        return None


# -- a Redis server of its own -------------------------------------------------------


class RedisServer:
    """A dedicated `redis-server` on a free port with its own directory (for restarts)."""

    def __init__(self, *, appendonly: bool) -> None:
        self.appendonly = appendonly
        self.dir = Path(tempfile.mkdtemp(prefix="fault-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(self.ping, 60), "redis-server did not start"
        return self

    def ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def close(self) -> None:
        self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- what the producer added ----------------------------------------------------------


@dataclass
class Ledger:
    """Every entry the test added: valid ones by key, invalid ones with their reason."""

    ids_by_key: dict[Key, set[str]] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)  # stream id -> expected reason
    entries: int = 0

    def record(self, stream_id: str, key: Key | None, reason: str | None) -> None:
        self.entries += 1
        if reason is not None:
            self.dead[stream_id] = reason
        else:
            assert key is not None
            self.ids_by_key.setdefault(key, set()).add(stream_id)

    @property
    def valid(self) -> int:
        return self.entries - len(self.dead)


def add_items(
    client: redis.Redis, stream: str, items: Iterable[Item], ledger: Ledger, chunk: int = 500
) -> int:
    """XADD the items in pipelined chunks, recording each returned ID in the ledger."""
    added = 0
    batch: list[Item] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for fields, _, _ in batch:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        ids: list[Any] = pipe.execute()
        for entry_id, (_, key, reason) in zip(ids, batch, strict=True):
            ledger.record(_text(entry_id), key, reason)

    for item in items:
        batch.append(item)
        if len(batch) >= chunk:
            flush()
            added += len(batch)
            batch = []
    if batch:
        flush()
        added += len(batch)
    return added


class SteadyProducer:
    """A thread that adds items at a steady rate until they run out or `stop()`."""

    def __init__(
        self,
        redis_url: str,
        stream: str,
        items: Iterator[Item],
        ledger: Ledger,
        rate_per_s: float,
        chunk: int = 20,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.items = items
        self.ledger = ledger
        self.rate = rate_per_s
        self.chunk = chunk
        self.added = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            started = time.monotonic()
            while not self._stop.is_set():
                batch = [item for _, item in zip(range(self.chunk), self.items, strict=False)]
                if not batch:
                    return
                self.added += add_items(client, self.stream, batch, self.ledger)
                ahead = started + self.added / self.rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            client.close()


def valid_items(devices: int, seconds: int, prefix: str = "K", start_ms: int = 0) -> list[Item]:
    """devices x seconds distinct positions, interleaved by time (tests.entries format)."""
    from tests.entries import BASE_MS, entry

    out: list[Item] = []
    for s in range(seconds):
        for d in range(devices):
            device, ts = f"{prefix}{d:04d}", BASE_MS + start_ms + s * 1000
            out.append((entry(device, ts), (device, ts), None))
    return out


def with_resends(items: list[Item], rate: float, seed: int) -> list[Item]:
    """Items plus `rate` of them sent again, shuffled (a re-sending tracker)."""
    rng = random.Random(seed)
    out = items + rng.sample(items, int(len(items) * rate))
    rng.shuffle(out)
    return out


# -- the invariant -------------------------------------------------------------------


@dataclass
class Outcome:
    """What the end state shows, and every way it breaks the invariant."""

    entries: int = 0
    valid_entries: int = 0
    keys: int = 0
    rows: int = 0
    duplicate_entries: int = 0  # valid entries whose key was stored from another entry
    dead_letters: int = 0
    duplicate_dead_letters: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "rows": self.rows,
            "duplicates": self.duplicate_entries,
            "dead_letters": self.dead_letters,
            "duplicate_dead_letters": self.duplicate_dead_letters,
            "reasons": self.reasons,
        }

    def describe(self) -> str:
        return f"{self.summary()}\n" + "\n".join(self.problems[:40])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def group_state(client: redis.Redis, settings: Settings) -> tuple[int, int | None]:
    """(pending, lag) of the processor's group; lag None when Redis cannot tell."""
    try:
        groups: Any = client.xinfo_groups(settings.stream)
    except redis.ResponseError:
        return 0, None
    for group in groups:
        if _text(group.get("name")) == settings.group:
            lag = group.get("lag")
            return int(group.get("pending") or 0), None if lag is None else int(lag)
    return 0, None


def pending_ids(client: redis.Redis, settings: Settings) -> set[str]:
    rows: Any = client.xpending_range(settings.stream, settings.group, "-", "+", 1_000_000)
    return {_text(r["message_id"]) for r in rows}


def row_count(db: Db) -> int:
    found = db.execute("SELECT count(*) FROM telemetry.positions").fetchone()
    assert found is not None
    value = found[0]
    assert isinstance(value, int)
    return value


def dead_letters(client: redis.Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    found: Any = client.xrange(settings.dlq_stream)
    return [dict(fields) for _, fields in found]


def settled(db: Db, client: redis.Redis, settings: Settings, ledger: Ledger) -> bool:
    """Everything delivered, nothing pending, every key stored, every dead letter written."""
    pending, lag = group_state(client, settings)
    if pending or lag:
        return False
    if row_count(db) < len(ledger.ids_by_key):
        return False
    return bool(client.xlen(settings.dlq_stream) >= len(ledger.dead))


def wait_settled(
    db: Db, client: redis.Redis, settings: Settings, ledger: Ledger, timeout: float = 60
) -> float:
    """Seconds it took to settle (the invariant check that follows says what is wrong)."""
    started = time.monotonic()
    wait_for(lambda: settled(db, client, settings, ledger), timeout, 0.1)
    return time.monotonic() - started


def check_invariant(
    db: Db,
    client: redis.Redis,
    settings: Settings,
    ledger: Ledger,
    *,
    scrapes: Iterable[Scrape] | None = None,
    allow_duplicate_dead_letters: bool = False,
) -> Outcome:
    """The end state every fault scenario must reach.

    Every entry the producer added is exactly one row (no duplicate keys, the row's
    stream_id one of the entries carrying that key), a duplicate of a stored key, or a
    dead letter with the expected reason; nothing is pending or undelivered in the
    group; no dead letter the ledger does not expect. With `scrapes` (the final /metrics
    of every process that ran), the processors' own accounting is checked too.
    """
    out = Outcome(entries=ledger.entries, valid_entries=ledger.valid, keys=len(ledger.ids_by_key))
    problems = out.problems

    stored: dict[Key, list[str]] = {}
    for device, ts_ms, stream_id in db.execute(
        "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, stream_id"
        " FROM telemetry.positions"
    ):
        assert isinstance(device, str)
        assert isinstance(ts_ms, int)
        stored.setdefault((device, ts_ms), []).append(_text(stream_id))
    out.rows = sum(len(v) for v in stored.values())
    out.duplicate_entries = ledger.valid - out.keys
    for key, ids in stored.items():
        if len(ids) > 1:
            problems.append(f"duplicate rows for {key}: {ids}")
        expected = ledger.ids_by_key.get(key)
        if expected is None:
            problems.append(f"row {key} from {ids} was never produced as a valid entry")
        elif not set(ids) <= expected:
            problems.append(f"row {key} has stream_id {ids}, not one of {sorted(expected)}")
    missing = [k for k in ledger.ids_by_key if k not in stored]
    if missing:
        problems.append(f"{len(missing)} keys lost (no row), e.g. {missing[:5]}")

    pending, lag = group_state(client, settings)
    if pending:
        problems.append(f"{pending} entries still pending in the group")
    if lag:
        problems.append(f"group lag {lag}: entries never delivered")

    letters = dead_letters(client, settings)
    out.dead_letters = len(letters)
    by_source = Counter(_text(f.get(b"source_id", b"?")) for f in letters)
    reasons: Counter[str] = Counter()
    for fields in letters:
        source = _text(fields.get(b"source_id", b"?"))
        reason = _text(fields.get(b"reason", b"?"))
        reasons[reason] += 1
        want = ledger.dead.get(source)
        if want is None:
            problems.append(f"unexpected dead letter {source}: {reason} {fields.get(b'detail')!r}")
        elif want != reason:
            problems.append(f"dead letter {source} has reason {reason}, expected {want}")
    out.reasons = dict(reasons)
    out.duplicate_dead_letters = sum(n - 1 for n in by_source.values() if n > 1)
    if out.duplicate_dead_letters and not allow_duplicate_dead_letters:
        problems.append(f"{out.duplicate_dead_letters} entries dead-lettered more than once")
    lost_letters = [i for i in ledger.dead if i not in by_source]
    if lost_letters:
        problems.append(f"{len(lost_letters)} invalid entries without a dead letter")

    if scrapes is not None:
        scrapes = list(scrapes)
        inserted = total(scrapes, "processor_positions_inserted_total")
        dups = total(scrapes, "processor_duplicates_total")
        dead = total(scrapes, "processor_dead_letters_total")
        if inserted > out.rows:
            problems.append(f"metrics say {inserted} inserted but only {out.rows} rows exist")
        if inserted + dups < ledger.valid - len(missing):
            problems.append(
                f"accounting: inserted {inserted} + duplicates {dups} < valid entries"
                f" {ledger.valid}"
            )
        if dead < len(ledger.dead):
            problems.append(f"metrics count {dead} dead letters, expected {len(ledger.dead)}")
    return out


def assert_invariant(
    db: Db,
    client: redis.Redis,
    settings: Settings,
    ledger: Ledger,
    *,
    timeout: float = 60,
    scrapes: Callable[[], Iterable[Scrape]] | None = None,
    allow_duplicate_dead_letters: bool = False,
) -> Outcome:
    """Wait (bounded) for the end state, then check it; fails with every problem listed."""
    waited = wait_settled(db, client, settings, ledger, timeout)
    outcome = check_invariant(
        db,
        client,
        settings,
        ledger,
        scrapes=None if scrapes is None else scrapes(),
        allow_duplicate_dead_letters=allow_duplicate_dead_letters,
    )
    assert not outcome.problems, f"invariant broken after {waited:.1f}s: {outcome.describe()}"
    return outcome


# -- the database -------------------------------------------------------------------


class TableLock:
    """`LOCK TABLE telemetry.positions IN ACCESS EXCLUSIVE MODE` held from the test."""

    def __init__(self, database_url: str) -> None:
        self.conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(database_url)
        self.held = False

    def acquire(self) -> TableLock:
        self.conn.execute("LOCK TABLE telemetry.positions IN ACCESS EXCLUSIVE MODE")
        self.held = True
        return self

    def release(self) -> None:
        if self.held:
            self.conn.rollback()
            self.held = False

    def close(self) -> None:
        self.release()
        self.conn.close()


def blocked_writers(db: Db) -> int:
    """Processor backends of this database waiting for a lock (on the test's table lock)."""
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'processor' AND wait_event_type = 'Lock'"
    ).fetchone()
    assert found is not None
    value = found[0]
    assert isinstance(value, int)
    return value


def db_url_via(database_url: str, port: int) -> str:
    """The same database reached through a proxy on 127.0.0.1:port."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


def redis_port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 6379
