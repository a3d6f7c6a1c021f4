"""What the local cluster runs, described as data so start and stop stay generic."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProcessSpec:
    """One long-running process of the cluster."""

    name: str  # also the log file name: logs/<name>.log
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    in_netns: bool = True  # run inside the cluster's network namespace
