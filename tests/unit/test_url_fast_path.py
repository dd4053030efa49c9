"""The fast paths of `check_image_url` and `check_file_name` give exactly the thorough
checks' verdicts: the same accepted value, or the same error with the same sentence,
for generated URLs and names, plain and hostile alike."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobsvc.errors import InvalidRequest
from jobsvc.model import (
    _PLAIN_FILE_NAME,
    _PLAIN_URL,
    _check_file_name_thoroughly,
    _check_image_url_thoroughly,
    check_file_name,
    check_image_url,
    image_url_and_file,
    result_file_from_url,
)

EXAMPLES = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _verdict(check: Callable[[str], object], text: str) -> tuple[str, Any]:
    try:
        return ("ok", check(text))
    except (InvalidRequest, ValueError) as exc:  # urlsplit's own, for a URL check_image_url refuses
        return (type(exc).__name__, str(exc))


# ------------------------------------------------------------------ URL pieces

_LABEL_CHARS = string.ascii_letters + string.digits + "-"
_octet = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["256", "999", "00", "01", "010", "0x7f", "1e1", "-1", ""]),
)
_ipv4 = st.lists(_octet, min_size=1, max_size=5).map(".".join)
_label = st.one_of(
    st.text(_LABEL_CHARS, min_size=0, max_size=8),
    st.text(_LABEL_CHARS, min_size=60, max_size=66),
    st.sampled_from(
        ["xn--", "XN--wgv71a", "xn--zz", "xn--wgv71a", "日本", "ß", "\uff21\uff22", "a_b", "a%41", "-"]
    ),
)
_name = st.tuples(
    st.lists(_label, min_size=1, max_size=6).map(".".join),
    st.sampled_from(["", "."]),
).map("".join)
_long_name = st.integers(1, 4).flatmap(
    lambda n: (
        st.lists(st.text(_LABEL_CHARS, min_size=58, max_size=63), min_size=n, max_size=n)
        .map(".".join)
        .flatmap(
            lambda base: st.sampled_from([base + "x", base + ".test", base + ".test.", base[:253] + "z"])
        )
    )
)
_ipv6 = st.sampled_from(["[::1]", "[2001:db8::1]", "[v1.x]", "[::1", "::1]", "[fe80::1%25eth0]", "[1.2.3.4]"])
_host = st.one_of(_name, _ipv4, _long_name, _ipv6, st.text(max_size=12))
_port = st.one_of(
    st.just(""),
    st.integers(0, 70000).map(lambda p: f":{p}"),
    st.sampled_from([":", ":080", ":0", ":65535", ":65536", ":99999", ":\uff18\uff10", ":1a", ":+1", ": 1"]),
)
_userinfo = st.sampled_from(["", "", "", "u@", "u:p@", ":@", "@", "a@b@"])
_scheme = st.sampled_from(
    ["http://", "https://", "HTTP://", "Https://", "ftp://", "http:/", "http:", "", "//"]
)
_PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?#"
_rest = st.one_of(
    st.just(""),
    st.text(_PATH_CHARS, max_size=30).map(lambda p: "/" + p),
    st.text(_PATH_CHARS, max_size=30).map(lambda p: "?" + p),
    st.text(_PATH_CHARS, max_size=30).map(lambda p: "#" + p),
    st.text(max_size=20).map(lambda p: "/" + p),  # anything: controls, spaces, non-ASCII
    st.sampled_from(["/a.png\x00", "/a b.png", "/%zz.png", "/%FF.png", "/\\a.png", "/[x]", "/a\x7f"]),
)
_urls = st.tuples(_scheme, _userinfo, _host, _port, _rest).map("".join)


@EXAMPLES
@given(_urls)
@example("http://h/a.png")
@example("http://127.0.0.1:8999/img/a.png")
@example("http://1.2.3.4a/a.png")
@example("http://1.2.3.a/a.png")
@example("http://a.1/a.png")
@example("http://256.1.1.1/a.png")
@example("http://01.2.3.4/a.png")
@example("http://" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + "/a.png")
@example("http://" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62 + "/a.png")
@example("http://" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + "./a.png")
@example("http://h/" + "a" * 2040)
@example("http://h/" + "a" * 2039)
@example("https://a-.-b/x.png?y#z#w")
def test_check_image_url_gives_the_thorough_verdict(url: str) -> None:
    assert _verdict(check_image_url, url) == _verdict(_check_image_url_thoroughly, url)


_PLAIN_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?#"
_plain_urls = st.tuples(
    st.sampled_from(["http://", "https://"]),
    st.one_of(_name, _ipv4, _long_name),
    _port,
    st.one_of(st.just(""), st.text(_PLAIN_CHARS, max_size=40).map(lambda p: "/" + p)),
).map("".join)


@EXAMPLES
@given(_plain_urls)
def test_urls_the_fast_path_takes_pass_the_thorough_check(url: str) -> None:
    """URLs built to look like the common case, many of which the fast path takes."""
    assert _verdict(check_image_url, url) == _verdict(_check_image_url_thoroughly, url)


def _result_file_thoroughly(url: str) -> str:
    """`result_file_from_url` as it was before its fast path: urlsplit, always."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    try:
        name = unquote(segment, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("the URL's file name is not valid UTF-8 once decoded") from None
    return _check_file_name_thoroughly(name)


@EXAMPLES
@given(st.one_of(_urls, _plain_urls))
@example("http://h")
@example("http://h?a/b.png")
@example("http://h#/b.png")
@example("http://h/a/?b.png")
@example("http://h/a/%2e%2e")
@example("http://h/a/%FF.png")
@example("http://h/a/%zz.png")
@example("http://h/a%2Fb.png")
def test_result_file_from_url_gives_the_thorough_verdict(url: str) -> None:
    assert _verdict(result_file_from_url, url) == _verdict(_result_file_thoroughly, url)


def _url_then_file(url: str) -> tuple[str, str]:
    """What an enqueue's judgement did before `image_url_and_file`: the two checks in turn."""
    checked = check_image_url(url)
    return checked, result_file_from_url(checked)


@EXAMPLES
@given(st.one_of(_urls, _plain_urls))
@example("http://127.0.0.1:8999/img/0123abcd.png")
@example("http://h")
@example("http://h/a/%FF.png")
@example("http://h/a/..")
@example("http://" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62 + "/a.png")
@example("ftp://h/a.png")
def test_image_url_and_file_gives_both_checks_verdicts(url: str) -> None:
    assert _verdict(image_url_and_file, url) == _verdict(_url_then_file, url)


def test_the_fast_path_takes_the_common_urls() -> None:
    for url in (
        "http://127.0.0.1:8999/img/0123abcd.png",
        "https://bucket.s3.eu-west-1.amazonaws.com/a/b/result_2.png?X-Amz-Expires=60&X-Amz-Signature=ab%2F",
        "http://minio:9000/bucket/a.png",
        "http://h.test./a.png",
    ):
        assert _PLAIN_URL.fullmatch(url) is not None
        assert check_image_url(url) == _check_image_url_thoroughly(url) == url


# ------------------------------------------------------------------ file names

_names = st.one_of(
    st.text(string.printable, max_size=20),
    st.text(max_size=20),
    st.text(string.ascii_letters + " ./\\", max_size=6),
    st.integers(250, 260).flatmap(lambda n: st.sampled_from(["a" * n, "é" * (n // 2), "a" * (n - 1) + " "])),
    st.sampled_from(["", ".", "..", "...", " a", "a ", "a\u200b", "a\u2028b", "\ud800", "a\x85", "a\xa0"]),
)


@EXAMPLES
@given(_names)
def test_check_file_name_gives_the_thorough_verdict(name: str) -> None:
    assert _verdict(check_file_name, name) == _verdict(_check_file_name_thoroughly, name)


def test_the_fast_path_takes_plain_names() -> None:
    for name in ("a.png", "result_12.png", "a b.png", "~x!.(1)", "a" * 255):
        assert _PLAIN_FILE_NAME.fullmatch(name) is not None
        assert check_file_name(name) == name
