"""The project's exceptions, in one place.

Tasks catch ``ProvisionError`` once and print its message, so every message
here is written for the person running ``invoke``, not for a traceback reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_MAX_VALUE_CHARS = 80


def _show(value: object) -> str:
    """Render a bad value briefly; long mappings would drown the actual problem."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


class ProvisionError(Exception):
    """Base of every error this project raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid setting; several are collected so the user fixes them in one pass."""

    field: str
    value: object
    accepted: str

    def __str__(self) -> str:
        return f"config: {self.field}: {_show(self.value)} is not valid: {self.accepted}"


class ConfigError(ProvisionError):
    """The configuration is invalid; ``str()`` gives one line per problem."""

    def __init__(
        self,
        field: str | None = None,
        value: object = None,
        accepted: str = "",
        *,
        problems: Iterable[ConfigProblem] = (),
    ) -> None:
        found = list(problems)
        if field is not None:
            found.insert(0, ConfigProblem(field, value, accepted))
        if not found:
            raise ValueError("ConfigError needs at least one problem")
        self.problems: tuple[ConfigProblem, ...] = tuple(found)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted paths at fault, for callers and tests that branch on them."""
        return tuple(p.field for p in self.problems)


class PreflightError(ProvisionError):
    """The cluster lacks something the registry needs; ``hint`` says how to get it."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class ReadinessTimeout(ProvisionError):
    """An object did not become ready; ``diagnosis`` holds events and a log tail."""

    def __init__(self, what: str, timeout: float, diagnosis: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.diagnosis = diagnosis
        text = f"{what} not ready after {timeout:g}s"
        super().__init__(f"{text}\n{diagnosis.rstrip()}" if diagnosis.strip() else text)


class NodeConfigConflict(ProvisionError):
    """Node trust found a hosts.toml it did not write where a mirror's belongs, and left
    it: those nodes do not use the mirror. One line per node, with the file and the fix."""

    def __init__(self, refusals: Iterable[str]) -> None:
        self.refusals = tuple(refusals)
        super().__init__(
            "node trust left files it did not write as they are, so these nodes do not use "
            "the mirror:\n" + "\n".join(f"  {r}" for r in self.refusals)
        )


class RegistryError(ProvisionError):
    """The registry answered badly; the status picks the hint (401 vs TLS vs 5xx)."""

    def __init__(self, message: str, status: int | None = None, hint: str = "") -> None:
        self.message = message
        self.status = status
        self.hint = hint
        text = f"registry: {message}" if status is None else f"registry: HTTP {status}: {message}"
        super().__init__(f"{text} ({hint})" if hint else text)


class ReadFailed(ProvisionError):
    """A read got neither the object nor 404, so whether the object exists is unknown.

    Taking such an answer for "absent" is how a refused read of the login Secret
    once made provision generate a new password over the stored one.
    """

    def __init__(self, what: str, status: int, reason: str, hint: str) -> None:
        self.what = what
        self.status = status
        self.reason = reason
        self.hint = hint
        super().__init__(f"cannot read {what}: HTTP {status} {reason} ({hint})")


class ClusterUnreachable(ProvisionError):
    """No API server answered, so nothing else is worth trying."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)
