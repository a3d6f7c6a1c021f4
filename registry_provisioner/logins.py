"""A registry login: its password and the forms it is handed over in.

The proxy checks the bcrypt hash; kubelet pulls with the dockerconfigjson; a bare
distribution (the loopback benchmarks) reads an htpasswd line. Pure, so
rendering can stay pure.
"""

from __future__ import annotations

import base64
import json
import secrets

import bcrypt

# bcrypt cost. The proxy checks a login's hash once and caches the result, so the cost no
# longer falls on every request; 10 keeps what a stolen hash reveals as hard to invert as
# it was. The 192-bit random passwords are what make any cost safe (README, "Logins").
BCRYPT_ROUNDS = 10


def generate_password() -> str:
    """A URL-safe random password (32 chars), safe to paste into ``docker login``."""
    return secrets.token_urlsafe(24)


def bcrypt_hash(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """The password's bcrypt hash in the ``$2y$`` spelling, which distribution and Caddy read."""
    secret = password.encode("utf-8")
    if not secret or len(secret) > 72:
        raise ValueError("bcrypt passwords must be 1-72 bytes")
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=rounds)).decode("ascii")
    return f"$2y${hashed[4:]}"


def hash_matches(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (any bcrypt spelling) is the hash of ``password``."""
    try:
        return bcrypt.checkpw(password.encode("utf-8"), ("$2b$" + hashed[4:]).encode("ascii"))
    except ValueError:
        return False


def htpasswd_line(user: str, password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """One ``user:hash`` line; distribution accepts only bcrypt."""
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError("htpasswd user must be non-empty without ':' or whitespace")
    return f"{user}:{bcrypt_hash(password, rounds)}"


def dockerconfigjson(host: str, user: str, password: str) -> str:
    """The ``.dockerconfigjson`` payload kubelet uses to pull from ``host``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    auth = {"username": user, "password": password, "auth": token}
    return json.dumps({"auths": {host: auth}}, sort_keys=True)
