"""Runners: where the stage compute runs — in this process, or on Ray actor pools.

This is the only module that knows about Ray. The engine hands a runner batches of tasks and
gets back outcomes; the same `midid.tasks` functions run either way, so a one-shot import of
a handful of files needs no Ray start-up (~2 s) while the daemon keeps one Ray for its life.

On a cluster each pool is spread over the live nodes in proportion to their CPUs (soft node
affinity: an actor whose node is lost is restarted on another, and the batches it had are
redone there like any crashed batch's), and `[pipeline] analyze_actors = 0` means one actor
per CPU of the whole cluster.

A Ray pool keeps at most `actors × max_in_flight` batches of each stage outstanding
(backpressure: memory stays flat however large the import). By default split shares the
analyze actors (`[pipeline] split_actors = 0`): splitting is ~2 % of the compute, and a
process of its own cost ~130 MiB of PSS and its start-up.

Every batch in flight on a pool when one of its actors dies (a native crash or the OOM killer
on a hostile file, or a hung batch we kill) becomes a suspect; suspects run one at a time with
the pool otherwise idle (no batch of any stage sharing it), so a suspect that kills its worker
alone is guilty and is bisected until the one poisoned task is isolated and reported as
failed. Innocent batches just finish on their second run. Ray restarts the actor.

"Alone" needs a worker that was alive when the suspect reached it: a suspect goes out only
once a ping (`pid`) to its actor has come back. Sending the two together is not enough: a
worker that dies a few milliseconds after answering the ping loses the answer with its socket
(seen here as "Socket closed"), and the guilty file looked innocent and was sent again, every
time, until the pool was taken for lost. When the ping fails, the worker is gone (its node or
Ray going down, an actor that cannot start, one Ray is still restarting): the suspect is
pinged again after a back-off, and a pool whose workers stop answering `MAX_UNANSWERED` times
in a row is treated as lost - unless Ray says the actor is being restarted
(`ActorUnavailableError`), which on two loaded cores can outlast those back-offs: then only
once it has not answered for `RESTART_GRACE_S`.

A head that goes away looks, from here, exactly like that crash: every batch fails with the
same `ActorUnavailableError` a hostile file causes. So before blaming the files, the pool asks
whether the Ray its actors live on still answers (a TCP connect to its GCS, or to the Ray Client
server); when it does not, the pool is *lost*: its failed batches are dropped, not blamed, and
`ClusterLost` tells the driver to start new workers, to which the same files go again.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import tasks as task_fns

log = logging.getLogger(__name__)

CRASH_ERROR = "the worker analysing this file crashed or hung (the file is probably hostile or broken)"

# Ray ends a driver whose GCS has not answered for `gcs_rpc_server_reconnect_timeout_s` (60 s by
# default) with a fatal log line, which would take the daemon down with its cluster. The daemon
# notices a lost GCS itself within `RayRunner.probe_every_s` and shuts its Ray down first, so
# Ray's timer is only a last resort: it must outlast a main loop stalled for as long as systemd
# tolerates (WatchdogSec=30), and the decision to fall back stays the daemon's.
DRIVER_GCS_TIMEOUT_S = 120
# A Ray Client (`ray://`) blocks any call while its server is unreachable, for its reconnect
# grace period (30 s by default), and the probe cannot run meanwhile: 10 s keeps the daemon's
# main loop inside the watchdog's 30 s and still rides out a short network drop.
CLIENT_GRACE_S = 10

# Actor counts come from the config, not from Ray's rationing of CPUs, so each actor asks for
# a token share. Not 0: Ray ignores a soft node affinity for actors that need no resources
# (measured on a two-node cluster: 1-5 of 6 actors elsewhere in each of 3 tries), and SPREAD
# alone put a whole pool on one node in 4 of 12 tries.
ACTOR_CPUS = 0.01
MAX_UNANSWERED = 5  # pings to suspects' actors failed in a row: the pool is lost
# ... when Ray is restarting the worker, and this long since the first: the 60 s Ray itself gives
# a starting worker to register (worker_register_timeout_seconds), and as long again for its
# start-up. A restart on two cores under three busy loops took up to ~50 s here.
RESTART_GRACE_S = 120.0
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)  # before a suspect's actor is pinged again after a failed ping
PING_TIMEOUT_S = 30.0  # a ping to an idle actor unanswered this long: its worker is hung


class ClusterLost(ConnectionError):
    """The Ray this pool's actors live on stopped answering: they, and the batches on them, are gone."""


