"""The grammar of repository names, tags and digests, and the digests of bytes.

One grammar for every module that reads a reference, so the client, garbage
collection and the config check cannot disagree on what a digest is.

Digests follow the OCI image spec: its general grammar allows any algorithm
name, but it registers only two, sha256 (64 lowercase hex characters; every
implementation must support it) and sha512 (128). Those are the only ones
accepted here, because a digest we accept is one we can verify with hashlib,
and upper-case hex or another length would never name a blob distribution
stored.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# A path component of a repository name, from the distribution spec; checked so a
# name can never reshape the URL path it goes into.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# Every pattern is used with fullmatch: `$` would also accept a trailing newline.
# One component alone, for checks that split a full image reference themselves (the config).
PATH_COMPONENT = re.compile(_COMPONENT)
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


def check_repository(repo: str) -> None:
    """Refuse a repository name before it goes into a URL path."""
    if not REPOSITORY.fullmatch(repo):
        raise ValueError(f"invalid repository name: {repo!r}")


def check_digest(digest: str) -> None:
    """Refuse anything but a registered-algorithm digest (see the module docstring)."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest: {digest!r}")


def check_reference(ref: str) -> None:
    """Refuse what is neither a tag nor a digest: a manifest is named by one of the two."""
    if not (TAG.fullmatch(ref) or DIGEST.fullmatch(ref)):
        raise ValueError(f"invalid tag or digest: {ref!r}")


def split_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a valid digest; ValueError for anything else."""
    check_digest(digest)
    algorithm, _, encoded = digest.partition(":")
    return algorithm, encoded


def hasher_for(digest: str) -> Any:
    """A fresh hashlib object of the digest's algorithm, to check content against it."""
    return hashlib.new(split_digest(digest)[0])


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of `data`, in the algorithm every registry supports."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_like(digest: str, data: bytes) -> str:
    """The digest of `data` in the same algorithm as `digest`."""
    hasher = hasher_for(digest)
    hasher.update(data)
    return f"{hasher.name}:{hasher.hexdigest()}"
