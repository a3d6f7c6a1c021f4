"""Tasks: `invoke --list` shows them all; `invoke --help TASK` explains one.

Each task imports what it needs when it runs, so `invoke --list` and the product's
own tasks load neither kr8s before they need it nor the benchmarks or the cluster
builder at all.
"""

from __future__ import annotations

import asyncio
import importlib
import shlex
import sys
import time
import types
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import Collection, Exit, task

if TYPE_CHECKING:
    from registry_provisioner import Settings

# The tasks run on asyncio. httpcore (under kr8s and httpx) imports trio merely because
# it is installed, at about 0.2 s per task; marked absent, it is never loaded.
sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
# Likewise httpx's command-line client: httpx imports it to offer `httpx.main`, loading
# click and pygments whenever they are installed (and giving up without rich).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


class _LoadedOnFirstUse(types.ModuleType):
    """Stands in for a module until one of its attributes is read, then imports it.

    kr8s imports python-jsonpath (for editing kubeconfigs) and httpx-ws (for exec and
    port-forward) at its top; most tasks use neither. importlib's LazyLoader does not
    help here: `import` itself reads the module's `__spec__`, which loads it.
    """

    def __getattr__(self, attribute: str) -> Any:
        real = sys.modules.get(self.__name__)
        if real is None or real is self:
            del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, attribute)


for _name in ("jsonpath", "httpx_ws"):
    sys.modules.setdefault(_name, _LoadedOnFirstUse(_name))

LOCAL_CONFIG = Path(__file__).parent / "scripts" / "local_cluster" / "registry-config.yaml"
# `--local`'s overlay while the k3s lane's cluster runs (`invoke cluster.up --k3s`).
K3S_LOCAL_CONFIG = LOCAL_CONFIG.with_name("registry-config-k3s.yaml")

COMMON_HELP = {
    "config": "settings file: config.yaml (default) or the seed's group_vars file",
    "context": "kubeconfig context to use (default: the current one; KUBECONFIG is honoured)",
    "kubeconfig": "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)",
    "set": "override one setting, e.g. --set service.ip=10.0.0.5 (repeatable)",
    "local": "target the local cluster from `invoke cluster.up` with its config overlay",
}
TEST_LANES = ("all", "home", "k3s")
K3S_HELP = {"k3s": "the k3s lane: k3s built from its source tree, with its embedded containerd"}


def _settings(config: str | None, set_: list[str], local: bool) -> Settings:
    """Load and validate before anything talks to the cluster."""
    import yaml

    from registry_provisioner import ProvisionError, load_settings

    overrides: dict[str, Any] = {}
    if local:
        overrides.update(yaml.safe_load(_local_overlay().read_text()) or {})
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise Exit(f"--set {item!r}: expected KEY=VALUE, e.g. --set replicas=1", code=2)
        overrides[key] = value
    try:
        settings = load_settings(Path(config) if config else None, overrides)
    except ProvisionError as error:
        raise Exit(str(error), code=2) from error
    if local:
        _ensure_local_routes(settings)
    return settings


def _local_overlay() -> Path:
    """The overlay of whichever local cluster `cluster.up` started: k3s's or the home-built."""
    from scripts.local_cluster.paths import FLAVOR_FILE

    k3s = FLAVOR_FILE.exists() and FLAVOR_FILE.read_text().strip() == "k3s"
    return K3S_LOCAL_CONFIG if k3s else LOCAL_CONFIG


def _seconds(text: object) -> float:
    """A --timeout value, or exit with what is expected."""
    try:
        seconds = float(str(text))
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise Exit(f"--timeout {text}: expected a number of seconds above 0, e.g. 60", code=2)
    return seconds


def _ensure_local_routes(settings: Settings) -> None:
    """With the local cluster down its addresses lead off the machine: send nothing there."""
    from scripts.local_cluster import network

    try:
        network.ensure_routed_into_cluster(network.NODE_IP, what="the API server")
        network.ensure_routed_into_cluster(settings.service.ip, what="service.ip")
    except network.LeavesMachine as error:
        raise Exit(f"error: {error}", code=1) from error


