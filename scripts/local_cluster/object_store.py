"""An S3-compatible server and a redis on the local cluster, for registries that scale out.

versitygw serves a bucket from a directory of its pod, and redis keeps
distribution's shared blob-descriptor cache; both run from images this machine
builds (images.py). Their logins are generated here and go into Secrets only:
versitygw reads its root key from the environment, redis its password from a
config file mounted from a Secret, so neither appears on a command line.

There is no cluster DNS, so registries reach both by their Services' ClusterIPs.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import kr8s.asyncio

from registry_provisioner import kube
from registry_provisioner.config import REDIS_PASSWORD_KEY, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
from registry_provisioner.waiting import diagnose_pods, wait_for

from . import versions
from .pods import restricted

S3_PORT = 7070
REDIS_PORT = 6379
BUCKET = "registry-images"
S3_ROOT_SECRET = "versitygw-root"
REDIS_CONFIG_SECRET = "redis-config"
# What a registry namespace holds for its pods to read: the same logins, under the
# keys registry-provisioner's settings name (storage.s3.credentials_secret and
# redis.password_secret).
S3_LOGIN_SECRET = "s3-login"
REDIS_LOGIN_SECRET = "redis-login"
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Logins:
    """Generated logins of one store; kept out of repr so they are never printed."""

    access_key_id: str = field(default_factory=lambda: "registry" + secrets.token_hex(6))
    secret_access_key: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    redis_password: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)


@dataclass(frozen=True)
class Store:
    """Where a running store answers, as registry settings spell it."""

    namespace: str
    s3_ip: str
    redis_ip: str
    logins: Logins

    @property
    def endpoint(self) -> str:
        return f"http://{self.s3_ip}:{S3_PORT}"

    @property
    def redis_address(self) -> str:
        return f"{self.redis_ip}:{REDIS_PORT}"

    def registry_overrides(self, root_directory: str) -> dict[str, str]:
        """Settings for a registry whose images live in this store's bucket under a prefix."""
        return {
            "storage.backend": "s3",
            "storage.s3.endpoint": self.endpoint,
            "storage.s3.secure": "false",
            "storage.s3.bucket": BUCKET,
            "storage.s3.credentials_secret": S3_LOGIN_SECRET,
            "storage.s3.root_directory": root_directory,
            "redis.address": self.redis_address,
            "redis.password_secret": REDIS_LOGIN_SECRET,
        }


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": data,
    }


def registry_secrets(namespace: str, logins: Logins) -> list[dict[str, Any]]:
    """The Secrets a registry in `namespace` names in its settings to reach the store."""
    return [
        _secret(
            S3_LOGIN_SECRET,
            namespace,
            {
                S3_ACCESS_KEY_ID: logins.access_key_id,
                S3_SECRET_ACCESS_KEY: logins.secret_access_key,
            },
        ),
        _secret(REDIS_LOGIN_SECRET, namespace, {REDIS_PASSWORD_KEY: logins.redis_password}),
    ]


def _deployment(
    name: str, namespace: str, container: dict[str, Any], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    spec = restricted({"containers": [container], "volumes": volumes})
    spec["automountServiceAccountToken"] = False
    spec["enableServiceLinks"] = False
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _service(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _probe(port: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 120}


def versitygw_objects(namespace: str, logins: Logins) -> list[dict[str, Any]]:
    """versitygw in posix mode over an emptyDir, with the bucket made as its directory."""
    root_env = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": S3_ROOT_SECRET, "key": key}}}
        for env, key in (
            ("ROOT_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
            ("ROOT_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
        )
    ]
    # Metadata goes to a sidecar directory: no xattrs needed on the pod's volume.
    serve = (
        f"mkdir -p /data/buckets/{BUCKET} /data/meta && exec versitygw --port :{S3_PORT} "
        "posix --sidecar /data/meta /data/buckets"
    )
    container = {
        "name": "versitygw",
        "image": versions.VERSITYGW_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", serve],
        "env": root_env,
        "ports": [{"containerPort": S3_PORT}],
        "readinessProbe": _probe(S3_PORT),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return [
        _secret(
            S3_ROOT_SECRET,
            namespace,
            {
                S3_ACCESS_KEY_ID: logins.access_key_id,
                S3_SECRET_ACCESS_KEY: logins.secret_access_key,
            },
        ),
        _deployment("versitygw", namespace, container, [{"name": "data", "emptyDir": {}}]),
        _service("versitygw", namespace, S3_PORT),
    ]


def redis_objects(namespace: str, logins: Logins) -> list[dict[str, Any]]:
    """redis with a password and no persistence: a cache, lost with its pod as it may be."""
    config = (
        f'port {REDIS_PORT}\nprotected-mode no\nsave ""\nappendonly no\ndir /data\n'
        f"requirepass {logins.redis_password}\n"
    )
    container = {
        "name": "redis",
        "image": versions.REDIS_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["redis-server", "/etc/redis/redis.conf"],
        "ports": [{"containerPort": REDIS_PORT}],
        "readinessProbe": _probe(REDIS_PORT),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/redis", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
        ],
    }
    volumes = [
        {"name": "config", "secret": {"secretName": REDIS_CONFIG_SECRET}},
        {"name": "data", "emptyDir": {}},
    ]
    return [
        _secret(REDIS_CONFIG_SECRET, namespace, {"redis.conf": config}),
        _deployment("redis", namespace, container, volumes),
        _service("redis", namespace, REDIS_PORT),
    ]


async def _cluster_ip(api: kr8s.asyncio.Api, namespace: str, name: str) -> str:
    service = await kube.read(api, f"services/{name}", namespace=namespace)
    if service is None:
        raise RuntimeError(f"Service {namespace}/{name} was applied but cannot be read")
    return service["spec"]["clusterIP"]


async def start(api: kr8s.asyncio.Api, namespace: str, logins: Logins | None = None) -> Store:
    """Run versitygw and redis in `namespace` (which must exist) and wait until both serve."""
    logins = logins or Logins()
    objects = versitygw_objects(namespace, logins) + redis_objects(namespace, logins)
    await kube.apply_manifests(api, objects)
    for name in ("versitygw", "redis"):
        [deployment] = await kube.get_all(api, "deployments", name, namespace=namespace)
        await wait_for(
            f"{name} in namespace {namespace} to be available",
            lambda d=deployment: kube.wait_until(d, kube.rolled_out),
            READY_TIMEOUT,
            lambda n=name: diagnose_pods(api, namespace, f"app.kubernetes.io/name={n}"),
        )
    s3_ip, redis_ip = await asyncio.gather(
        _cluster_ip(api, namespace, "versitygw"), _cluster_ip(api, namespace, "redis")
    )
    return Store(namespace, s3_ip, redis_ip, logins)
