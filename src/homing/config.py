"""Settings: defaults, then an optional TOML file, then ``HOMING_*`` environment variables.

``load_settings`` is pure (it takes the environment and the file path as arguments) and is
called once by the CLI; the frozen result is passed down. Every field ``name`` is set by the
file key ``name`` and the variable ``HOMING_NAME``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from homing.errors import ConfigError

ENV_PREFIX = "HOMING_"


class Secret(str):
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks, ``--help``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def reveal(self) -> str:
        """The real value, for the few places that must use it."""
        return str.__str__(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a Homing process. Times are in seconds."""

    database_url: str = "sqlite:///homing.sqlite3"
    host: str = "127.0.0.1"
    port: int = 8071
    bootstrap_token: Secret | None = None
    public_url: str = ""
    request_timeout: float = 15.0
    max_body_bytes: int = 1024 * 1024
    retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    retry_jitter: float = 0.2
    log_level: str = "info"
    # API requests per second per token (bursts of twice that); 0 turns the limit off
    api_rate_limit: float = 1000.0
    # lifetime of application-portal tokens, seconds
    portal_token_ttl: int = 7 * 24 * 3600
    # egress safety (see ssrf.py): extra CIDRs deliveries may reach, https-only, a CONNECT proxy
    allow_networks: str = ""
    https_only: bool = False
    proxy: Secret | None = None
    # encrypts endpoint secrets at rest (keep it: without it they cannot be read back)
    main_secret: Secret | None = None
    # delivery: sends in flight per worker, and per endpoint across all workers (so a few slow
    # endpoints leave room for the rest); a lease is request_timeout + lease_margin
    worker_concurrency: int = 256
    endpoint_concurrency: int = 16
    lease_margin: float = 30.0
    # endpoint health: disable an endpoint whose deliveries have failed for this long
    disable_after: int = 5 * 24 * 3600
    # operational webhooks go to this application (id or uid) of the default organisation
    operational_app: str = ""

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={redact_url(v) if f.name == 'database_url' else v!r}"
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({shown})"

    @property
    def base_url(self) -> str:
        """Where people reach this installation (for portal links)."""
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """``url`` with any password (user-info or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url  # untouched: urlunsplit would also drop an empty "//" authority
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password=" in parts.query:
        query = [
            f"{k}=***" if k == "password" else f"{k}={v}" for k, v in parse_qsl(parts.query, True)
        ]
        parts = parts._replace(query="&".join(query))
    return urlunsplit(parts)


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _integer(raw: Any) -> int:
    # TOML gives real ints; refuse bools and fractional floats rather than truncating them
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(raw)
    if not isinstance(raw, int | float | str):
        raise TypeError(raw)
    return int(raw)


def _convert(name: str, kind: str, raw: Any) -> Any:
    # ``kind`` is the annotation text (postponed annotations), e.g. ``"int"``.
    try:
        if kind == "bool":
            return raw if isinstance(raw, bool) else _BOOLS[str(raw).strip().lower()]
        if kind == "int":
            return _integer(raw)
        if kind == "float":
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise TypeError(raw)
            return float(raw)
        if kind == "tuple[int, ...]":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            return tuple(
                _integer(i.strip() if isinstance(i, str) else i) for i in items if str(i).strip()
            )
        if not isinstance(raw, str | int | float):
            raise TypeError(raw)
        if kind == "Secret | None":
            return Secret(str(raw)) if str(raw) else None
        return str(raw)
    except (ValueError, KeyError, TypeError) as exc:
        shown = "***" if kind == "Secret | None" else repr(raw)
        raise ConfigError(f"{name}: cannot read {shown} as {kind}") from exc


def _validate_database_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError("database_url: cannot parse it") from exc
    if parts.scheme not in ("sqlite", "postgres", "postgresql"):
        raise ConfigError("database_url: use sqlite:///PATH or postgresql://...")


def _validate_egress(settings: Settings) -> None:
    from homing import ssrf  # late: ssrf builds on Settings

    ssrf.parse_networks(settings.allow_networks)  # raises ConfigError, naming the bad entry
    if settings.proxy is not None:
        ssrf.proxy_endpoint(settings.proxy.reveal())  # raises ConfigError
    if settings.main_secret is not None and len(settings.main_secret.reveal()) < 16:
        raise ConfigError("main_secret: use at least 16 characters (better: 32 random bytes)")


def _validate(settings: Settings) -> Settings:
    if not (0 < settings.port < 65536):
        raise ConfigError(f"port: {settings.port} is not a TCP port")
    if not (math.isfinite(settings.request_timeout) and settings.request_timeout > 0):
        raise ConfigError("request_timeout: must be a positive number of seconds")
    if not (0 <= settings.retry_jitter < 1):
        raise ConfigError("retry_jitter: must be in [0, 1)")
    if any(s < 0 for s in settings.retry_schedule):
        raise ConfigError("retry_schedule: delays must not be negative")
    if settings.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes: must be at least 1024")
    if settings.endpoint_concurrency < 1 or settings.worker_concurrency < 1:
        raise ConfigError("worker_concurrency and endpoint_concurrency: must be at least 1")
    if not (math.isfinite(settings.lease_margin) and settings.lease_margin >= 1):
        raise ConfigError("lease_margin: must be at least 1 second")
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level: use one of {', '.join(LOG_LEVELS)}")
    _validate_database_url(settings.database_url)
    _validate_egress(settings)
    return settings


def load_settings(environ: Mapping[str, str], path: str | Path | None = None) -> Settings:
    """Build settings from defaults, the TOML file at ``path`` and ``HOMING_*`` in ``environ``.

    Raises ``ConfigError`` for an unreadable file, an unknown key or a bad value.
    """
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown config keys in {path}: {', '.join(unknown)}")
        values.update(data)
    for name in fields:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = env_value
    converted = {k: _convert(k, str(fields[k].type), v) for k, v in values.items()}
    return _validate(Settings(**converted))
