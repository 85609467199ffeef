"""The sandbox URL receives the sandbox token and the read token: it is built only from the operator's
template and the Hub's subdomain of the session's own Space, and a subdomain that is not a DNS label
is refused (it could move the request to another host or path)."""

from __future__ import annotations

import pytest
from huggingface_hub import SpaceInfo
from pydantic import ValidationError

from sandbox_operator.config.sandbox_url import DEFAULT_TEMPLATE, sandbox_url
from sandbox_operator.config.settings import OperatorConfig
from sandbox_operator.hub.spaces import space_view

HOSTILE = [
    "evil.example",
    "evil.example/x",
    "x@evil.example",
    "x:8443",
    "a/../b",
    "x?y",
    "x#y",
    "x\n",
    " x",
    "-x",
    "x-",
    "a" * 64,
    "%2e%2e",
    "",
    None,
]


def test_the_hubs_app_address_is_the_default() -> None:
    assert OperatorConfig().sandbox_url_template == DEFAULT_TEMPLATE == "https://{subdomain}.hf.space"
    assert sandbox_url(DEFAULT_TEMPLATE, "alice-ags-1") == "https://alice-ags-1.hf.space"
    assert (
        sandbox_url("http://hub:8080/_sandbox/{subdomain}", "alice-ags-1")
        == "http://hub:8080/_sandbox/alice-ags-1"
    )


@pytest.mark.parametrize("subdomain", HOSTILE)
def test_a_subdomain_that_is_not_a_dns_label_addresses_nothing(subdomain: str | None) -> None:
    assert sandbox_url(DEFAULT_TEMPLATE, subdomain) is None


@pytest.mark.parametrize(
    "template",
    [
        "https://hf.space",  # no subdomain
        "https://{subdomain}.{subdomain}.hf.space",
        "https://{subdomain}.hf.space/{path}",
        "https://{subdomain}.hf.space?to={subdomain}",
        "https://{subdomain}.hf.space?x=1",
        "ftp://{subdomain}.hf.space",
        "{subdomain}",
    ],
)
def test_a_template_must_be_an_http_url_with_the_subdomain_once(template: str) -> None:
    with pytest.raises(ValidationError):
        OperatorConfig(sandbox_url_template=template)


def _info(subdomain: str, host: str) -> SpaceInfo:
    return SpaceInfo(id="alice/ags-1", private=True, subdomain=subdomain, host=host)  # type: ignore[no-untyped-call]


def test_the_view_ignores_the_hubs_host_and_a_hostile_subdomain() -> None:
    """Only the template and the subdomain make the address, never `host`."""
    good = space_view(
        _info("alice-ags-1", "https://evil.example"), "https://huggingface.co", DEFAULT_TEMPLATE
    )
    assert good.sandbox_url == "https://alice-ags-1.hf.space"
    hostile = space_view(
        _info("evil.example/x", "https://evil.example"), "https://huggingface.co", DEFAULT_TEMPLATE
    )
    assert hostile.sandbox_url is None
