"""Fixtures for tests that create objects: an API client and a namespace per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import kr8s.asyncio
import pytest
from kr8s.asyncio.objects import Namespace

from registry_provisioner.kube import wait_deleted


@pytest.fixture(scope="session")
async def api(kubeconfig: str) -> kr8s.asyncio.Api:
    return await kr8s.asyncio.api(kubeconfig=kubeconfig)


@pytest.fixture
async def namespace(api: kr8s.asyncio.Api) -> AsyncIterator[str]:
    """A fresh namespace, deleted (and waited out) after the test."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    ns = await Namespace({"metadata": {"name": name}}, api=api)
    await ns.create()
    yield name
    await ns.delete()
    await asyncio.wait_for(wait_deleted(ns), 120)
