"""The Docker CLI, following README's lines literally (issue 18, point 1).

Docker is the client most users have, and `invoke provision` prints the lines for it:
put the CA into /etc/docker/certs.d/<ip>:<port>/ca.crt, log in with the password on
stdin. Here Debian's docker.io runs them, as printed (less `sudo`: we are root),
against a daemon of the test's own (scripts/docker_daemon.py), then pushes,
pulls by tag and by digest, runs the image, and is refused a push after logout.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_provisioner.errors import RegistryError
from registry_provisioner.oci_client import RegistryClient
from scripts.docker_daemon import CERTS_D, DockerDaemon, certs_d_entry
from tests.support.registries import Registry, RegistryFactory

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

BUSYBOX = Path("/bin/busybox")  # busybox-static: a whole userland in one static binary


@pytest.fixture
def docker() -> Iterator[DockerDaemon]:
    """A started daemon; afterwards stopped, and the host checked for anything of it."""
    daemon = DockerDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        problems = daemon.stop()
        leftovers = daemon.leftovers()
        assert not problems and not leftovers, f"cleanup: {problems}; left on the host: {leftovers}"


def readme_docker_lines(provision_stdout: str) -> list[str]:
    """The `docker:` lines `invoke provision` prints, as a root user runs them."""
    lines = provision_stdout.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.strip().startswith("docker:")]
    first = lines[start].split("docker:", 1)[1].strip()
    second = lines[start + 1].strip()
    assert first.startswith("sudo mkdir -p /etc/docker/certs.d/"), first
    assert "docker login" in second and "--password-stdin" in second, second
    return [first.replace("sudo ", ""), second]


def rootfs_tar(path: Path, marker: str) -> Path:
    """A busybox root filesystem for `docker import`; `marker` makes each run's image new."""
    with tarfile.open(path, "w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        data = marker.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def ok(result) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout}{result.stderr}"
    return result.stdout


def pushed_digest(push_output: str) -> str:
    """`<tag>: digest: sha256:... size: N`, the last line docker push prints."""
    [line] = [line for line in push_output.splitlines() if "digest: sha256:" in line]
    return line.split("digest: ", 1)[1].split()[0]


def no_images(docker: DockerDaemon) -> None:
    assert ok(docker.docker("images", "--quiet", "--all")).strip() == ""


async def test_the_docker_cli_follows_the_printed_lines(
    docker: DockerDaemon, registries: RegistryFactory, tmp_path: Path
) -> None:
    registry: Registry = await registries("docker-client")
    mkdir_and_copy, login = readme_docker_lines(registry.outputs[-1].stdout)
    password = await registries.password(registry)
    kubectl_env = {"KUBECONFIG": registry.kubeconfig}

    with certs_d_entry(registry.host) as entry:
        ok(docker.shell(mkdir_and_copy))
        assert (entry / "ca.crt").read_bytes() == registry.ca_file.read_bytes()

        # A wrong password is refused, and nothing is stored for the registry.
        wrong = docker.docker(
            "login", registry.host, "-u", "registry", "--password-stdin", stdin="wrong\n"
        )
        assert wrong.returncode != 0
        assert "unauthorized" in wrong.stderr.lower(), wrong.stderr
        assert not (docker.client_config / "config.json").exists()

        logged_in = ok(docker.shell(login, env=kubectl_env))
        assert "Login Succeeded" in logged_in
        stored = json.loads((docker.client_config / "config.json").read_text())
        assert registry.host in stored["auths"]

        marker = uuid.uuid4().hex
        image = f"{registry.host}/docker-client/busybox:1"
        ok(docker.docker("import", str(rootfs_tar(tmp_path / "rootfs.tar", marker)), image))
        digest = pushed_digest(ok(docker.docker("push", image)))
        async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
            assert (await client.get_manifest("docker-client/busybox", "1")).digest == digest

        # Pull back by tag and by digest, each time into an empty daemon.
        ok(docker.docker("rmi", image))
        no_images(docker)
        ok(docker.docker("pull", image))
        [repo_digest] = json.loads(
            ok(docker.docker("image", "inspect", "--format", "{{json .RepoDigests}}", image))
        )
        assert repo_digest == f"{registry.host}/docker-client/busybox@{digest}"
        ok(docker.docker("rmi", image))
        no_images(docker)
        ok(docker.docker("pull", repo_digest))
        run = ("run", "--rm", "--network", "none", repo_digest)
        assert ok(docker.docker(*run, "/bin/busybox", "cat", "/marker")) == marker

        # Logged out, the same daemon has no login to offer, and the registry refuses.
        ok(docker.docker("logout", registry.host))
        stored = json.loads((docker.client_config / "config.json").read_text())
        assert registry.host not in stored.get("auths", {})
        again = f"{registry.host}/docker-client/busybox:after-logout"
        ok(docker.docker("tag", repo_digest, again))
        refused = docker.docker("push", again)
        assert refused.returncode != 0
        assert "no basic auth credentials" in refused.stderr, refused.stderr
        async with RegistryClient(registry.url, "registry", password, registry.ca_file) as client:
            with pytest.raises(RegistryError) as missing:
                await client.get_manifest("docker-client/busybox", "after-logout")
            assert missing.value.status == 404

    assert not (CERTS_D / registry.host).exists()
