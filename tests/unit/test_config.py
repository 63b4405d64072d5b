"""Tests for homing.config.load_settings: defaults, file, environment, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from homing.config import Secret, Settings, load_settings, redact_url
from homing.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "homing.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment() -> None:
    """An empty environment and no file give the documented defaults."""
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///homing.sqlite3"
    assert settings.port == 8071
    assert settings.bootstrap_token is None
    assert settings.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert settings.base_url == "http://127.0.0.1:8071"


def test_unrelated_environment_variables_are_ignored() -> None:
    """Variables without the HOMING_ prefix, or in lower case, change nothing."""
    assert load_settings({"PORT": "1", "homing_port": "2", "HOMING": "3"}) == Settings()


def test_toml_file_sets_values(tmp_path: Path) -> None:
    """Keys in the TOML file override the defaults, with TOML types converted."""
    path = _write(
        tmp_path,
        'database_url = "postgresql://u:pw@db/homing"\n'
        "port = 9000\n"
        "request_timeout = 3\n"
        "retry_schedule = [1, 10, 100]\n"
        'bootstrap_token = "tok"\n'
        'public_url = "https://hooks.example.com/"\n',
    )
    settings = load_settings({}, path)
    assert settings.database_url == "postgresql://u:pw@db/homing"
    assert settings.port == 9000
    assert settings.request_timeout == 3.0
    assert isinstance(settings.request_timeout, float)
    assert settings.retry_schedule == (1, 10, 100)
    assert isinstance(settings.bootstrap_token, Secret)
    assert settings.bootstrap_token.reveal() == "tok"
    assert settings.base_url == "https://hooks.example.com"
    assert settings.host == "127.0.0.1"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """HOMING_* variables win over the same keys in the file; other file keys stay."""
    path = _write(tmp_path, 'port = 9000\nhost = "0.0.0.0"\n')
    settings = load_settings({"HOMING_PORT": "9100", "HOMING_LOG_LEVEL": "debug"}, str(path))
    assert settings.port == 9100
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "debug"


def test_retry_schedule_from_environment_is_a_tuple_of_ints() -> None:
    """HOMING_RETRY_SCHEDULE "1,2,3" (spaces allowed) becomes (1, 2, 3)."""
    assert load_settings({"HOMING_RETRY_SCHEDULE": "1,2,3"}).retry_schedule == (1, 2, 3)
    assert load_settings({"HOMING_RETRY_SCHEDULE": " 1, 2 ,3 "}).retry_schedule == (1, 2, 3)


def test_empty_bootstrap_token_means_none() -> None:
    """An empty HOMING_BOOTSTRAP_TOKEN leaves the token unset."""
    assert load_settings({"HOMING_BOOTSTRAP_TOKEN": ""}).bootstrap_token is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOMING_PORT", "abc"),
        ("HOMING_PORT", ""),
        ("HOMING_PORT", "0"),
        ("HOMING_PORT", "65536"),
        ("HOMING_PORT", "8080.5"),
        ("HOMING_REQUEST_TIMEOUT", "0"),
        ("HOMING_REQUEST_TIMEOUT", "-1"),
        ("HOMING_REQUEST_TIMEOUT", "fast"),
        ("HOMING_RETRY_JITTER", "1"),
        ("HOMING_RETRY_JITTER", "-0.1"),
        ("HOMING_RETRY_SCHEDULE", "1,-2"),
        ("HOMING_RETRY_SCHEDULE", "1,two"),
        ("HOMING_MAX_BODY_BYTES", "1023"),
        ("HOMING_DATABASE_URL", "mysql://db/homing"),
        ("HOMING_DATABASE_URL", "homing.sqlite3"),
    ],
)
def test_bad_environment_values_raise_config_error(name: str, value: str) -> None:
    """Values that cannot be converted or fail validation raise ConfigError."""
    with pytest.raises(ConfigError):
        load_settings({name: value})


def test_bad_file_value_raises_config_error(tmp_path: Path) -> None:
    """A wrongly typed value in the file raises ConfigError naming the key."""
    with pytest.raises(ConfigError, match="port"):
        load_settings({}, _write(tmp_path, 'port = "http"\n'))


def test_unknown_file_key_raises_config_error(tmp_path: Path) -> None:
    """A key that is not a setting (a typo) is refused, and named in the message."""
    with pytest.raises(ConfigError, match="prot"):
        load_settings({}, _write(tmp_path, "prot = 9000\n"))


def test_unreadable_or_invalid_file_raises_config_error(tmp_path: Path) -> None:
    """A missing file or invalid TOML raises ConfigError, not OSError or TOMLDecodeError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, _write(tmp_path, "port = \n"))


def test_bootstrap_token_never_prints() -> None:
    """The bootstrap token shows as *** in repr(settings), str(settings) and str(token)."""
    settings = load_settings({"HOMING_BOOTSTRAP_TOKEN": "hunter2"})
    assert settings.bootstrap_token is not None
    assert settings.bootstrap_token.reveal() == "hunter2"
    assert str(settings.bootstrap_token) == "***"
    assert f"{settings.bootstrap_token}" == "***"
    assert repr(settings.bootstrap_token) == "Secret('***')"
    for text in (repr(settings), str(settings)):
        assert "hunter2" not in text
        assert "bootstrap_token=Secret('***')" in text


def test_database_password_is_redacted_in_repr() -> None:
    """repr(settings) hides the DSN password but keeps user, host and database."""
    settings = load_settings({"HOMING_DATABASE_URL": "postgresql://homing:s3cr3t@db:5432/homing"})
    assert settings.database_url == "postgresql://homing:s3cr3t@db:5432/homing"
    assert "s3cr3t" not in repr(settings)
    assert "database_url='postgresql://homing:***@db:5432/homing'" in repr(settings)


def test_redact_url_leaves_urls_without_password_alone() -> None:
    """URLs without a password are returned unchanged."""
    assert redact_url("sqlite:///homing.sqlite3") == "sqlite:///homing.sqlite3"
    assert redact_url("postgresql://homing@db/homing") == "postgresql://homing@db/homing"


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


# Regression tests for bugs found in review.


def test_non_scalar_file_value_raises_config_error(tmp_path: Path) -> None:
    """A list or table where a number is expected raises ConfigError, not TypeError."""
    with pytest.raises(ConfigError):
        load_settings({}, _write(tmp_path, "port = [8080]\n"))


def test_nan_request_timeout_raises_config_error() -> None:
    """HOMING_REQUEST_TIMEOUT=nan is refused."""
    with pytest.raises(ConfigError):
        load_settings({"HOMING_REQUEST_TIMEOUT": "nan"})


def test_query_string_password_is_redacted() -> None:
    """A libpq-style ?password= in the DSN is hidden in repr(settings)."""
    settings = load_settings(
        {"HOMING_DATABASE_URL": "postgresql://homing@db/homing?password=s3cr3t"}
    )
    assert "s3cr3t" not in repr(settings)
