"""Where a job may connect: outbound URLs checked against the operator's host list (torch-free).

A config that comes through the API names URLs (a remote reward server, a reward's `server`,
`tracking.mlflow_uri`); the worker then connects there holding the studio's network position and,
with a secret reference, a credential. So every such URL must name a host the operator listed
(TREEGRPO_OUTBOUND_HOSTS), checked at submit and again in the worker, and the worker resolves
the name right before it connects and refuses link-local and cloud-metadata addresses, whatever
the list says (a name an operator trusts may still resolve there, or be re-pointed later).

Host entries (the operator's list, and a secret's `--host`):

    reward:8100        that host on that port only
    reward             that host on the scheme's default port only (80 for http, 443 for https)
    reward:*           that host on any port (a loopback entry like this opens every local
                       service - Postgres, Redis, the API itself - to jobs: avoid it)
    [::1]:8100         an IPv6 address in brackets

Names compare case-insensitively, addresses by value (127.0.0.1 is not `localhost`: list both
if both are used). The core reads no environment: the worker installs its lists with
`install(hosts)`, and the checks of the point of use (`pinned_target`) apply only then, so
`treegrpo train` on one's own machine stays free.

    rules = parse_hosts("reward:8100,127.0.0.1:8100")
    check_url("reward_options.remote.url", "http://reward:8100/score", rules)
    address, port = checked_address("http://reward:8100/score", rules)   # DNS, then the check
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from treegrpo.errors import ConfigError

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1
RULE = "outbound rule"

# Cloud metadata endpoints: AWS/GCP/Azure/OpenStack (169.254.169.254, inside link-local anyway),
# AWS's IPv6 one, Alibaba's, and Oracle's older one. They hand out the machine's credentials to
# anyone who asks from inside, so no list may open them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})


class EgressRefused(RuntimeError):
    """A connection the outbound rule forbids, found in the worker right before connecting.
    Not an OSError: no retry loop or handler of connection errors may take it for one."""


@dataclass(frozen=True)
class HostRule:
    """One allowed destination: a lower-case name or an address, and a port (None: the
    scheme's default port; ANY_PORT: any)."""

    host: str
    port: int | None

    def matches(self, host: str, port: int, scheme: str) -> bool:
        if not _same_host(self.host, host):
            return False
        if self.port == ANY_PORT:
            return True
        return port == (DEFAULT_PORTS[scheme] if self.port is None else self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is None:
            return host
        return f"{host}:{'*' if self.port == ANY_PORT else self.port}"


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")


def parse_host(entry: str) -> HostRule:
    """`host`, `host:port`, `host:*`, `[v6]`, `[v6]:port`; a ValueError says what is wrong."""
    text = entry.strip()
    if not text or "/" in text or "@" in text or any(c.isspace() for c in text):
        raise ValueError(f"{entry!r} is not a host entry (host, host:port or host:*)")
    port_text: str | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected [address]:port")
            port_text = rest[1:]
        ipaddress.IPv6Address(host)  # a ValueError names a bad address
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        host = str(ipaddress.IPv6Address(text))  # a bare IPv6 address: no port
    else:
        host = text
    if not host:
        raise ValueError(f"{entry!r} has no host")
    port: int | None = None
    if port_text == "*":
        port = ANY_PORT
    elif port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r}: the port must be 1..65535 or *")
        port = int(port_text)
    return HostRule(host.lower().rstrip("."), port)


def parse_hosts(text: str | Iterable[str]) -> tuple[HostRule, ...]:
    """A comma-separated list (or an iterable) of entries; empty entries are skipped."""
    entries = text.split(",") if isinstance(text, str) else list(text)
    return tuple(parse_host(entry) for entry in entries if entry.strip())


def shown(rules: Sequence[HostRule]) -> str:
    return ", ".join(str(rule) for rule in rules) or "none"


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no job may connect to `address`, or None. IPv4 inside IPv6 (::ffff:a.b.c.d) is
    judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_link_local:
        return f"{address} is link-local (169.254.0.0/16, fe80::/10)"
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a destination address"
    return None


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL's host spells, also in the forms the C resolver accepts without DNS
    (2852039166, 0xa9.0xfe.0xa9.0xfe, 169.254.43518), or None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def split_url(field: str, url: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of an http(s) URL with a host, or a ConfigError naming `field`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(field, f"not a valid URL ({exc})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(
            field,
            f"{RULE}: only http:// and https:// URLs with a host may be used here, got "
            f"{parts.scheme or 'no'} scheme",
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            field,
            "a URL may not carry user:password@ (every API reader would see it): name the key "
            "with api_key_secret instead",
        )
    return parts, parts.hostname, port if port is not None else DEFAULT_PORTS[parts.scheme]


def check_url(field: str, url: str, rules: Sequence[HostRule]) -> tuple[str, int]:
    """(host, port) of `url` if the rule allows it, else a ConfigError naming `field` and the
    rule. Names are not resolved here (the worker resolves them right before connecting)."""
    parts, host, port = split_url(field, url)
    literal = _literal_address(host)
    if literal is not None:
        problem = address_problem(literal)
        if problem is not None:
            raise ConfigError(field, f"{RULE}: {problem}; no job may connect there")
        if literal.version == 4 and str(literal) != host:
            raise ConfigError(field, f"{RULE}: write the address {literal} plainly, got {host!r}")
    elif host.lower().rstrip(".") in METADATA_NAMES:
        raise ConfigError(field, f"{RULE}: {host} is a cloud metadata service")
    if not any(rule.matches(host, port, parts.scheme) for rule in rules):
        raise ConfigError(
            field,
            f"{RULE}: {host}:{port} is not a host the operator lets jobs connect to "
            f"(TREEGRPO_OUTBOUND_HOSTS: {shown(rules)})",
        )
    return host, port


def checked_address(url: str, rules: Sequence[HostRule], field: str = "url") -> tuple[str, int]:
    """Resolve the URL's host now and check every address it has; (the address to connect to,
    port). Connecting to that very address (not the name again) leaves no room for a DNS
    answer that changes between the check and the connection."""
    try:
        host, port = check_url(field, url, rules)
    except ConfigError as exc:
        raise EgressRefused(str(exc)) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise EgressRefused(f"{field}: cannot resolve {host!r} ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            raise EgressRefused(
                f"{field}: {RULE}: {host} resolves to {problem}; no job may connect there"
            )
    if not addresses:
        raise EgressRefused(f"{field}: {host!r} has no address")
    return str(addresses[0]), port


# -- the worker's installed list -----------------------------------------------------------------

_installed: tuple[HostRule, ...] | None = None


def install(rules: Sequence[HostRule] | None) -> None:
    """Make `rules` this process's outbound rule (None: no rule, as on one's own machine)."""
    global _installed
    _installed = None if rules is None else tuple(rules)


def installed() -> tuple[HostRule, ...] | None:
    return _installed


def pinned_target(url: str, field: str) -> tuple[str, dict[str, str], dict[str, object]]:
    """(URL to request, headers, httpx request extensions): with a rule installed, the URL
    with its host replaced by the checked address, the original Host header, and the name for
    TLS (SNI and certificate checks still see the name); without one, the URL as it is."""
    rules = installed()
    if rules is None:
        return url, {}, {}
    address, port = checked_address(url, rules, field)
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{literal}:{port}").geturl()
    host = parts.hostname or ""
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{parts.port}"
    extensions: dict[str, object] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return target, {"Host": host_header}, extensions
