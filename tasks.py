"""Tasks: `invoke --list` shows them all; `invoke --help TASK` explains one."""

from __future__ import annotations

from invoke import Collection, Exit, task

from scripts.local_cluster import cluster as local_cluster


@task
def cluster_up(c):
    """Build (first time only) and start the local single-node cluster."""
    try:
        local_cluster.up()
    except local_cluster.ClusterStartError as error:
        raise Exit(f"cluster.up failed: {error}", code=1) from error


@task
def cluster_down(c):
    """Stop the local cluster and remove everything it made (the build cache stays)."""
    local_cluster.down()


cluster = Collection("cluster")
cluster.add_task(cluster_up, name="up")
cluster.add_task(cluster_down, name="down")

ns = Collection(cluster)