def _kubeconfig(kubeconfig: str | None, local: bool) -> str | None:
    from scripts.local_cluster.paths import KUBECONFIG

    return str(KUBECONFIG) if local and not kubeconfig else kubeconfig


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """One asyncio.run per task; every failure becomes one clear line and exit 1."""
    import httpx
    import kr8s

    from registry_provisioner import ProvisionError
    from registry_provisioner.progress import cut_short

    def where() -> str:
        return f" ({cut_short()})" if cut_short() else ""

    try:
        asyncio.run(coroutine)
    except KeyboardInterrupt:
        raise Exit(
            f"interrupted{where()}: what was already applied stays and nothing was deleted "
            "half-way; running the same command again is safe and finishes the job",
            code=130,
        ) from None
    except ProvisionError as error:
        raise Exit(f"error: {error}", code=1) from error
    except httpx.TransportError as error:  # registry errors arrive as RegistryError
        raise Exit(_lost_api_server(f"{type(error).__name__}: {error}"), code=1) from error
    except kr8s.ServerError as error:
        status = error.response.status_code if error.response is not None else 0
        if status < 500 and status != 429:
            raise Exit(f"error: ServerError: {error}{where()}", code=1) from error
        # Shutting down or overloaded: the server answered, but not with an answer.
        raise Exit(_lost_api_server(f"it answered {status}: {error}"), code=1) from error
    except TimeoutError as error:
        raise Exit(
            f"error: timed out{where()}: run the same command again once the cluster "
            "has caught up; `invoke status` shows what is still pending",
            code=1,
        ) from error
    except (kr8s.NotFoundError, kr8s.ExecError, httpx.HTTPError) as error:
        raise Exit(f"error: {type(error).__name__}: {error}{where()}", code=1) from error
    except (OSError, ValueError) as error:  # decode errors are ValueErrors too
        raise Exit(f"error: {type(error).__name__}: {error}{where()}", code=1) from error


def _lost_api_server(detail: str) -> str:
    return (
        f"error: lost the Kubernetes API server ({detail}): once it answers again "
        "(kubectl get --raw=/readyz), run the same command again; every task is safe to repeat"
    )


def _commands():
    from registry_provisioner import commands

    return commands


PROVISION_HELP = {
    **COMMON_HELP,
    "dry_run": "show what would change (server-side dry run); change nothing",
    "rotate_password": "generate a new password for the admin login",
    "rotate_pull_password": "generate a new password for the pull-only login (and its Secrets)",
    "adopt": "take over existing objects of the same names that no registry install made",
    "ca_dir": "where to write the registry's CA for clients (default ./certs)",
    "timeout": "seconds each readiness wait may take (default 300), e.g. 60 in CI",
}


@task(help=PROVISION_HELP, iterable=["set_"])
def provision(
    c,
    config=None,
    context=None,
    kubeconfig=None,
    set_=None,
    local=False,
    dry_run=False,
    rotate_password=False,
    rotate_pull_password=False,
    adopt=False,
    ca_dir="certs",
    # A string, not 300: invoke would turn an int default into int() and crash on "abc".
    timeout="300",
):
    """Install or update the registry; a re-run with the same config changes nothing."""
    settings = _settings(config, set_ or [], local)
    seconds = _seconds(timeout)
    _run(
        _commands().provision_command(
            settings,
            context,
            _kubeconfig(kubeconfig, local),
            dry_run=dry_run,
            rotate_password=rotate_password,
            rotate_pull_password=rotate_pull_password,
            adopt=adopt,
            ca_dir=Path(ca_dir),
            timeout=seconds,
        )
    )


@task(
    help={**COMMON_HELP, "purge": "also delete the stored images, the login and the namespace"},
    iterable=["set_"],
)
def unprovision(c, config=None, context=None, kubeconfig=None, set_=None, local=False, purge=False):
    """Remove the registry, keeping its images unless --purge."""
    settings = _settings(config, set_ or [], local)
    _run(
        _commands().unprovision_command(
            settings, context, _kubeconfig(kubeconfig, local), purge=purge
        )
    )


@task(
    name="smoke-test",
    help={**COMMON_HELP, "ca_dir": "where to write the registry's CA"},
    iterable=["set_"],
)
def smoke_test(
    c, config=None, context=None, kubeconfig=None, set_=None, local=False, ca_dir="certs"
):
    """Push a fresh random image through the LoadBalancer IP, pull it back, delete it."""
    settings = _settings(config, set_ or [], local)
    _run(
        _commands().smoke_test_command(
            settings, context, _kubeconfig(kubeconfig, local), Path(ca_dir)
        )
    )


