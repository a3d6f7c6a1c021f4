"""Figures, their targets, and the JSON and Markdown written under bench/.

Every figure keeps its raw samples (one per run) next to their median, so a
reader can see the spread; ratios are sampled per run, never built from two
medians, because runs minutes apart on a noisy machine are not comparable.
"""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Spec:
    """What a figure means, its unit, and the target the issue sets for it (if any)."""

    key: str
    section: str
    label: str  # may use {size}, {clients}, {auth_clients}, {pods} and {layers}
    unit: str
    target: tuple[str, float] | None = None
    # "worst" judges the target on the worst run: one failed push is not a median matter.
    judge: Literal["median", "worst"] = "median"


TIME, REMOVE, THROUGHPUT, AUTH, CONCURRENCY, PULL, COST = (
    "Time to ready",
    "Re-provision and removal",
    "Throughput",
    "Authenticated requests",
    "Concurrency",
    "Cluster pull",
    "Cost",
)
MIRROR = "Pull-through mirror"

SPECS: tuple[Spec, ...] = (
    Spec("provision_ready", TIME, "`invoke provision` from nothing until a push succeeds", "s"),
    Spec(
        "floor_ready",
        TIME,
        "floor: `kubectl apply --server-side` + `kubectl wait`/`rollout status` + same push",
        "s",
    ),
    Spec(
        "helm_ready",
        TIME,
        "helm user: `kubectl apply` a Certificate + wait Ready + `helm install --wait` "
        "(twuni chart) + same push",
        "s",
    ),
    Spec("provision_vs_floor", TIME, "provision / floor", "x", ("<=", 1.0)),
    Spec("provision_vs_helm", TIME, "provision / helm", "x", ("<=", 0.9)),
    Spec("noop_provision", REMOVE, "no-op re-provision", "s", ("<=", 2.0)),
    Spec("dry_run", REMOVE, "`invoke provision --dry-run`", "s"),
    Spec("unprovision", REMOVE, "`invoke unprovision --purge` until every object is gone", "s"),
    Spec("kubectl_delete", REMOVE, "`kubectl delete --wait` of the same objects", "s"),
    Spec("unprovision_vs_delete", REMOVE, "unprovision / kubectl delete", "x"),
    Spec(
        "helm_uninstall",
        REMOVE,
        "`helm uninstall --wait` + delete the Certificate and its Secret until gone",
        "s",
    ),
    Spec("push_cluster", THROUGHPUT, "push {size} MiB through the LoadBalancer IP", "MiB/s"),
    Spec("push_loopback", THROUGHPUT, "push {size} MiB, same binary+config on loopback", "MiB/s"),
    Spec("push_vs_loopback", THROUGHPUT, "push: cluster / loopback", "x", (">=", 0.8)),
    Spec("pull_cluster", THROUGHPUT, "pull {size} MiB through the LoadBalancer IP", "MiB/s"),
    Spec("pull_loopback", THROUGHPUT, "pull {size} MiB, same binary+config on loopback", "MiB/s"),
    Spec("pull_vs_loopback", THROUGHPUT, "pull: cluster / loopback", "x", (">=", 0.8)),
    Spec(
        "skopeo_push_cluster",
        THROUGHPUT,
        "skopeo push {size} MiB through the LoadBalancer IP",
        "MiB/s",
    ),
    Spec(
        "skopeo_push_loopback", THROUGHPUT, "skopeo push {size} MiB, same pair on loopback", "MiB/s"
    ),
    Spec(
        "skopeo_push_vs_loopback", THROUGHPUT, "skopeo push: cluster / loopback", "x", (">=", 0.9)
    ),
    Spec(
        "skopeo_pull_cluster",
        THROUGHPUT,
        "skopeo pull {size} MiB through the LoadBalancer IP",
        "MiB/s",
    ),
    Spec(
        "skopeo_pull_loopback", THROUGHPUT, "skopeo pull {size} MiB, same pair on loopback", "MiB/s"
    ),
    Spec(
        "skopeo_pull_vs_loopback", THROUGHPUT, "skopeo pull: cluster / loopback", "x", (">=", 0.9)
    ),
    Spec(
        "skopeo_server_cpu_cluster",
        THROUGHPUT,
        "registry pod CPU per GiB skopeo moves (push and pull) through the LoadBalancer IP",
        "s/GiB",
    ),
    Spec(
        "skopeo_server_cpu_loopback",
        THROUGHPUT,
        "the loopback pair's CPU per GiB skopeo moves (push and pull)",
        "s/GiB",
    ),
    Spec(
        "skopeo_server_cpu_vs_loopback",
        THROUGHPUT,
        "registry CPU per GiB: cluster / loopback (the kernel's work on the pod's path)",
        "x",
    ),
    Spec(
        "skopeo_client_cpu_vs_loopback",
        THROUGHPUT,
        "skopeo's own CPU per GiB: cluster / loopback",
        "x",
    ),
    Spec(
        "docker_push_cluster",
        THROUGHPUT,
        "docker push {size} MiB through the LoadBalancer IP",
        "MiB/s",
    ),
    Spec(
        "docker_push_loopback", THROUGHPUT, "docker push {size} MiB, same pair on loopback", "MiB/s"
    ),
    Spec(
        "docker_push_vs_loopback", THROUGHPUT, "docker push: cluster / loopback", "x", (">=", 0.9)
    ),
    Spec(
        "docker_pull_cluster",
        THROUGHPUT,
        "docker pull {size} MiB through the LoadBalancer IP",
        "MiB/s",
    ),
    Spec(
        "docker_pull_loopback", THROUGHPUT, "docker pull {size} MiB, same pair on loopback", "MiB/s"
    ),
    Spec(
        "docker_pull_vs_loopback", THROUGHPUT, "docker pull: cluster / loopback", "x", (">=", 0.9)
    ),
    Spec("disk_write", THROUGHPUT, "raw disk write + fsync of the same bytes", "MiB/s"),
    Spec("disk_read", THROUGHPUT, "raw disk read of the same bytes (page cache dropped)", "MiB/s"),
    Spec("push_vs_disk", THROUGHPUT, "push (cluster) / raw disk write", "x"),
    Spec("pull_vs_disk", THROUGHPUT, "pull (cluster) / raw disk read", "x"),
    Spec(
        "auth_head_cluster",
        AUTH,
        "cluster: authenticated manifest HEAD (admin login), {auth_clients} clients "
        "through the LoadBalancer",
        "req/s",
    ),
    Spec(
        "root_cluster",
        AUTH,
        "cluster: unauthenticated `GET /` (no auth, reaches distribution), same clients",
        "req/s",
    ),
    Spec(
        "auth_vs_root_cluster",
        AUTH,
        "cluster: auth HEAD / unauth GET / (different requests: weighs the request, "
        "not authentication)",
        "x",
    ),
    Spec(
        "auth_head_loopback",
        AUTH,
        "loopback, the pod's pair: authenticated manifest HEAD, {auth_clients} clients",
        "req/s",
    ),
    Spec(
        "noauth_head_loopback",
        AUTH,
        "loopback twin without authentication: the same HEAD",
        "req/s",
    ),
    Spec(
        "auth_vs_noauth_loopback",
        AUTH,
        "auth HEAD / the same HEAD without auth (isolates authentication)",
        "x",
        (">=", 0.8),
    ),
    Spec(
        "concurrent_push",
        CONCURRENCY,
        "{clients} clients push different images at once: aggregate",
        "MiB/s",
    ),
    Spec("concurrent_vs_single", CONCURRENCY, "aggregate / one client's push", "x"),
    Spec(
        "concurrent_errors",
        CONCURRENCY,
        "failed pushes among the {clients}",
        "",
        ("==", 0),
        "worst",
    ),
    Spec(
        "cluster_pull",
        PULL,
        "{pods} pods pull {pods} fresh {layers}-layer images at once through the node's "
        "containerd: until all Running",
        "s",
    ),
    Spec(
        "mirror_pull_direct",
        MIRROR,
        "a pod pulling a {size} MiB image from the upstream directly: until Running",
        "s",
    ),
    Spec(
        "mirror_pull_warm",
        MIRROR,
        "the same image through the warm mirror (`upstream.test:5000/...`): until Running",
        "s",
    ),
    Spec("mirror_vs_direct", MIRROR, "warm mirror / direct", "x"),
    Spec("pod_idle_cpu", COST, "registry pod CPU, idle", "mCPU"),
    Spec("pod_idle_memory", COST, "registry pod memory (working set), idle", "MiB"),
    Spec("pod_load_cpu", COST, "registry pod CPU under load (push, pull, concurrent)", "mCPU"),
    Spec("pod_load_memory", COST, "registry pod peak working set under load", "MiB"),
    Spec("pod_memory_peak", COST, "registry pod cgroup peak, page cache included", "MiB"),
    Spec("provision_peak_rss", COST, "peak RSS of the `invoke provision` process", "MiB"),
    Spec("provision_cpu", COST, "CPU time of the `invoke provision` process", "s"),
    Spec("cli_startup", COST, "`invoke --list` (interpreter and imports)", "s"),
)