@dataclass
class Batch:
    kind: str
    tasks: Sequence[Any]
    attempt: int = 0
    ref: Any = None
    actor: Any = None
    submitted: float = 0.0
    ping: Any = None  # a suspect's: the `pid` call to its actor, which must answer before it goes
    pinged: float = 0.0  # when that ping went out (monotonic)
    not_before: float = 0.0  # a suspect waits until then (monotonic) to go out again


@dataclass
class Done:
    kind: str
    tasks: Sequence[Any]
    outcomes: list[Any] | None  # None: the batch's worker crashed on its only task
    error: str | None = None


class LocalRunner:
    """Runs batches synchronously in this process: tests, debugging and small one-shot jobs."""

    name = "in-process"
    placement: dict[str, list[str]] = {}

    def __init__(self) -> None:
        self._done: deque[Done] = deque()

    def capacity(self, kind: str) -> int:
        return 1 - len(self._done)

    def submit(self, kind: str, tasks: Sequence[Any]) -> None:
        self._done.append(Done(kind, tasks, task_fns.run_batch(kind, tasks)))

    def pending(self) -> int:
        return len(self._done)

    def wait(self, timeout_s: float) -> list[Done]:
        done = list(self._done)
        self._done.clear()
        return done

    def check(self) -> None:
        """In-process work has no cluster to lose."""

    def shutdown(self) -> None:
        self._done.clear()


class NoWorkers:
    """Stands in for the workers while there are none - Ray starting, or new workers waiting
    to be started after the old ones were lost: it takes no work, so the import goes on and
    the queue keeps the rest."""

    name = "no workers"
    placement: dict[str, list[str]] = {}

    def capacity(self, kind: str) -> int:
        return 0

    def submit(self, kind: str, tasks: Sequence[Any]) -> None:
        raise RuntimeError("no workers to take the batch")

    def pending(self) -> int:
        return 0

    def wait(self, timeout_s: float) -> list[Done]:
        return []

    def check(self) -> None:
        """No workers, nothing to lose."""

    def shutdown(self) -> None:
        """Nothing started."""


def start_ray(address: str, num_cpus: int, object_store_mb: int) -> str:
    """Join a cluster or start a quiet local Ray sized for a small machine.

    Returns the address to watch for the Ray's death (`RayRunner(watch=...)`): the GCS, or for
    a `ray://` address the Ray Client server, which is all a client can reach.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Read by Ray's C++ core when the driver connects; an operator's own value wins.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(DRIVER_GCS_TIMEOUT_S))
    os.environ.setdefault("RAY_CLIENT_RECONNECT_GRACE_PERIOD", str(CLIENT_GRACE_S))
    # Never let a stray Ray call (after a lost cluster's shutdown) start a default Ray of its
    # own: Ray reads this when it is imported.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    if address and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                    or os.path.exists(os.path.expanduser("~/.ray/auth_token"))):
        # `ray start` enables token authentication; a driver sends the token only in token
        # mode, which Ray reads when it is imported.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    if address and address != "auto":
        probe(address, handshake=True)
    import ray

    if not ray.is_initialized():
        common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                                  "configure_logging": False}
        if address:
            log.info("joining Ray cluster at %s", address)
            _join(ray, address, common)
        else:
            # Ray turns token authentication on for every new local Ray (its token in
            # ~/.ray/auth_token, made once) and warns so at each start, with a hint to opt out:
            # right for midid's private Ray, and only a puzzle to a user who configured no cluster.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            # address="local": always our own Ray, never a cluster that happens to run on this machine.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=object_store_mb * 1024 * 1024, **common)
            log.info("started a local Ray with %s CPUs", num_cpus or os.cpu_count())
    if address.startswith("ray://"):
        return address
    return ray.get_runtime_context().gcs_address


# Ray's Client server starts one server process per client; now and then (about 1 join in 5
# here, right after the head starts) that process dies as it starts, and ray.init fails 30-40 s
# later with the first message, or at once with the server's own traceback through
# `start_specific_server` when it finds the process already a zombie (psutil.ZombieProcess);
# when it starts but does not answer within Ray's 30 s (RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S,
# a loaded head), with the third. The client server frees the failed slot each way, so a
# second join usually works.
CLIENT_SERVER_FAULTS = ("Starting Ray client server failed", "in start_specific_server",
                        "Proxy failed to Connect to backend")
JOIN_ATTEMPTS = 2


def client_server_fault(text: str) -> str | None:
    """Which of Ray Client's per-client server faults `text` (an error, a log) reports, if any."""
    return next((fault for fault in CLIENT_SERVER_FAULTS if fault in text), None)