@task(help=COMMON_HELP, iterable=["set_"])
def status(c, config=None, context=None, kubeconfig=None, set_=None, local=False):
    """Show what is installed, readiness, the IP, certificate expiry and storage used."""
    settings = _settings(config, set_ or [], local)
    _run(_commands().status_command(settings, context, _kubeconfig(kubeconfig, local)))


@task(
    help={
        **COMMON_HELP,
        "dry_run": "only report what would be deleted; the registry stays writable",
    },
    iterable=["set_"],
)
def gc(c, config=None, context=None, kubeconfig=None, set_=None, local=False, dry_run=False):
    """Delete untagged manifests and unreferenced blobs; the registry is read-only meanwhile."""
    settings = _settings(config, set_ or [], local)
    _run(_commands().gc_command(settings, context, _kubeconfig(kubeconfig, local), dry_run=dry_run))


@task(help={k: COMMON_HELP[k] for k in ("config", "set", "local")}, iterable=["set_"])
def render(c, config=None, set_=None, local=False):
    """Print the manifests provision would apply (secrets as placeholders); no cluster needed."""
    _commands().render_command(_settings(config, set_ or [], local))


@task(help=K3S_HELP)
def cluster_up(c, k3s=False):
    """Build (first time only) and start the local single-node cluster."""
    from scripts.local_cluster import cluster as local_cluster

    try:
        if k3s:
            _k3s().up()
        else:
            local_cluster.up()
    except local_cluster.ClusterStartError as error:
        raise Exit(f"cluster.up failed: {error}", code=1) from error


@task(help=K3S_HELP)
def cluster_down(c, k3s=False):
    """Stop the local cluster, either one, and remove everything it made (the build cache stays).

    --k3s changes nothing: one command ends whichever cluster runs.
    """
    from scripts.local_cluster import cluster as local_cluster

    local_cluster.down()


def _k3s():
    """The k3s lane's module, or exit saying why the lane cannot run here."""
    from scripts.local_cluster import k3s, k3s_build

    reason = k3s_build.source_missing_reason()
    if reason:
        raise Exit(reason, code=1)
    return k3s


@task
def demo(c):
    """The whole story on the local cluster: provision, push from outside, run it, show it."""
    from scripts.local_cluster import demo as local_demo
    from scripts.local_cluster.paths import KUBECONFIG

    cluster_up(c)
    pull_namespaces = f"pull_secret.namespaces=[default, {local_demo.DEMO_NAMESPACE}]"
    settings = _settings(None, [pull_namespaces], local=True)
    _run(local_demo.demo_command(settings, str(KUBECONFIG), Path("certs")))


@task(
    help={
        "keep_cluster": "leave the last lane's cluster running afterwards: k3s's when the "
        "k3s lane ran, else the home-built one",
        "lane": "all (the default): both lanes, one after the other; home: lint and every "
        "test on the home-built cluster; k3s: lint and tests/k3s on k3s. Two CI jobs, one "
        "per lane, split the cold run's time",
    }
)
def test(c, keep_cluster=False, lane="all"):
    """Lint, then every test: unit, loopback registry, the local cluster, then the k3s lane.

    The k3s lane (tests/k3s on a k3s cluster) runs when the k3s source tree is present;
    otherwise its tests are reported as skipped, with the reason.
    """
    from scripts.local_cluster import k3s_build
    from scripts.local_cluster.paths import CACHE_DIR

    if lane not in TEST_LANES:
        raise Exit(f"--lane: {lane!r} is not one of {', '.join(TEST_LANES)}", code=2)
    c.run("ruff check .")
    c.run("ruff format --check .")
    lanes = {}
    build_log = CACHE_DIR / "logs" / "k3s-build.log"  # the cluster's state and logs go at down
    # Beside the home-built lane, the k3s build takes only the CPU its tests leave idle.
    build = k3s_build.start_background_build(build_log) if lane == "all" else None
    try:
        if lane in ("all", "home"):
            cluster_up(c)
            lanes["local cluster"] = c.run("pytest -p no:cacheprovider -ra", warn=True).ok
            cluster_down(c)  # one cluster at a time: they share addresses and the namespace
        if lane in ("all", "k3s"):
            if build is not None:
                k3s_build.finish_background_build(build, build_log)
                build = None
            if not k3s_build.source_missing_reason():
                cluster_up(c, k3s=True)
            lanes["k3s"] = c.run("pytest -p no:cacheprovider -ra --k3s tests/k3s", warn=True).ok
    except k3s_build.K3sBuildFailed as error:
        raise Exit(str(error), code=1) from error
    finally:
        if build is not None:  # the home-built lane was interrupted: the build goes too
            k3s_build.stop_background_build(build)
        if not keep_cluster:
            cluster_down(c)
    failed = [lane for lane, ok in lanes.items() if not ok]
    if failed:
        raise Exit(f"tests failed in the {' and the '.join(failed)} lane", code=1)


