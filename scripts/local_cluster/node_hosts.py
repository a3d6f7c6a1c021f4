"""Names the local cluster's node resolves, as a LAN's DNS would give them.

The node's /etc/hosts is a file in the cluster's state directory, bind-mounted over
/etc/hosts in the cluster's own mount namespace (see Supervisor.start_holder), so
containerd and the kubelet resolve these names and the host never sees them. The
file is rewritten in place: the bind mount holds on to its inode.
"""

from __future__ import annotations

from .node_config import NodeLayout
from .paths import STATE_DIR

NODE = NodeLayout(STATE_DIR / "node")


def _without(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if name not in line.split("#", 1)[0].split()[1:]]


def _rewrite(lines: list[str]) -> None:
    with NODE.hosts_file.open("r+", encoding="utf-8") as hosts:
        hosts.seek(0)
        hosts.write("".join(f"{line}\n" for line in lines))
        hosts.truncate()


def add(name: str, ip: str) -> None:
    """`name` resolves to `ip` on the node (replacing an earlier entry for it)."""
    lines = NODE.hosts_file.read_text(encoding="utf-8").splitlines()
    _rewrite([*_without(lines, name), f"{ip} {name}"])


def remove(name: str) -> None:
    """`name` no longer resolves on the node."""
    _rewrite(_without(NODE.hosts_file.read_text(encoding="utf-8").splitlines(), name))