@dataclass
class Figure:
    """One figure's samples across runs, judged against its spec's target."""

    spec: Spec
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def judged(self) -> float | None:
        """The value the target is checked on: the median, or the worst run."""
        if not self.samples or self.spec.target is None:
            return self.median
        if self.spec.judge == "median":
            return self.median
        op = self.spec.target[0]
        return min(self.samples) if op == ">=" else max(self.samples)

    @property
    def met(self) -> bool | None:
        if self.spec.target is None or self.judged is None:
            return None
        op, limit = self.spec.target
        return _COMPARE[op](self.judged, limit)


@dataclass
class Results:
    """Everything one `invoke bench` measured, plus what it ran on."""

    parameters: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(
        default_factory=lambda: {spec.key: Figure(spec) for spec in SPECS}
    )
    # path ("provision" / "floor") -> phase -> samples in seconds
    phases: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # figure key -> why it was not measured (e.g. the helm peer's chart is absent)
    not_measured: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.figures[key].samples.append(value)

    def add_ratio(self, key: str, numerator: float, denominator: float) -> None:
        """A within-run ratio; a zero denominator leaves the run out rather than divide."""
        if denominator > 0:
            self.add(key, numerator / denominator)

    def add_phases(self, path: str, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.phases.setdefault(path, {}).setdefault(phase, []).append(seconds)

    def skip(self, keys: tuple[str, ...], reason: str) -> None:
        """Report these figures as not measured, with the reason, rather than leave them blank."""
        for key in keys:
            self.not_measured[key] = reason

    def label(self, spec: Spec) -> str:
        p = self.parameters
        return spec.label.format(
            size=p.get("size_mib", "?"),
            clients=p.get("clients", "?"),
            auth_clients=p.get("auth_clients", "?"),
            pods=p.get("pull_pods", "?"),
            layers=p.get("pull_layers", "?"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "environment": self.environment,
            "figures": {
                key: {
                    "section": figure.spec.section,
                    "label": self.label(figure.spec),
                    "unit": figure.spec.unit,
                    "samples": figure.samples,
                    "median": figure.median,
                    "target": " ".join(map(str, figure.spec.target))
                    if figure.spec.target
                    else None,
                    "judged_on": figure.spec.judge if figure.spec.target else None,
                    "met": figure.met,
                    "not_measured": self.not_measured.get(key),
                }
                for key, figure in self.figures.items()
            },
            "phases": {
                path: {
                    phase: {"samples": s, "median": statistics.median(s)} for phase, s in p.items()
                }
                for path, p in self.phases.items()
            },
            "notes": self.notes,
        }


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("", "mCPU"):
        return f"{value:.0f}{' mCPU' if unit else ''}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.1f} {unit}"


def _target_text(spec: Spec) -> str:
    if spec.target is None:
        return ""
    op, limit = spec.target
    shown = format_value(limit, spec.unit).replace(".00 s", " s")
    text = f"{op.replace('<=', '≤').replace('>=', '≥').replace('==', '=')} {shown}"
    return text + (" (every run)" if spec.judge == "worst" else "")


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def markdown(results: Results) -> str:
    """The table a human reads: figure, median, the runs behind it, target, met."""
    p, env = results.parameters, results.environment
    lines = [
        "# Benchmark results",
        "",
        f"`invoke bench --repeat {p.get('repeat')} --size-mib {p.get('size_mib')}` on the local "
        f"cluster, {env.get('finished_at', '?')}: {env.get('cpus', '?')} CPUs, load average "
        f"{env.get('load_before', '?')} before and {env.get('load_after', '?')} after.",
        "Each figure is the median of the runs listed; each ratio is taken within a run, "
        "then its median is shown.",
    ]
    section = None
    for figure in results.figures.values():
        spec = figure.spec
        if spec.section != section:
            section = spec.section
            lines += ["", f"## {section}", "", "| figure | median | runs | target | met |"]
            lines.append("|---|---:|---|---|---|")
        runs = ", ".join(format_value(s, spec.unit) for s in figure.samples)
        median, met = format_value(figure.median, spec.unit), _met_text(figure.met)
        reason = results.not_measured.get(spec.key)
        if reason and not figure.samples:
            median, runs, met = "not measured", reason, "not measured"
        lines.append(
            f"| {results.label(spec)} | {median} | {runs} | {_target_text(spec)} | {met} |"
        )
    lines += _phase_table(results)
    if results.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def _phase_table(results: Results) -> list[str]:
    if not results.phases:
        return []
    paths = list(results.phases)
    lines = [
        "",
        "## Where the time to ready goes (median seconds per phase)",
        "",
        "| path | phase | median | runs |",
        "|---|---|---:|---|",
    ]
    for path in paths:
        for phase, samples in results.phases[path].items():
            runs = ", ".join(f"{s:.2f}" for s in samples)
            lines.append(f"| {path} | {phase} | {statistics.median(samples):.2f} | {runs} |")
    return lines


def write(results: Results, out_dir: Path, stem: str = "results") -> tuple[Path, Path]:
    """bench/<stem>.json and bench/<stem>.md; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
