"""SigV4 signing for the S3 preflight and purge, against AWS's published example
(the "GET Bucket (List Objects)" request of the S3 SigV4 header-signing docs)."""

from __future__ import annotations

import datetime as dt

from registry_provisioner import bucket, load_settings


def test_signature_matches_aws_documented_example() -> None:
    headers = bucket.signed_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/",
        "us-east-1",
        bucket.Login("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        b"",
        dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
        {"max-keys": "2", "prefix": "J"},
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )
    assert headers["x-amz-date"] == "20130524T000000Z"


def test_purge_prefix_is_what_distribution_writes_under_the_root() -> None:
    def prefix(root: str) -> str:
        settings = load_settings(
            None,
            {
                "storage.backend": "s3",
                "storage.s3.bucket": "images",
                "storage.s3.credentials_secret": "s3-login",
                "storage.s3.root_directory": root,
            },
        )
        return bucket.storage_prefix(settings.storage.s3)

    assert prefix("") == "docker/registry/v2/"
    assert prefix("/registry") == "registry/docker/registry/v2/"
    assert prefix("/a/b/") == "a/b/docker/registry/v2/"
