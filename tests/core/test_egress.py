"""The outbound rule (treegrpo/egress.py): host entries, URL checks, and the worker's check of
every resolved address right before it connects (name resolution stubbed: nothing leaves)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from treegrpo import egress
from treegrpo.config import ConfigError
from treegrpo.egress import EgressRefused, HostRule, check_url, parse_host, parse_hosts

RULES = parse_hosts("reward:8100,127.0.0.1:8100,web,[::1]:9000,any.test:*")


def test_host_entries_parse_ports_and_brackets() -> None:
    assert parse_host("Reward:8100") == HostRule("reward", 8100)
    assert parse_host("web") == HostRule("web", None)
    assert parse_host("any.test:*") == HostRule("any.test", egress.ANY_PORT)
    assert parse_host("[::1]:9000") == HostRule("::1", 9000)
    assert [str(rule) for rule in RULES] == [
        "reward:8100",
        "127.0.0.1:8100",
        "web",
        "[::1]:9000",
        "any.test:*",
    ]
    for bad in ("http://x", "x:0", "x:99999", "x:port", "a b", "user@x", "[::1]x"):
        with pytest.raises(ValueError):
            parse_host(bad)


@pytest.mark.parametrize(
    "url",
    [
        "http://reward:8100/score",
        "http://REWARD:8100/",
        "http://127.0.0.1:8100/score",
        "http://web/",  # a bare entry: the scheme's default port
        "https://web/",
        "http://[::1]:9000/",
        "http://any.test:5432/",
    ],
)
def test_listed_hosts_pass(url: str) -> None:
    check_url("f", url, RULES)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://reward:8101/", "not a host the operator lets jobs connect to"),
        ("http://web:8080/", "not a host the operator lets jobs connect to"),
        ("http://localhost:8100/", "not a host"),  # names and addresses are separate entries
        ("http://127.0.0.1:5432/", "not a host"),  # a loopback service port
        ("http://127.0.0.1:6379/", "not a host"),
        ("ftp://reward:8100/", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
        ("http://[fd00:ec2::254]/", "cloud metadata address"),
        ("http://100.100.100.200/", "cloud metadata address"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata address"),
        ("http://2852039166/", "169.254.169.254 is a cloud metadata address"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254 is a cloud metadata address"),
        ("http://127.1:8100/", "write the address 127.0.0.1 plainly"),
        ("http://0.0.0.0:8100/", "not a destination address"),
        ("http://metadata.google.internal/", "cloud metadata service"),
        ("http://user:pw@reward:8100/", "may not carry user:password@"),
        ("http://reward:bad/", "not a valid URL"),
    ],
)
def test_other_destinations_are_refused_naming_the_field(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        check_url("reward_options.remote.url", url, RULES)
    assert caught.value.field == "reward_options.remote.url"


def _stub_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """getaddrinfo answers from a table; the names asked are recorded."""
    asked: list[str] = []
    real = socket.getaddrinfo  # the suite's loopback-only guard (tests/network_guard.py)

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_is_resolved_and_every_address_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = parse_hosts("reward:8100,imds.test:80,rebind.test:80")
    _stub_dns(
        monkeypatch,
        {
            "reward": ["10.0.0.7"],
            "imds.test": ["169.254.169.254"],
            "rebind.test": ["10.0.0.8", "169.254.169.254"],
        },
    )
    assert egress.checked_address("http://reward:8100/s", rules) == ("10.0.0.7", 8100)
    for url in ("http://imds.test/", "http://rebind.test/"):
        with pytest.raises(
            EgressRefused, match=r"resolves to 169\.254\.169\.254 is a cloud metadata"
        ):
            egress.checked_address(url, rules)
    with pytest.raises(EgressRefused, match="not a host the operator"):
        egress.checked_address("http://other:8100/", rules)


def test_the_installed_rule_pins_the_request_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _stub_dns(monkeypatch, {"reward": ["10.0.0.7"], "secure": ["10.0.0.9"]})
    try:
        egress.install(None)
        assert egress.pinned_target("http://reward:8100/s", "f") == ("http://reward:8100/s", {}, {})
        assert asked == []  # no rule (one's own machine): no lookup, the URL as written
        egress.install(parse_hosts("reward:8100,secure"))
        target, headers, extensions = egress.pinned_target("http://reward:8100/s?x=1", "f")
        assert (target, headers, extensions) == (
            "http://10.0.0.7:8100/s?x=1",
            {"Host": "reward:8100"},
            {},
        )
        target, headers, extensions = egress.pinned_target("https://secure/score", "f")
        assert target == "https://10.0.0.9:443/score"
        assert headers == {"Host": "secure"} and extensions == {"sni_hostname": "secure"}
    finally:
        egress.install(None)


def test_the_remote_reward_connects_to_the_checked_address_with_the_names_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that resolves to loopback (stubbed), a listener there: the request reaches the
    checked address, and the server still sees the name the URL gave."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import torch

    from treegrpo.rewards.remote import remote_factory

    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hosts.append(self.headers["Host"])
            prompts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompts"]
            body = json.dumps({"scores": [1.0] * len(prompts)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    asked = _stub_dns(monkeypatch, {"reward.test": ["127.0.0.1"], "imds.test": ["169.254.169.254"]})
    try:
        egress.install(parse_hosts(f"reward.test:{port},imds.test:{port}"))
        fn = remote_factory(torch.device("cpu"), {"url": f"http://reward.test:{port}/score"})
        assert fn(torch.zeros(2, 1, 8, 8), ["a", "b"]).tolist() == [1.0, 1.0]
        assert hosts == [f"reward.test:{port}"] and asked.count("reward.test") == 1
        refused = remote_factory(torch.device("cpu"), {"url": f"http://imds.test:{port}/s"})
        with pytest.raises(EgressRefused, match="cloud metadata"):
            refused(torch.zeros(1, 1, 8, 8), ["a"])
        assert len(hosts) == 1  # nothing was sent
    finally:
        egress.install(None)
        server.shutdown()


def test_mlflow_checks_its_server_before_its_client_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typing import cast

    from treegrpo.trackers.mlflow import MlflowTracker

    _stub_dns(monkeypatch, {"mlflow.test": ["169.254.169.254"]})
    try:
        egress.install(parse_hosts("mlflow.test:5000"))
        tracker = MlflowTracker("http://mlflow.test:5000", "treegrpo", "run")
        with pytest.raises(
            EgressRefused, match=r"mlflow_uri: outbound rule: mlflow\.test resolves"
        ):
            tracker.on_start(cast(Any, None))
        assert tracker.client is None
    finally:
        egress.install(None)
