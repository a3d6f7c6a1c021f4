"""Run the tasks exactly as a user types them, against the local cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import kr8s.asyncio
import yaml
from kr8s.asyncio.objects import Namespace, Pod

from registry_provisioner import kube
from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from registry_provisioner.waiting import poll
from scripts.local_cluster import object_store

REPO = Path(__file__).resolve().parents[2]


def _command(args: tuple[str, ...], kubeconfig: str) -> list[str]:
    task, *rest = args
    return [sys.executable, "-m", "invoke", task, "--local", "--kubeconfig", kubeconfig, *rest]


def _environment(env: dict[str, str] | None) -> dict[str, str] | None:
    """This process's environment plus `env` (e.g. a failpoint), or None to inherit it."""
    return {**os.environ, **env} if env else None


def invoke(
    *args: str, kubeconfig: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`invoke TASK --local ...`; output is captured, never echoed with secrets in it.

    `env` adds variables to the task's environment.
    """
    return subprocess.run(
        _command(args, kubeconfig),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_environment(env),
    )


class Started:
    """A task running in the background, its stderr read line by line as it comes.

    Threads drain stdout and stderr, so the task never blocks on a full pipe and a
    test can wait for one progress line with a deadline. Signal it by its `pid`.
    Use it as a context manager: whatever still runs at the end is killed.
    """

    def __init__(self, args: tuple[str, ...], kubeconfig: str, env: dict[str, str] | None):
        self.process = subprocess.Popen(
            _command(args, kubeconfig),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(env),
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._drain, args=(self.process.stdout, self._stdout, None)),
            threading.Thread(
                target=self._drain, args=(self.process.stderr, self._stderr, self._lines)
            ),
        ]
        for reader in self._readers:
            reader.start()

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """A task the test left running (it failed early) is killed, so purges don't race it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(timeout=30)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        """What the task has written to stderr so far."""
        return "".join(self._stderr)

    @staticmethod
    def _drain(pipe, into: list[str], lines: queue.Queue[str | None] | None) -> None:
        for line in pipe:
            into.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)  # end of output: the process is gone

    def wait_for_line(self, wanted, timeout: float) -> str:
        """The first stderr line not seen before for which `wanted(line)` holds.

        Fails if the task ends first or the deadline passes; blocking, so from async
        code call it with asyncio.to_thread.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(
                    f"no such line on stderr within {timeout:g}s:\n{''.join(self._stderr)}"
                ) from None
            if line is None:
                self.process.wait()
                raise AssertionError(
                    f"the task exited ({self.process.returncode}) before the line came:\n"
                    + "".join(self._stderr)
                )
            if wanted(line):
                return line

    def finish(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the task to end (killing it, by its pid, past the deadline)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            for reader in self._readers:
                reader.join(timeout=30)
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, "".join(self._stdout), "".join(self._stderr)
        )


def start(*args: str, kubeconfig: str, env: dict[str, str] | None = None) -> Started:
    """`invoke TASK --local ...` in the background; see Started."""
    return Started(args, kubeconfig, env)


async def until_answers(client: RegistryClient) -> None:
    """A Ready pod, then kube-proxy programs its endpoint: wait for the answer itself.

    Bound it with asyncio.wait_for.
    """
    while True:
        try:
            await client.ping()
            return
        except RegistryError:
            await asyncio.sleep(0.5)


def isolated_overrides(namespace: str, ip: str) -> dict[str, str]:
    """Settings for a registry that shares nothing with the others on the cluster.

    Its pull secret stays in its own namespace, out of `default` and kube-public.
    """
    return {
        "namespace": namespace,
        "service.ip": ip,
        "pull_secret.namespaces": f"[{namespace}]",
        "discovery.publish_local_registry_hosting": "false",
    }


def set_args(overrides: dict[str, str]) -> list[str]:
    """The same settings as the tasks' --set arguments."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


def decoded(secret: dict, key: str) -> str:
    """One value of a Secret's data, as text."""
    return base64.b64decode(secret["data"][key]).decode()


async def http_get(client: Pod, ip: str, port: int, path: str = "/") -> str:
    """The HTTP response `client` gets, or busybox nc's error, within 3 s.

    Through nc rather than busybox wget, which crashes (SIGSEGV) in the helper image.
    """
    request = f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}"
    result = await client.exec(["sh", "-c", request], check=False)
    return (result.stdout if result.returncode == 0 else result.stderr).decode().strip()


