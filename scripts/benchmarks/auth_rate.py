"""Authenticated request rate against the unauthenticated one, on loopback (issue 14, point 1).

16 clients at once, each an httpx client with one HTTP/1.1 keep-alive connection
as a registry client would hold, send back to back for a fixed time (and at
most a fixed count): unauthenticated `GET /v2/` (the 401 challenge) and `GET /`
(a request that reaches distribution), then an authenticated `HEAD` of a
manifest, the first request a node makes when it pulls, and the same `HEAD`
on a twin of the set-up that has no authentication at all: the only ratio
that isolates what authentication costs. The same registry binary and the
cluster's config, in four set-ups:

  (a) distribution with its htpasswd at the product's bcrypt cost (10),
  (b) the same at bcrypt's lowest cost (4),
  (c) Caddy in front (TLS, per-login rights, hash cache), hashes at cost 10,
  (d) the same without the hash cache, to show what the cache does.

Every ratio is taken within one run of one set-up (the twin runs alongside).
CPU per request is the servers' utime+stime from /proc/<pid>/stat across the
window, divided by the requests answered; the client's own CPU is printed
too: on a small machine it competes with the servers, so the rates say as
much about the machine as about the servers, and the CPU per request is the
figure that carries over to a cluster, where clients run elsewhere.

    python -m scripts.benchmarks.auth_rate [--seconds 10] [--clients 16] [--json PATH]

All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from registry_provisioner.config import load_settings
from registry_provisioner.images import push_image, random_image
from registry_provisioner.logins import BCRYPT_ROUNDS
from registry_provisioner.oci_client import MANIFEST_MEDIA_TYPES, RegistryClient
from scripts.benchmarks.loopback import cluster_config
from scripts.loopback_proxy import run_proxied_registry
from scripts.loopback_registry import run_registry

CLIENTS = 16
SECONDS = 10.0
SLICES = 5
MAX_REQUESTS_PER_CLIENT = 100_000
LOWEST_BCRYPT_COST = 4  # bcrypt's minimum
TARGET_RATIO = 0.8
REPO, TAG = "bench/auth-rate", "v1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[auth-rate] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Setup:
    """One registry set-up as the clients see it."""

    url: str
    ca_file: Path
    username: str
    password: str = field(repr=False)
    pids: tuple[int, ...]  # the server processes whose CPU is counted
    admin: tuple[str, str] = field(repr=False, default=("", ""))  # pushes the manifest
    twin: Setup | None = None  # the same set-up without authentication


@dataclass(frozen=True)
class Phase:
    """One load window: what was answered as expected, in how long, for how much CPU."""

    requests: int
    errors: int
    seconds: float
    server_cpu: float
    client_cpu: float
    cpu_by_pid: dict[int, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def server_ms_per_request(self) -> float:
        return 1000 * self.server_cpu / max(1, self.requests)

    @property
    def client_ms_per_request(self) -> float:
        return 1000 * self.client_cpu / max(1, self.requests)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def servers_cpu(pids: tuple[int, ...]) -> dict[int, float]:
    return {pid: process_cpu_seconds(pid) for pid in pids}


class Load:
    """`clients` clients, each with its own connection, sending one request back to back.

    The connections open (and a hash cache fills) in an untimed first request
    each; they stay open across the slices `run` is called for.
    """

    def __init__(
        self,
        setup: Setup,
        *,
        method: str,
        path: str,
        expect: int,
        authenticated: bool,
        clients: int,
    ) -> None:
        self.setup, self.method, self.path, self.expect = setup, method, path, expect
        auth = httpx.BasicAuth(setup.username, setup.password) if authenticated else None
        self.headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        self.pool = [
            httpx.AsyncClient(
                base_url=setup.url,
                auth=auth,
                verify=ssl.create_default_context(cafile=setup.ca_file),
                http1=True,
                http2=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=60.0,
            )
            for _ in range(clients)
        ]

    async def __aenter__(self) -> Load:
        answers = await asyncio.gather(*(self._send(c) for c in self.pool))
        if any(r.status_code != self.expect for r in answers):
            codes = sorted({r.status_code for r in answers})
            raise RuntimeError(f"{self.method} {self.path}: expected {self.expect}, got {codes}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.pool))

    async def _send(self, client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(self.method, self.path, headers=self.headers)

    async def _one(self, client: httpx.AsyncClient, deadline: float) -> tuple[int, int]:
        done = errors = 0
        while done + errors < MAX_REQUESTS_PER_CLIENT and time.monotonic() < deadline:
            try:
                response = await self._send(client)
            except httpx.TransportError:
                errors += 1
                continue
            if response.status_code == self.expect:
                done += 1
            else:
                errors += 1
        return done, errors

    async def run(self, seconds: float) -> Phase:
        """Every client sends for `seconds` (or its bounded count); what that cost."""
        pids = self.setup.pids
        cpu_before, client_before = servers_cpu(pids), time.process_time()
        started = time.monotonic()
        counts = await asyncio.gather(*(self._one(c, started + seconds) for c in self.pool))
        elapsed = time.monotonic() - started
        cpu_after, client_after = servers_cpu(pids), time.process_time()
        by_pid = {pid: cpu_after[pid] - cpu_before[pid] for pid in pids}
        return Phase(
            requests=sum(done for done, _ in counts),
            errors=sum(errors for _, errors in counts),
            seconds=elapsed,
            server_cpu=sum(by_pid.values()),
            client_cpu=client_after - client_before,
            cpu_by_pid=by_pid,
        )


def total(phases: list[Phase]) -> Phase:
    """Slices of one kind of load added up."""
    by_pid: dict[int, float] = {}
    for phase in phases:
        for pid, cpu in phase.cpu_by_pid.items():
            by_pid[pid] = by_pid.get(pid, 0.0) + cpu
    return Phase(
        requests=sum(p.requests for p in phases),
        errors=sum(p.errors for p in phases),
        seconds=sum(p.seconds for p in phases),
        server_cpu=sum(p.server_cpu for p in phases),
        client_cpu=sum(p.client_cpu for p in phases),
        cpu_by_pid=by_pid,
    )


async def push_target(setup: Setup) -> None:
    """The manifest the clients HEAD, pushed with the admin login (anonymously to the twin)."""
    image = random_image([1024])
    username, password = setup.admin
    async with RegistryClient(setup.url, username, password, setup.ca_file) as client:
        await push_image(client, REPO, TAG, image)
    if setup.twin:
        async with RegistryClient(setup.twin.url, ca_file=setup.twin.ca_file) as client:
            await push_image(client, REPO, TAG, image)


@dataclass
class CaseResult:
    name: str
    unauth_v2: Phase
    unauth_root: Phase
    auth_head: Phase
    noauth_head: Phase

    @property
    def ratio(self) -> float:
        return self.auth_head.rate / self.unauth_v2.rate

    @property
    def ratio_root(self) -> float:
        return self.auth_head.rate / self.unauth_root.rate

    @property
    def ratio_same_request(self) -> float:
        return self.auth_head.rate / self.noauth_head.rate

    @property
    def auth_ms_per_request(self) -> float:
        """Server CPU that authentication adds to one HEAD."""
        return self.auth_head.server_ms_per_request - self.noauth_head.server_ms_per_request


async def interleaved(loads: list[Load], seconds: float, slices: int) -> list[Phase]:
    """Each load for `seconds` in total, in `slices` slices, the order reversed every other
    slice, so that a change in the machine's load falls on all of them alike."""
    done: list[list[Phase]] = [[] for _ in loads]
    for index in range(slices):
        order = list(enumerate(loads))
        for position, load in order if index % 2 == 0 else order[::-1]:
            done[position].append(await load.run(seconds / slices))
    return [total(phases) for phases in done]


