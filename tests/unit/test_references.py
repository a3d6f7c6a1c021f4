"""One digest and reference grammar: what it accepts is what the OCI image spec registers."""

from __future__ import annotations

import hashlib

import pytest

from registry_provisioner.references import (
    check_digest,
    check_reference,
    check_repository,
    digest_like,
    sha256_digest,
    split_digest,
)

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128


@pytest.mark.parametrize("digest", [SHA256, SHA512])
def test_registered_algorithms_are_accepted(digest: str) -> None:
    check_digest(digest)
    assert split_digest(digest) == tuple(digest.split(":"))


@pytest.mark.parametrize(
    "digest",
    [
        "sha384:" + "c" * 96,  # go-digest knows it; the image spec does not register it
        "sha256:" + "A" * 64,  # upper-case hex
        "sha256:" + "a" * 63,
        "sha512:" + "b" * 64,  # the length belongs to the algorithm
        "md5:" + "d" * 32,
        "sha256" + "a" * 64,
        "",
    ],
)
def test_anything_else_is_not_a_digest(digest: str) -> None:
    with pytest.raises(ValueError, match="invalid digest"):
        split_digest(digest)


@pytest.mark.parametrize("ref", ["v1", "1.2.3-rc_1", "_x", "a" * 128, SHA256])
def test_tags_and_digests_are_references(ref: str) -> None:
    check_reference(ref)


@pytest.mark.parametrize("ref", ["", "-v1", ".v1", "a" * 129, "v1/x", "sha256:zz"])
def test_other_text_is_no_reference(ref: str) -> None:
    with pytest.raises(ValueError):
        check_reference(ref)


@pytest.mark.parametrize("repo", ["app", "team/app", "a.b/c_d/e__f/g-h", "x/y---z"])
def test_repository_names_of_the_distribution_spec(repo: str) -> None:
    check_repository(repo)


@pytest.mark.parametrize("repo", ["", "App", "team//app", "/app", "app/", "../app", "a..b", "a_-b"])
def test_names_that_could_reshape_a_url_are_refused(repo: str) -> None:
    with pytest.raises(ValueError):
        check_repository(repo)


def test_digests_of_bytes_follow_the_algorithm_asked_for() -> None:
    assert sha256_digest(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert digest_like(SHA512, b"abc") == "sha512:" + hashlib.sha512(b"abc").hexdigest()