async def until_ready(pod: Pod, seconds: float = 120) -> None:
    """Wait for `pod` to be Ready; on timeout, fail with its phase and each container's state."""
    try:
        await asyncio.wait_for(kube.wait_until(pod, kube.condition_is("Ready")), seconds)
    except TimeoutError:
        await pod.refresh()
        status = pod.raw.get("status", {})
        states = {c["name"]: c.get("state") for c in status.get("containerStatuses", [])}
        logs = await pod.logs(tail_lines=5) if states else ""
        raise AssertionError(
            f"pod {pod.namespace}/{pod.name} not Ready in {seconds:.0f}s: "
            f"phase {status.get('phase')}, containers {states}, last log lines {logs!r}"
        ) from None


def skopeo(*args: str, authfile: Path, cert_dir: Path) -> str:
    """skopeo with TLS verification on, the CA from cert_dir and the login from authfile."""
    tls = ["--authfile", str(authfile), "--cert-dir", str(cert_dir)]
    command, *rest = args
    if command == "copy":
        tls = ["--dest-authfile", str(authfile), "--dest-cert-dir", str(cert_dir)]
    result = subprocess.run(
        ["skopeo", command, *tls, *rest], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


RBAC = "rbac.authorization.k8s.io"
# The cluster-wide reads a provision's preflight makes: the storage class, the MetalLB
# pools and cert-manager's CRD. Every restricted ServiceAccount of the tests gets them.
PREFLIGHT_CLUSTER_READS = [
    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get"]},
    {"apiGroups": ["metallb.io"], "resources": ["ipaddresspools"], "verbs": ["list"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get"],
    },
]


@asynccontextmanager
async def service_account_kubeconfig(
    api: kr8s.asyncio.Api, kubeconfig: str, namespace: str, rules: list[dict], path: Path
) -> AsyncIterator[Path]:
    """A kubeconfig at `path` for a ServiceAccount `provisioner` of `namespace` that may do
    only what `rules` grant, cluster-wide, with a short-lived token; the grant goes after."""
    name = f"provisioner-{namespace}"
    cluster_wide = [
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "provisioner", "namespace": namespace}],
        },
    ]
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "provisioner", "namespace": namespace},
    }
    await kube.apply_manifests(api, [account, *cluster_wide])
    try:
        async with api.call_api(
            "POST",
            url="serviceaccounts/provisioner/token",
            namespace=namespace,
            content=json.dumps({"spec": {"expirationSeconds": 3600}}),
        ) as response:
            token = response.json()["status"]["token"]
        config = yaml.safe_load(Path(kubeconfig).read_text())
        user = config["contexts"][0]["context"]["user"]
        config["users"] = [{"name": user, "user": {"token": token}}]
        path.touch(mode=0o600)  # the token never reaches a command line or a log
        path.write_text(yaml.safe_dump(config))
        yield path
    finally:
        await kube.delete_manifests(api, cluster_wide)


async def fresh_namespace(api: kr8s.asyncio.Api, name: str) -> Namespace:
    """`name` created anew and settled: whatever an earlier run left there goes first."""
    for old in await kube.get_all(api, "namespaces", name):
        await old.delete()
        await asyncio.wait_for(kube.wait_deleted(old), 180)
    namespace = await Namespace({"metadata": {"name": name}}, api=api)
    await namespace.create()

    async def root_ca_published() -> bool:
        return bool(await kube.get_all(api, "configmaps", "kube-root-ca.crt", namespace=name))

    # kube-controller-manager adds kube-root-ca.crt to every new namespace a moment
    # later: a snapshot taken before that would count it as a change a test made.
    await asyncio.wait_for(poll(root_ca_published, interval=0.1), 60)
    return namespace


async def namespace_gone(namespace: Namespace) -> None:
    await namespace.delete()
    await asyncio.wait_for(kube.wait_deleted(namespace), 180)


@asynccontextmanager
async def object_store_in(
    api: kr8s.asyncio.Api, namespace: str
) -> AsyncIterator[object_store.Store]:
    """versitygw and redis in `namespace`, made anew, and gone with it afterwards."""
    made = await fresh_namespace(api, namespace)
    try:
        yield await object_store.start(api, namespace)
    finally:
        await namespace_gone(made)
