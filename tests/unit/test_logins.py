"""Passwords, htpasswd lines and dockerconfigjson: checked with bcrypt and by decoding."""

from __future__ import annotations

import base64
import json

import bcrypt
import pytest

from registry_provisioner.logins import dockerconfigjson, generate_password, htpasswd_line


def test_passwords_are_long_random_and_url_safe() -> None:
    seen = {generate_password() for _ in range(20)}
    assert len(seen) == 20
    for password in seen:
        assert len(password) >= 24
        assert set(password) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_htpasswd_line_is_bcrypt_2y_and_verifies() -> None:
    line = htpasswd_line("registry", "s3cret-pass")
    user, hashed = line.split(":", 1)
    assert user == "registry"
    assert hashed.startswith("$2y$")
    assert bcrypt.checkpw(b"s3cret-pass", hashed.encode())
    assert not bcrypt.checkpw(b"wrong", hashed.encode())


@pytest.mark.parametrize(
    ("user", "password"),
    [("", "pw"), ("a:b", "pw"), ("a b", "pw"), ("user", ""), ("user", "x" * 73)],
)
def test_htpasswd_line_refuses_unusable_input(user: str, password: str) -> None:
    with pytest.raises(ValueError):
        htpasswd_line(user, password)


def test_dockerconfigjson_decodes_to_the_login() -> None:
    payload = json.loads(dockerconfigjson("172.17.1.62:5000", "registry", "pw:with:colons"))
    entry = payload["auths"]["172.17.1.62:5000"]
    assert entry["username"] == "registry"
    assert entry["password"] == "pw:with:colons"
    assert base64.b64decode(entry["auth"]).decode() == "registry:pw:with:colons"
