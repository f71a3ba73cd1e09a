"""Where the notifier refuses to connect (app/notifier/service.py): every address
infra.webhooks.refusal refuses, checked when it connects, not only when the
subscription's URL was checked (DNS may answer differently later)."""

from __future__ import annotations

import asyncio

import pytest

from app.notifier.service import PublicResolver, literal_refusal


def test_a_name_resolving_to_loopback_is_refused_at_connection_time() -> None:
    async def resolve() -> None:
        await PublicResolver().resolve("localhost", 80)

    with pytest.raises(OSError, match="loopback"):
        asyncio.run(resolve())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:192.168.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
    ],
)
def test_ip_literals_that_are_not_public_are_refused(url: str, kind: str) -> None:
    why = literal_refusal(url)
    assert why is not None and kind in why


@pytest.mark.parametrize(
    "url", ["https://93.184.216.34/hook", "https://hooks.example.com/x"]
)
def test_public_literals_and_host_names_pass_the_literal_check(url: str) -> None:
    assert literal_refusal(url) is None