@task(help=K3S_HELP)
def cluster_build(c, k3s=False):
    """Build every binary and image of the local cluster (cached; cluster.up does this too)."""
    from scripts.local_cluster import cluster as local_cluster

    started = time.monotonic()
    if k3s:
        _k3s().build_all()
    else:
        local_cluster.build_all()
    print(f"local cluster built in {time.monotonic() - started:.0f}s")


@task(
    name="bench-mirror",
    help={
        "repeat": "runs behind each figure, which is their median (default 3)",
        "size_mib": "size of the image in MiB (default 256)",
    },
)
def bench_mirror(c, repeat=3, size_mib=256):
    """Pod start pulling from an upstream directly vs through its warm mirror; bench/mirror-*."""
    from scripts.benchmarks import mirror_pull
    from scripts.local_cluster import cluster as local_cluster

    if not local_cluster.is_running():
        raise Exit("the local cluster is not running: start it with `invoke cluster.up`", code=1)
    _run(
        mirror_pull.mirror_bench_command(
            str(local_cluster.KUBECONFIG),
            repeat=int(repeat),
            size_mib=int(size_mib),
            out_dir=Path(__file__).parent / "bench",
        )
    )


@task(
    help={
        "repeat": "runs behind each figure, which is their median (default 3)",
        "size_mib": "size of the throughput image in MiB (default 512)",
        "set": "override one of the bench registry's settings (namespace must start bench-)",
    },
    iterable=["set_"],
)
def bench(c, repeat=3, size_mib=512, set_=None):
    """Measure provision, throughput and cost on the running local cluster; writes bench/."""
    from registry_provisioner import ProvisionError
    from scripts.benchmarks import run as benchmarks
    from scripts.local_cluster import cluster as local_cluster

    if not local_cluster.is_running():
        raise Exit("the local cluster is not running: start it with `invoke cluster.up`", code=1)
    try:
        set_args = benchmarks.bench_set_args(set_ or [])
    except ProvisionError as error:
        raise Exit(f"error: {error}", code=2) from error
    _run(
        benchmarks.bench_command(
            _settings(None, list(set_args), local=True),
            set_args,
            str(local_cluster.KUBECONFIG),
            repeat=int(repeat),
            size_mib=int(size_mib),
            out_dir=Path(__file__).parent / "bench",
        )
    )


@task(
    name="bench-scale-out",
    help={"size_mib": "bytes of all 8 pushers together, in MiB (default 128)"},
)
def bench_scale_out(c, size_mib=128):
    """8 pushers and 8 pullers against 1, then 3 replicas on S3; writes bench/scale-out.json."""
    from scripts.benchmarks import scale_out
    from scripts.local_cluster import cluster as local_cluster

    if not local_cluster.is_running():
        raise Exit("the local cluster is not running: start it with `invoke cluster.up`", code=1)
    _run(scale_out.write(int(size_mib), Path(__file__).parent / "bench" / "scale-out.json"))


@task(
    name="reliability-report",
    help={"pytest_args": "extra pytest arguments as one string, e.g. \"-k 'not api_server'\""},
)
def reliability_report(c, pytest_args=""):
    """Run the reliability, security and conformance tests; write the table to docs/."""
    from scripts.reliability_report import run as reliability_run

    exit_code = reliability_run(shlex.split(pytest_args))
    if exit_code:
        raise Exit(f"pytest exited {exit_code}; docs/reliability.md records each case", code=1)


cluster = Collection("cluster")
cluster.add_task(cluster_build, name="build")
cluster.add_task(cluster_up, name="up")
cluster.add_task(cluster_down, name="down")

ns = Collection(
    provision,
    unprovision,
    smoke_test,
    gc,
    status,
    render,
    demo,
    test,
    bench,
    bench_mirror,
    bench_scale_out,
    reliability_report,
    cluster,
)
