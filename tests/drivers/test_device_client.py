"""The device client keeps cookies as httpx's client does; it only skips the
cookie parser for answers that set none."""

from __future__ import annotations

import httpx

from certfleet.drivers.netstream import DeviceClient


def _answer(request: httpx.Request, headers: list[tuple[str, str]]) -> httpx.Response:
    return httpx.Response(200, headers=headers, content=b"{}", request=request)


def test_a_cookie_set_by_the_device_goes_back_with_the_next_request() -> None:
    client = DeviceClient(base_url="https://sbc.example.com/api/v1")
    first = client.build_request("GET", "/status")
    client.cookies.extract_cookies(_answer(first, [("Content-Type", "application/json")]))
    assert not client.cookies
    client.cookies.extract_cookies(
        _answer(first, [("Set-Cookie", "session=abc123; Path=/; Secure; HttpOnly")]))
    assert client.cookies.get("session") == "abc123"
    following = client.build_request("GET", "/files/ini")
    assert following.headers["cookie"] == "session=abc123"


def test_cookies_given_to_the_client_are_kept() -> None:
    client = DeviceClient(cookies={"lang": "en"})
    assert client.cookies.get("lang") == "en"
    client.cookies = {"lang": "de"}
    assert client.build_request("GET", "https://sbc.example.com/").headers["cookie"] == "lang=de"