def _join(ray: Any, address: str, common: dict[str, Any]) -> None:
    for attempt in range(1, JOIN_ATTEMPTS + 1):
        try:
            ray.init(address=address, **common)
            return
        except Exception as exc:
            if client_server_fault(str(exc)) is None or attempt == JOIN_ATTEMPTS:
                raise
            log.warning("the Ray Client server at %s failed to start a server for midid (a Ray fault: "
                        "its log is ray_client_server_*.err on the head); joining again", address)
            ray.shutdown()


def connection_gist(exc: BaseException) -> str:
    """One line for `midictl status` from a Ray Client error, whose text often ends in a
    five-line gRPC repr: gRPC's own details when it carries them ("Failed to serialize
    response!"), else the error's first line."""
    text = str(exc)
    details = re.search(r'details = "([^"]*)"', text)
    if details:
        return f"{type(exc).__name__}: {details.group(1)}"
    return (text.splitlines() or [type(exc).__name__])[0]


def probe(address: str, timeout_s: float = 5.0, *, handshake: bool = False) -> None:
    """Fail fast when nothing listens at a cluster address (ray.init would retry for minutes).

    With `handshake` (before a join), also when what listens does not open a gRPC connection
    within `timeout_s`: a stopped or wedged head, a paused VM, or another service's port (the
    dashboard's 8265) accepts the TCP connection, and a join there blocks - by a GCS address
    for over 5 minutes (measured), past systemd's start timeout - instead of failing. The watch
    of a joined cluster probes without it: the kernel answers a TCP connect however busy the
    head is, so a loaded head is never taken for a lost one. Under `RAY_USE_TLS` the handshake
    is a TLS one with the certificates Ray itself reads, so a head that would refuse them is
    told apart too.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"no Ray cluster answers at {address}: {exc}") from None
    if handshake:
        _grpc_handshake(address, f"{host}:{port}", timeout_s)


# Ray's documented TLS switch and the certificate files it reads (docs.ray.io, "TLS Authentication").
TLS_FILES = {"certificate_chain": "RAY_TLS_SERVER_CERT", "private_key": "RAY_TLS_SERVER_KEY",
             "root_certificates": "RAY_TLS_CA_CERT"}


def _tls_credentials() -> Any:
    """The channel credentials Ray's own clients use when `RAY_USE_TLS` is on (None when off):
    a plain channel to a TLS cluster never opens, so without them every join would be refused."""
    import grpc

    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return None
    files = {}
    for arg, variable in TLS_FILES.items():
        path = os.environ.get(variable)
        if not path:
            continue
        try:
            files[arg] = Path(path).read_bytes()
        except OSError as exc:
            raise ConnectionError(f"RAY_USE_TLS is set but {variable} cannot be read ({exc}): "
                                  "give it a readable certificate file, as Ray needs it too") from None
    return grpc.ssl_channel_credentials(**files)


def _grpc_handshake(address: str, target: str, timeout_s: float) -> None:
    import grpc  # Ray's own transport (GCS and Ray Client server alike)

    credentials = _tls_credentials()
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            tls = ("; RAY_USE_TLS is set, so it must also accept the certificates in "
                   + ", ".join(TLS_FILES.values())) if credentials else ""
            raise ConnectionError(
                f"something listens at {address} but does not answer as a Ray cluster within "
                f"{timeout_s:.0f} s (a stopped or overloaded head, or another service's port: "
                f"check `[ray] address`{tls})") from None


class RayRunner:
    """Actor pools per stage, with bounded in-flight batches, crash isolation and hang kills.

    Once the Ray under the pools is lost, `capacity`, `wait` and `check` raise `ClusterLost`;
    the batches still in flight are then the caller's to hand out again.
    """

    name = "ray"
    probe_every_s = 2.0
    probe_timeout_s = 2.0
    restart_grace_s = RESTART_GRACE_S
    ping_timeout_s = PING_TIMEOUT_S

    def __init__(self, sizes: dict[str, int], *, max_in_flight: int = 2, batch_timeout_s: float = 120.0,
                 worker: type | None = None, watch: str | None = None) -> None:
        import ray

        self._ray = ray
        self.watch = watch or ray.get_runtime_context().gcs_address
        self.lost: str | None = None
        self._ray_gone = False  # lost with the Ray itself (not only its workers)
        self._probed = time.monotonic()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        worker_cls = ray.remote(num_cpus=ACTOR_CPUS, max_restarts=-1, max_task_retries=0)(worker or _Worker)
        # The node of each stage's own actors (`midictl status` shows them).
        self.placement = {kind: nodes for kind, nodes in placement(cluster_nodes(), sizes).items() if nodes}
        # Soft affinity: an actor whose node is lost is restarted on another one. A stage sized
        # 0 shares the actors of the first stage that has its own.
        own = {kind: [worker_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True))
                      .remote() for node in nodes]
               for kind, nodes in self.placement.items()}
        if not own:
            raise ValueError("at least one stage needs its own actors")
        self.pools: dict[str, list[Any]] = {kind: own.get(kind) or next(iter(own.values()))
                                            for kind in sizes}
        self.max_in_flight = max_in_flight
        self.batch_timeout_s = batch_timeout_s
        self.in_flight: dict[Any, Batch] = {}
        self.load: dict[int, int] = {}
        self._suspects: list[Batch] = []
        self._unanswered = 0  # suspects in a row that found their worker already gone
        self._unanswered_since = 0.0  # when the first of them did
        # What a call to a dead or unreachable actor raises: a failed batch, or a failed ping.
        self._actor_failures = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                                ray.exceptions.TaskCancelledError, ray.exceptions.ObjectLostError)

    def _shares_pool(self, batch: Batch, kind: str) -> bool:
        return self.pools[batch.kind] is self.pools[kind]

    def capacity(self, kind: str) -> int:
        self.check()
        if any(self._shares_pool(b, kind) for b in self._suspects) or any(
                self._shares_pool(b, kind) and b.attempt for b in self.in_flight.values()):
            return 0
        busy = sum(1 for b in self.in_flight.values() if b.kind == kind)
        return len(self.pools[kind]) * self.max_in_flight - busy

    def submit(self, kind: str, tasks: Sequence[Any]) -> None:
        self._send(Batch(kind, tasks))

    def _least_loaded(self, kind: str) -> Any:
        return min(self.pools[kind], key=lambda a: self.load.get(id(a), 0))

    def _send(self, batch: Batch, actor: Any = None) -> None:
        actor = actor or self._least_loaded(batch.kind)
        self.load[id(actor)] = self.load.get(id(actor), 0) + 1
        batch.actor, batch.submitted = actor, time.monotonic()
        with self._client_calls():
            batch.ref = actor.run.remote(batch.kind, list(batch.tasks))
            self.in_flight[batch.ref] = batch  # a Ray Client ref's hash waits for its id

    def pending(self) -> int:
        return len(self.in_flight) + len(self._suspects)

    def wait(self, timeout_s: float) -> list[Done]:
        """Collect finished batches; crashed ones come back as suspects or isolated failures, or,
        when their Ray is gone, are dropped for the caller to hand out again."""
        ray = self._ray
        self.check()
        self._send_suspects()
        pings = [s.ping for s in self._suspects if s.ping is not None]
        if not self.in_flight and not pings:
            if self._suspects:  # backing off: wait here rather than have the caller spin
                soonest = min(s.not_before for s in self._suspects) - time.monotonic()
                time.sleep(min(max(soonest, 0.0), timeout_s))
            return []
        with self._client_calls():
            # A ping coming back ends the wait too: its suspect goes out on the next call.
            ready, _ = ray.wait([*self.in_flight, *pings], num_returns=1, timeout=timeout_s)
            ready = [r for r in ready if r in self.in_flight]
            if ready:
                rest = [r for r in self.in_flight if r not in ready]
                if rest:
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
        out: list[Done] = []
        failed: list[tuple[Batch, BaseException]] = []
        now = time.monotonic()
        for ref in ready:
            batch = self.in_flight.pop(ref)
            self.load[id(batch.actor)] -= 1
            # The actor's next batch starts now: its hang clock must not count the wait.
            for other in self.in_flight.values():
                if other.actor is batch.actor:
                    other.submitted = max(other.submitted, now)
            try:
                out.append(Done(batch.kind, batch.tasks, ray.get(ref)))
            except self._actor_failures as exc:
                failed.append((batch, exc))
            except Exception as exc:
                if not self._client_gone(exc):
                    raise
                failed.append((batch, exc))
            else:
                self._unanswered = 0
        if failed and self.lost is None:
            self._probe_cluster()  # a dead head fails every batch just as a hostile file does
        if self.lost is not None:
            log.warning("%d batch(es) failed because their Ray is gone (%s); they will be redone",
                        len(failed), type(failed[0][1]).__name__)
            return out
        for batch, exc in failed:
            out += self._crashed(batch, exc)
        self._kill_hung()
        return out

    def check(self) -> None:
        """Raise `ClusterLost` once the Ray under these pools stops answering.

        Probes at most every `probe_every_s`, so the daemon calls it every time round its loop,
        busy or idle: Ray itself tells a driver nothing about a dead GCS until its reconnect
        timeout ends the whole process.
        """
        if self.lost is None and time.monotonic() - self._probed >= self.probe_every_s:
            self._probe_cluster()
        if self.lost is not None:
            raise ClusterLost(self.lost)

    def _probe_cluster(self) -> None:
        self._probed = time.monotonic()
        try:
            probe(self.watch, self.probe_timeout_s)
        except ConnectionError as exc:
            self.lost, self._ray_gone = str(exc), True

    @contextmanager
    def _client_calls(self) -> Iterator[None]:
        """Ray calls after which a Ray Client that lost its server (see `_client_gone`) means
        `ClusterLost`; any other error goes on as it is."""
        try:
            yield
        except Exception as exc:
            if not self._client_gone(exc):
                raise
            raise ClusterLost(self.lost) from None

    def _client_gone(self, exc: Exception) -> bool:
        """Whether a failed Ray call means a Ray Client (`ray://`) lost its server, and if so
        mark the pools lost. Such a client raises ConnectionError once its server has been
        gone past the reconnect grace period, then disconnects itself, after which every call
        raises a plain Exception; either way it is unusable, whatever a probe says. A call
        under way when the server for this client died (the head itself still up) fails with
        gRPC's own error instead ("Failed to serialize response!"): the Ray Client turns every
        error of the work into a Ray exception, so a raw gRPC one is the connection's.

        A driver on a node of the cluster talks to its own raylet instead; when that raylet
        dies, Ray's calls fail with a plain ``OSError`` ("Broken pipe", its IOError status):
        the same loss, for the same remedy."""
        lost_link = isinstance(exc, OSError) and not isinstance(exc, self._ray.exceptions.RayError)  # not a task's own
        if not lost_link and self._ray.is_initialized() and not self._grpc_failure(exc):
            return False
        what = "the Ray Client connection" if self.watch.startswith("ray://") else "the connection to Ray"
        log.debug("%s broke: %s", what, exc)
        self.lost, self._ray_gone = f"{what} broke ({connection_gist(exc)})", True
        return True

    def _grpc_failure(self, exc: Exception) -> bool:
        if not self.watch.startswith("ray://"):
            return False
        import grpc  # Ray Client's transport, loaded by then

        return isinstance(exc, grpc.RpcError)

    def _send_suspects(self) -> None:
        """A suspect runs alone in its pool (whatever stages share it), so a crash can only be
        its own doing; it goes out once its actor has answered a ping."""
        for suspect in list(self._suspects):
            if suspect.ping is not None:
                self._ping_back(suspect)
        now = time.monotonic()
        for suspect in list(self._suspects):
            if suspect.ping is None and suspect.not_before <= now and not any(
                    self._shares_pool(b, suspect.kind)
                    for b in [*self.in_flight.values(), *(s for s in self._suspects if s.ping is not None)]):
                suspect.actor, suspect.pinged = self._least_loaded(suspect.kind), now
                with self._client_calls():
                    suspect.ping = suspect.actor.pid.remote()

    def _ping_back(self, suspect: Batch) -> None:
        """Send a suspect whose ping has answered; back off one whose ping failed."""
        ray = self._ray
        with self._client_calls():
            ready, _ = ray.wait([suspect.ping], timeout=0)
        if not ready:
            if time.monotonic() - suspect.pinged >= self.ping_timeout_s:
                # An idle worker that cannot answer is wedged (stopped, deadlocked): restart it,
                # as a hung batch's, or every later ping would queue behind this one.
                log.warning("the worker for a suspect batch (%s stage) did not answer a ping in %.0f s; "
                            "restarting it", suspect.kind, self.ping_timeout_s)
                with self._client_calls():
                    ray.kill(suspect.actor, no_restart=False)
                self._unanswered_ping(suspect, TimeoutError(f"no answer in {self.ping_timeout_s:.0f} s"))
            return
        try:
            with self._client_calls():
                ray.get(suspect.ping)
        except self._actor_failures as exc:
            self._unanswered_ping(suspect, exc)
            return
        self._unanswered = 0  # a worker answered: the row of workers found gone is broken
        self._suspects.remove(suspect)
        suspect.ping = None
        self._send(suspect, suspect.actor)

    def _unanswered_ping(self, suspect: Batch, exc: BaseException) -> None:
        self._unanswered += 1
        if self._unanswered == 1:
            self._unanswered_since = time.monotonic()
        log.warning("the worker for a suspect batch (%s stage) did not answer (%s; %d in a row); "
                    "it is asked again before the batch goes", suspect.kind, type(exc).__name__,
                    self._unanswered)
        restarting = isinstance(exc, self._ray.exceptions.ActorUnavailableError)
        if self._unanswered >= MAX_UNANSWERED and (
                not restarting or time.monotonic() - self._unanswered_since >= self.restart_grace_s):
            self.lost = (f"its workers stopped answering ({self._unanswered} times in a row, "
                         f"last {type(exc).__name__}{worker_error(exc)})")
        suspect.ping = None
        suspect.not_before = time.monotonic() + BACKOFF_S[min(self._unanswered, len(BACKOFF_S)) - 1]

    def _crashed(self, batch: Batch, exc: BaseException) -> list[Done]:
        """Batches in flight when a worker died are suspects; one that dies alone is guilty."""
        log.warning("a worker died with a batch of %d in flight (%s stage, %s)", len(batch.tasks), batch.kind,
                    type(exc).__name__)
        if batch.attempt == 0:
            self._suspects.append(Batch(batch.kind, batch.tasks, attempt=1))
            return []
        if len(batch.tasks) == 1:
            return [Done(batch.kind, batch.tasks, None, CRASH_ERROR)]
        half = len(batch.tasks) // 2
        self._suspects.append(Batch(batch.kind, batch.tasks[:half], attempt=batch.attempt + 1))
        self._suspects.append(Batch(batch.kind, batch.tasks[half:], attempt=batch.attempt + 1))
        return []

    def _kill_hung(self) -> None:
        now = time.monotonic()
        for batch in list(self.in_flight.values()):
            if now - batch.submitted > self.batch_timeout_s:
                log.warning("a %s batch of %d ran over %.0f s; restarting its worker", batch.kind,
                            len(batch.tasks), self.batch_timeout_s)
                self._ray.kill(batch.actor, no_restart=False)
                batch.submitted = now

    def shutdown(self) -> None:
        # The actors of a lost Ray died with it, and asking its GCS to kill them would only wait.
        if not self._ray_gone:
            actors = {id(a): a for pool in self.pools.values() for a in pool}
            for actor in actors.values():
                try:
                    self._ray.kill(actor)
                except Exception as exc:
                    if not self._client_gone(exc):
                        raise
                    break  # a Ray Client's actors end with its session on the server
        self.pools.clear()
        self.in_flight.clear()


class _Worker:
    """A Ray actor: imports the compute once, then runs batches (bytes in, records out)."""

    def __init__(self) -> None:
        task_fns.warm_up()
        self._run: Callable[[str, Sequence[Any]], list[Any]] = task_fns.run_batch

    def run(self, kind: str, tasks: Sequence[Any]) -> list[Any]:
        return self._run(kind, tasks)

    def pid(self) -> int:
        return os.getpid()


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_MISSING_CODE = ("ModuleNotFoundError", "ImportError")


def worker_error(exc: BaseException) -> str:
    """": <the error a worker died of>" when Ray's message carries it (an actor whose start
    raised: a node without midid installed, a broken edit of the analysis code), else "":
    what tells the user why a pool stopped answering."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines or not _ERROR_LINE.match(lines[-1]):
        return ""
    hint = ("; every node of the cluster needs midid and its dependencies installed, the same "
            "version as the driver's" if lines[-1].startswith(_MISSING_CODE) else "")
    return f": {lines[-1]}{hint}"


