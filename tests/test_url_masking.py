"""Credentials written into forwarder URLs never show: not at /status/config (unauthenticated), not in
the log, not in configuration errors. The userinfo and secret-looking query values become <secret>;
the rest of the URL stays as written, so it still says where traffic goes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from distributor.common.url_masking import mask_url, mask_urls_in
from distributor.config import ConfigError, load_config
from distributor.forwarding.config import ForwarderConfig, RetryConfig, TlsConfig
from tests.support.config_files import write_config_files
from tests.support.otlp import sample_request
from tests.support.polling import eventually
from tests.support.service import StartService, make_config, with_forwarders

CREDENTIALS = ("alice", "pa55word", "s3cret", "t0ken", "abc123")

MASKED = {
    "userinfo": ("http://alice:pa55word@backend:4318", "http://<secret>@backend:4318"),
    "user without password": ("https://alice@backend/v1/traces", "https://<secret>@backend/v1/traces"),
    "secret-looking query names, any case": (
        "https://backend/v1/traces?api_key=s3cret&Access_Token=t0ken&region=eu&X-Amz-Signature=abc123",
        "https://backend/v1/traces?api_key=<secret>&Access_Token=<secret>&region=eu&X-Amz-Signature=<secret>",
    ),
    "each listed name": (
        "http://b/?key=1&token=2&secret=3&password=4&auth=5&signature=6&sig=7&credential=8&page=9",
        "http://b/?key=<secret>&token=<secret>&secret=<secret>&password=<secret>&auth=<secret>"
        "&signature=<secret>&sig=<secret>&credential=<secret>&page=9",
    ),
    "an @ in the query is not userinfo": ("http://b?token=a@b#top", "http://b?token=<secret>#top"),
    "gRPC host:port with userinfo": ("alice:pa55word@backend:4317", "<secret>@backend:4317"),
    "nothing secret is kept as written": (
        "http://backend:4318/a%20b?flag&x=1",
        "http://backend:4318/a%20b?flag&x=1",
    ),
    "bare host:port": ("backend:4317", "backend:4317"),
}


@pytest.mark.parametrize(("url", "shown"), MASKED.values(), ids=MASKED.keys())
def test_url_credentials_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert mask_url(shown) == shown, "masking twice changes nothing"


def test_urls_inside_a_message_are_masked() -> None:
    message = "InvalidUrlClientError http://alice:pa55word@backend:99999/v1/traces?api_key=s3cret (twice)"
    assert mask_urls_in(message) == (
        "InvalidUrlClientError http://<secret>@backend:99999/v1/traces?api_key=<secret> (twice)"
    )


# Port 99999 makes aiohttp refuse the URL with an error that quotes it whole.
BASE_URL = "http://alice:pa55word@127.0.0.1:99999"
TRACES_URL = "http://127.0.0.1:99999/v1/traces?api_key=s3cret&access_token=t0ken"
GRPC_TARGET = "alice:pa55word@127.0.0.1:1"  # gRPC cannot resolve it, and says so quoting it


def forwarders() -> tuple[ForwarderConfig, ...]:
    no_retry = RetryConfig(enabled=False)
    return (
        ForwarderConfig(name="base", backend="otlphttp", endpoint=BASE_URL, retry=no_retry),
        ForwarderConfig(
            name="full", backend="otlphttp", endpoint="", traces_endpoint=TRACES_URL, retry=no_retry
        ),
        ForwarderConfig(
            name="grpc",
            backend="otlpgrpc",
            endpoint=GRPC_TARGET,
            tls=TlsConfig(insecure=True),
            retry=no_retry,
        ),
    )


async def test_status_config_masks_credentials_in_forwarder_urls(start_service: StartService) -> None:
    running = await start_service(with_forwarders(make_config(), *forwarders()))
    for query in ("", "?mode=diff"):
        async with running.session.get(running.server_url + "/status/config" + query) as response:
            assert response.status == 200
            text = await response.text()
        assert not [secret for secret in CREDENTIALS if secret in text]
        base, full, grpc = yaml.safe_load(text)["distributor"]["forwarders"]
        assert base["otlphttp"]["endpoint"] == "http://<secret>@127.0.0.1:99999"
        assert full["otlphttp"]["traces_endpoint"] == (
            "http://127.0.0.1:99999/v1/traces?api_key=<secret>&access_token=<secret>"
        )
        assert grpc["otlpgrpc"]["endpoint"] == "<secret>@127.0.0.1:1"


async def test_delivery_failures_log_forwarder_urls_masked(
    start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="distributor")
    running = await start_service(with_forwarders(make_config(), *forwarders()))
    answer = await running.post(sample_request().SerializeToString())
    assert answer.status == 200

    def giving_up() -> list[str]:
        return [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]

    messages = await eventually(lambda: len(giving_up()) == 3 and giving_up(), "every forwarder giving up")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [secret for secret in CREDENTIALS if secret in logged]
    assert any("http://<secret>@127.0.0.1:99999/v1/traces" in message for message in messages)
    assert any("api_key=<secret>&access_token=<secret>" in message for message in messages)
    assert any("<secret>@127.0.0.1:1" in message for message in messages)


def test_a_config_error_quotes_the_url_masked(tmp_path: Path) -> None:
    document = {
        "distributor": {
            "forwarders": [
                {
                    "name": "b",
                    "backend": "otlphttp",
                    "otlphttp": {"endpoint": "ftp://alice:pa55word@b/?key=s3cret"},
                }
            ]
        }
    }
    with pytest.raises(ConfigError) as raised:
        load_config(write_config_files(tmp_path, document))
    assert "got 'ftp://<secret>@b/?key=<secret>'" in str(raised.value)
    assert not [secret for secret in CREDENTIALS if secret in str(raised.value)]