HEAD = {"method": "HEAD", "path": f"/v2/{REPO}/manifests/{TAG}", "expect": 200}


async def cluster_and_loopback(
    cluster: Setup, loopback: Setup, clients: int, seconds: float, slices: int
) -> dict[str, Phase]:
    """The bench's figures: the cluster's authenticated HEAD and unauthenticated `GET /`
    through the LoadBalancer, and loopback's authenticated HEAD against its twin without
    authentication, all interleaved. Only the loopback pair is the same request with and
    without authentication; the cluster has no twin, so its ratio weighs two requests."""
    assert loopback.twin is not None
    await push_target(cluster)
    await push_target(loopback)
    async with (
        Load(cluster, authenticated=True, clients=clients, **HEAD) as auth_cluster,
        Load(
            cluster, method="GET", path="/", expect=200, authenticated=False, clients=clients
        ) as root_cluster,
        Load(loopback, authenticated=True, clients=clients, **HEAD) as auth_loopback,
        Load(loopback.twin, authenticated=False, clients=clients, **HEAD) as noauth_loopback,
    ):
        loads = [auth_cluster, root_cluster, auth_loopback, noauth_loopback]
        phases = await interleaved(loads, seconds, slices)
    keys = ("auth_head_cluster", "root_cluster", "auth_head_loopback", "noauth_head_loopback")
    return dict(zip(keys, phases, strict=True))


