"""DNS names by registered domain (pure): what the device engine groups query names under, and
the DNS allow-list (alerts.dns_allow_domains), parsed here for config.py and matched by
netwatchd/alerting/dns_anomalies.py.

The registered domain (eTLD+1) is approximated without the Public Suffix List: the last two
labels, or the last three when the last is a two-letter country code and the one before it is
one of the generic second levels countries register under (co.uk, com.au, ne.jp). The list is
closed on purpose: a rule such as "any second level of three letters or fewer" would make
x.abc.io its own registered domain, and a tunnel under abc.io would then spread its names over
as many domains as it sends queries. What the approximation gets wrong splits or merges
domains under the few suffixes it does not know (a name under a city.state.us zone counts under
state.us): a merge can only add counts to one domain, a split is bounded by the per-device
domain budget, whose overflow is counted.
"""
from __future__ import annotations

import re
from typing import Iterable

# Second levels under a country code where names are registered one level down (co.uk, com.au,
# or.jp ...): the common ones of the Public Suffix List's ccTLD sections.
COUNTRY_SECOND_LEVELS = frozenset({
    "ac", "co", "com", "edu", "gov", "net", "org", "mil", "ne", "or", "go", "gob", "nic", "ltd", "plc",
    "sch", "nom", "gen", "biz", "info", "gv", "lg", "ad", "ed", "gr", "in", "res", "sld",
})
DOMAIN_FORMS = "a domain name (example.com): it and every name under it"
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def registered_domain(name: str) -> str:
    """The registered domain `name` is under (eTLD+1, approximated: see the module's docstring),
    lowercased; a name with fewer labels is itself."""
    labels = name.lower().rstrip(".").split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in COUNTRY_SECOND_LEVELS:
        keep = 3
    return ".".join(labels[-keep:])


def parse_allow_domain(text: str) -> str:
    """An allow-list entry: a registered domain (example.com) or a broader one (arpa, local),
    lowercased; ValueError when it is not, or when it is below its registered domain (matching
    is by registered domain, so avqs.mcafee.com could never match: name mcafee.com)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not {DOMAIN_FORMS}")
    domain = text.strip().lower().rstrip(".")
    labels = domain.split(".")
    if not domain or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not {DOMAIN_FORMS}")
    registered = registered_domain(domain)
    if registered != domain:
        raise ValueError(f"{text!r} is below its registered domain {registered!r}: name that")
    return domain


def domain_allowed(domain: str, allowed: Iterable[str]) -> bool:
    """Whether registered domain `domain` is an entry of `allowed` or under one."""
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if domain == entry or domain.endswith("." + entry):
            return True
    return False
