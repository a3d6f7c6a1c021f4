"""The kinds a provision can create or change, as kubectl names them.

One list for everything that looks for what a provision left: the cluster tests'
snapshots and object listings, and the bench's check that a removal is complete.
"""

from __future__ import annotations

KINDS = (
    "namespaces",
    "secrets",
    "configmaps",
    "services",
    "deployments",
    "daemonsets",
    "persistentvolumeclaims",
    "networkpolicies.networking.k8s.io",
    "certificates.cert-manager.io",
)