async def measure(name: str, setup: Setup, clients: int, seconds: float, slices: int) -> CaseResult:
    """The four loads, interleaved in `slices` slices each (order reversed every other
    slice), so that a change in the machine's load falls on all of them alike."""
    await push_target(setup)
    assert setup.twin is not None
    head = HEAD
    async with (
        Load(
            setup, method="GET", path="/v2/", expect=401, authenticated=False, clients=clients
        ) as unauth_v2,
        Load(
            setup, method="GET", path="/", expect=200, authenticated=False, clients=clients
        ) as unauth_root,
        Load(setup, authenticated=True, clients=clients, **head) as auth_head,
        Load(setup.twin, authenticated=False, clients=clients, **head) as noauth_head,
    ):
        phases = await interleaved(
            [unauth_v2, unauth_root, auth_head, noauth_head], seconds, slices
        )
    result = CaseResult(name, *phases)
    log(
        f"{name}: auth HEAD {result.auth_head.rate:.0f}/s, unauth GET /v2/ "
        f"{result.unauth_v2.rate:.0f}/s (ratio {result.ratio:.2f}), HEAD without auth "
        f"{result.noauth_head.rate:.0f}/s (ratio {result.ratio_same_request:.2f})"
    )
    return result


# -- the set-ups --


@contextmanager
def bare(work_dir: Path, rounds: int) -> Iterator[Setup]:
    config = cluster_config(load_settings(None, {}))
    with (
        run_registry(work_dir / "auth", config=config, bcrypt_rounds=rounds) as reg,
        run_registry(work_dir / "twin", config=config, auth=False) as twin,
    ):
        assert reg.username and reg.password and reg.ca_path and twin.ca_path
        login = (reg.username, reg.password)
        floor = Setup(twin.url, twin.ca_path, "", "", pids=(twin.pid,))
        yield Setup(reg.url, reg.ca_path, *login, pids=(reg.pid,), admin=login, twin=floor)


@contextmanager
def proxied(work_dir: Path, hash_cache: bool) -> Iterator[Setup]:
    config = cluster_config(load_settings(None, {}))
    with (
        run_proxied_registry(
            work_dir / "auth",
            bcrypt_rounds=BCRYPT_ROUNDS,
            hash_cache=hash_cache,
            registry_config=config,
        ) as proxy,
        run_proxied_registry(work_dir / "twin", authenticate=False, registry_config=config) as twin,
    ):
        floor = Setup(twin.url, twin.ca_path, "", "", pids=(twin.pid, twin.registry.pid))
        # The pull login: what the nodes' kubelets present.
        yield Setup(
            proxy.url,
            proxy.ca_path,
            proxy.puller.username,
            proxy.puller.password,
            pids=(proxy.pid, proxy.registry.pid),
            admin=(proxy.admin.username, proxy.admin.password),
            twin=floor,
        )


