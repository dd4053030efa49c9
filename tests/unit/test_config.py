"""Settings from the environment: defaults, parsing, and a clear error per bad value."""

from __future__ import annotations

import pytest

from jobsvc.config import KNOWN_VARIABLES, Settings, parse_duration
from jobsvc.errors import ConfigError


def test_defaults_match_the_design_table() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.storage_url == "file://./.jobsvc/results"
    assert (s.host, s.port, s.concurrency) == ("127.0.0.1", 8000, 16)
    assert (s.max_image_bytes, s.fetch_timeout, s.max_attempts) == (20971520, 30.0, 3)
    assert (s.allow_private_urls, s.verify_on_enqueue) == (False, True)
    assert (s.rescue_interval, s.shutdown_grace) == (15.0, 30.0)
    assert (s.retention, s.clean_interval) == (7 * 86400, 60.0)
    assert (s.tenant_max_queued, s.rate_limit) == (100000, 0.0)


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "JOBSVC_DATABASE_URL": "postgresql://u@h/db",
            "JOBSVC_STORAGE_URL": "s3://bucket/prefix",
            "JOBSVC_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "JOBSVC_PORT": "9001",
            "JOBSVC_CONCURRENCY": "64",
            "JOBSVC_ALLOW_PRIVATE_URLS": "TRUE",
            "JOBSVC_VERIFY_ON_ENQUEUE": "0",
            "JOBSVC_RESCUE_INTERVAL": "2.5",
            "JOBSVC_LOG_FORMAT": "JSON",
            "JOBSVC_TENANT_MAX_QUEUED": "0",
            "JOBSVC_RATE_LIMIT": "2.5",
        }
    )
    assert (s.tenant_max_queued, s.rate_limit) == (0, 2.5)
    assert s.database_url == "postgresql://u@h/db" and s.storage_url == "s3://bucket/prefix"
    assert (s.port, s.concurrency, s.allow_private_urls, s.verify_on_enqueue) == (9001, 64, True, False)
    assert s.rescue_interval == 2.5 and s.log_format == "json"


def test_flags_override_environment_and_defaults_apply_when_unset() -> None:
    env = {"JOBSVC_PORT": "9001"}
    assert Settings.from_env(env, port=7000).port == 7000
    assert Settings.from_env(env, defaults={"allow_private_urls": True}).allow_private_urls is True
    env_off = {"JOBSVC_ALLOW_PRIVATE_URLS": "false"}
    assert Settings.from_env(env_off, defaults={"allow_private_urls": True}).allow_private_urls is False


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("JOBSVC_PORT", "eighty", "integer between 0 and 65535"),
        ("JOBSVC_PORT", "70000", "integer between 0 and 65535"),
        ("JOBSVC_CONCURRENCY", "0", "integer between 1 and 1000"),
        ("JOBSVC_MAX_ATTEMPTS", "11", "integer between 1 and 10"),
        ("JOBSVC_FETCH_TIMEOUT", "nan", "number of seconds"),
        ("JOBSVC_RESCUE_INTERVAL", "-1", "number of seconds"),
        ("JOBSVC_ALLOW_PRIVATE_URLS", "maybe", "true or false"),
        ("JOBSVC_STORAGE_URL", "ftp://x", "s3://bucket"),
        ("JOBSVC_STORAGE_URL", "s3://", "s3://bucket"),
        ("JOBSVC_S3_ENDPOINT_URL", "minio:9000", "http(s) URL"),
        ("JOBSVC_LOG_FORMAT", "xml", "text, json"),
        ("JOBSVC_RETENTION", "7", "such as 7d, 12h, 30m or 45s, or 0"),
        ("JOBSVC_RETENTION", "1w", "such as 7d, 12h, 30m or 45s, or 0"),
        ("JOBSVC_RETENTION", "-1d", "such as 7d, 12h, 30m or 45s, or 0"),
        ("JOBSVC_RETENTION", "0s", "above 0"),
        ("JOBSVC_CLEAN_INTERVAL", "soon", "number of seconds"),
        ("JOBSVC_TENANT_MAX_QUEUED", "-1", "integer between 0 and 1000000000"),
        ("JOBSVC_TENANT_MAX_QUEUED", "lots", "integer between 0 and 1000000000"),
        ("JOBSVC_RATE_LIMIT", "-5", "number between 0.0 and 1000000.0"),
        ("JOBSVC_RATE_LIMIT", "inf", "number between 0.0 and 1000000.0"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_accepted(var: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({var: value})
    assert var in str(info.value) and says in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), ("0", 0), (" 1.5H ", 5400)],
)
def test_retention_durations(value: str, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert Settings.from_env({"JOBSVC_RETENTION": value}).retention == seconds


def test_database_url_is_required_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="jobsvc dev"):
        Settings.from_env({}).require_database_url()


def test_known_variables_cover_the_design_table() -> None:
    design = {
        "JOBSVC_DATABASE_URL", "JOBSVC_STORAGE_URL", "JOBSVC_S3_ENDPOINT_URL", "JOBSVC_HOST",
        "JOBSVC_PORT", "JOBSVC_CONCURRENCY", "JOBSVC_MAX_IMAGE_BYTES", "JOBSVC_FETCH_TIMEOUT",
        "JOBSVC_MAX_ATTEMPTS", "JOBSVC_ALLOW_PRIVATE_URLS", "JOBSVC_VERIFY_ON_ENQUEUE",
        "JOBSVC_RESCUE_INTERVAL", "JOBSVC_SHUTDOWN_GRACE", "JOBSVC_TEST_DATABASE_URL",
    }  # fmt: skip
    assert design <= KNOWN_VARIABLES
