"""The whole user story on the local cluster, narrated for a newcomer.

Provision the registry, push a runnable image from outside the cluster with
skopeo (a real OCI client), run it as a Deployment pulled from the registry,
and show it Running.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import tempfile
from pathlib import Path

import kr8s.asyncio
from kr8s.asyncio.objects import Deployment, Namespace

from registry_provisioner import kube, provision
from registry_provisioner.config import Settings
from registry_provisioner.credentials import existing_credentials
from registry_provisioner.progress import step

from . import images
from .pods import restricted

DEMO_NAMESPACE = "registry-demo"
DEMO_REPOSITORY = "demo/hello"


def skopeo_push(archive: Path, reference: str, ca_dir: Path, user: str, password: str) -> None:
    """Push like an outside machine would: TLS verified against the CA, real login."""
    with tempfile.TemporaryDirectory() as tmp:
        authfile = Path(tmp) / "auth.json"
        authfile.touch(mode=0o600)
        host = reference.split("/", 1)[0]
        token = f"{user}:{password}".encode()
        authfile.write_text(
            json.dumps({"auths": {host: {"auth": base64.b64encode(token).decode()}}})
        )
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-authfile",
                str(authfile),
                "--dest-cert-dir",
                str(ca_dir),
                f"oci-archive:{archive}",
                f"docker://{reference}",
            ],
            check=True,
        )


def demo_deployment(
    image: str,
    pull_secret: str,
    *,
    name: str = "hello",
    namespace: str = DEMO_NAMESPACE,
    grace_seconds: int = 30,
) -> dict:
    """A Deployment that pulls `image` with `pull_secret` and keeps running it.

    The end-to-end test runs the same one under its own name; it passes a short
    `grace_seconds` (30 is Kubernetes' default) because `sleep` ignores SIGTERM.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": restricted(
                    {
                        "imagePullSecrets": [{"name": pull_secret}],
                        "terminationGracePeriodSeconds": grace_seconds,
                        "containers": [
                            {
                                "name": name,
                                "image": image,
                                "imagePullPolicy": "Always",
                                "command": [
                                    "sh",
                                    "-c",
                                    "echo pulled from the private registry; exec sleep 100000",
                                ],
                            }
                        ],
                    }
                ),
            },
        },
    }


async def ensure_namespace(api: kr8s.asyncio.Api, name: str) -> None:
    namespace = await Namespace({"metadata": {"name": name}}, api=api)
    if not await namespace.exists():
        await namespace.create()


async def run_demo(api: kr8s.asyncio.Api, settings: Settings, ca_dir: Path) -> list[str]:
    await ensure_namespace(api, DEMO_NAMESPACE)
    result = await provision.provision(api, settings, ca_dir=ca_dir)
    credentials = await existing_credentials(api, settings)
    assert credentials is not None
    archive = images.build_image(images.helper_image())
    reference = f"{settings.registry_host}/{DEMO_REPOSITORY}:1"
    with step(f"pushing {reference} from the host with skopeo"):
        skopeo_push(
            archive, reference, result.ca_file.parent, credentials.username, credentials.password
        )
    manifest = demo_deployment(reference, settings.pull_secret.name)
    await kube.apply_manifests(api, [manifest])
    deployment = await Deployment.get("hello", namespace=DEMO_NAMESPACE, api=api)
    with step("waiting for the demo Deployment to pull the image and run (up to 180s)"):
        await asyncio.wait_for(kube.wait_until(deployment, kube.rolled_out), 180)
    pods = await kube.get_all(api, "pods", namespace=DEMO_NAMESPACE, label_selector="app=hello")
    pod = pods[0]
    return [
        provision.summary(settings, result),
        "",
        f"pushed {reference} from outside the cluster (skopeo, TLS verified, real login)",
        f"Deployment {DEMO_NAMESPACE}/hello runs it: pod {pod.name} is {pod.raw['status']['phase']}"
        f" on {pod.raw['spec'].get('nodeName')}, image pulled from {settings.registry_host}",
    ]


async def demo_command(settings: Settings, kubeconfig: str, ca_dir: Path) -> None:
    api = await kube.connect(kubeconfig=kubeconfig)
    for line in await run_demo(api, settings, ca_dir):
        print(line)