CASES: dict[str, tuple[str, Callable[[Path], AbstractContextManager[Setup]]]] = {
    "a": (f"distribution htpasswd, bcrypt cost {BCRYPT_ROUNDS}", lambda d: bare(d, BCRYPT_ROUNDS)),
    "b": (
        f"distribution htpasswd, bcrypt cost {LOWEST_BCRYPT_COST}",
        lambda d: bare(d, LOWEST_BCRYPT_COST),
    ),
    "c": (f"Caddy + hash cache, cost {BCRYPT_ROUNDS}", lambda d: proxied(d, True)),
    "d": (f"Caddy, no hash cache, cost {BCRYPT_ROUNDS}", lambda d: proxied(d, False)),
}


def table(results: list[CaseResult], clients: int) -> str:
    """Rates, the three ratios, and server CPU per request, one set-up a line."""
    lines = [
        f"{clients} clients, one keep-alive connection each; requests/s, ratios within one run,",
        "server CPU in ms per request (utime+stime of the set-up's processes).",
        "",
        f"{'set-up':40} {'GET /v2/':>8} {'GET /':>7} {'HEAD':>7} {'HEAD':>7}"
        f"  {'auth HEAD /':>11} {'auth HEAD /':>11} {'auth HEAD /':>11}"
        f"  {'CPU ms/req':>10} {'':>6} {'auth':>6}  {'client':>6}",
        f"{'':40} {'401':>8} {'200':>7} {'auth':>7} {'no auth':>7}"
        f"  {'GET /v2/':>11} {'GET /':>11} {'HEAD no auth':>11}"
        f"  {'HEAD':>10} {'auth':>6} {'adds':>6}  {'ms/req':>6}",
    ]
    for r in results:
        lines.append(
            f"{r.name:40} {r.unauth_v2.rate:8.0f} {r.unauth_root.rate:7.0f} "
            f"{r.auth_head.rate:7.0f} {r.noauth_head.rate:7.0f}"
            f"  {_judged(r.ratio):>11} {_judged(r.ratio_root):>11} "
            f"{_judged(r.ratio_same_request):>11}"
            f"  {r.noauth_head.server_ms_per_request:10.2f} "
            f"{r.auth_head.server_ms_per_request:6.2f} {r.auth_ms_per_request:6.2f}"
            f"  {r.auth_head.client_ms_per_request:6.2f}"
        )
    phases = [p for r in results for p in (r.unauth_v2, r.unauth_root, r.auth_head, r.noauth_head)]
    lines += [
        "",
        f"ratios marked * meet the target (>= {TARGET_RATIO}); "
        f"unexpected answers or transport errors: {sum(p.errors for p in phases)}",
    ]
    return "\n".join(lines)


def _judged(ratio: float) -> str:
    return f"{ratio:.2f}{'*' if ratio >= TARGET_RATIO else ' '}"


def as_json(results: list[CaseResult], clients: int, seconds: float, slices: int) -> dict:
    def phase(p: Phase) -> dict:
        return {
            **asdict(p),
            "rate": p.rate,
            "server_ms_per_request": p.server_ms_per_request,
            "client_ms_per_request": p.client_ms_per_request,
        }

    return {
        "clients": clients,
        "seconds": seconds,
        "slices": slices,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cases": [
            {
                "name": r.name,
                "unauth_get_v2": phase(r.unauth_v2),
                "unauth_get_root": phase(r.unauth_root),
                "auth_head_manifest": phase(r.auth_head),
                "noauth_head_manifest": phase(r.noauth_head),
                "ratio_auth_vs_v2": r.ratio,
                "ratio_auth_vs_root": r.ratio_root,
                "ratio_auth_vs_noauth_head": r.ratio_same_request,
                "auth_server_ms_per_request": r.auth_ms_per_request,
            }
            for r in results
        ],
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per kind of load")
    parser.add_argument("--slices", type=int, default=SLICES, help="interleaved slices of it")
    parser.add_argument("--cases", default="abcd", help="which set-ups, e.g. 'ac'")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="auth-rate-") as tmp:
        for key in args.cases:
            name, start = CASES[key]
            log(f"({key}) {name}: starting")
            with start(Path(tmp) / key) as setup:
                results.append(
                    await measure(f"({key}) {name}", setup, args.clients, args.seconds, args.slices)
                )
    print(table(results, args.clients))
    if args.json:
        args.json.write_text(
            json.dumps(as_json(results, args.clients, args.seconds, args.slices), indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