def pool_sizes(analyze_actors: int, split_actors: int, cpus: int) -> dict[str, int]:
    """Actors per stage from the config: analyze 0 = one per CPU of the Ray (all its nodes);
    split 0 = none of its own (it shares the analyze actors)."""
    return {"analyze": analyze_actors or max(cpus, 1), "split": split_actors}


def cluster_nodes() -> list[tuple[str, float]]:
    """(node id, CPUs) of the live nodes of the connected Ray, this driver's node first (it
    wins ties: among equal nodes, a pool of one stays beside the database)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    nodes = [(n["NodeID"], float(n["Resources"].get("CPU", 0.0))) for n in ray.nodes() if n["Alive"]]
    return sorted(nodes, key=lambda n: n[0] != here)


def placement(nodes: Sequence[tuple[str, float]], sizes: dict[str, int]) -> dict[str, list[str]]:
    """The node of each actor of each stage: every pool spread over the nodes in proportion
    to their CPUs (the next actor goes where the pool has fewest per CPU, ties to the node
    least loaded by all pools, then to the earlier node), so no node idles while another
    queues, and a node without CPUs (a head started with ``--num-cpus=0``) gets none."""
    nodes = [n for n in nodes if n[1] > 0]
    if not nodes:
        raise RuntimeError("the Ray cluster has no live node with CPUs to run midid's workers on "
                           "(a head started with --num-cpus=0 needs worker nodes beside it)")
    total = dict.fromkeys((node for node, _ in nodes), 0)
    placed: dict[str, list[str]] = {}
    for kind, count in sizes.items():
        mine = dict.fromkeys(total, 0)
        for _ in range(count):
            node = min(nodes, key=lambda n: ((mine[n[0]] + 1) / n[1], (total[n[0]] + 1) / n[1]))[0]
            mine[node] += 1
            total[node] += 1
        placed[kind] = [node for node, _ in nodes for _ in range(mine[node])]
    return placed


def cluster_cpus() -> int:
    """CPUs of the connected Ray, all live nodes together."""
    return int(sum(cpus for _, cpus in cluster_nodes()))


