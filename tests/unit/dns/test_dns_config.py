"""The dns config: what `pyvs check` refuses, with the key that is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pyvs.config.schema import Config


def cfg(listener: dict[str, Any], backends: list[dict[str, Any]] | None = None) -> Config:
    base = {"name": "dns", "mode": "dns", "bind": ["127.0.0.1:5353"]}
    return Config.model_validate({
        "listeners": [{**base, **listener}],
        "backends": backends if backends is not None else [
            {"name": "web", "servers": [{"name": "w1", "address": "127.0.0.1:80"}]}],
    })


def error(listener: dict[str, Any], backends: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(ValidationError) as exc:
        cfg(listener, backends)
    return str(exc.value)


def zone(*records: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "example.com", "records": list(records), **extra}]


def test_a_valid_listener() -> None:
    c = cfg({"zones": zone({"name": "www", "pool": "web"}, {"name": "mail", "type": "MX", "value": "10 mx"})})
    z = c.listeners[0].zones[0]
    assert z.name == "example.com." and z.ttl == 30.0 and z.records[0].policy == "all"


def test_dns_listener_needs_zones_and_takes_no_backend() -> None:
    assert "a dns listener needs zones" in error({})
    assert "takes zones, not backend" in error({"zones": zone(), "backend": "web"})
    with pytest.raises(ValidationError, match="zones and dns are for dns listeners"):
        Config.model_validate({"listeners": [{"name": "h", "bind": ["127.0.0.1:1"], "backend": "web",
                                              "zones": zone()}],
                               "backends": [{"name": "web", "servers": [{"name": "a", "address": "1.2.3.4:80"}]}]})


def test_record_kinds() -> None:
    assert "exactly one of type (static), pool or sites" in error({"zones": zone({"name": "www"})})
    assert "exactly one of" in error({"zones": zone({"name": "www", "pool": "web", "type": "A", "value": "1.2.3.4"})})
    assert "needs a value" in error({"zones": zone({"name": "www", "type": "A"})})
    assert "value '300.1.1.1'" in error({"zones": zone({"name": "www", "type": "A", "value": "300.1.1.1"})})
    assert "relative to the zone" in error({"zones": zone({"name": "www.example.com.", "pool": "web"})})
    assert "not a valid label" in error({"zones": zone({"name": "a.*", "pool": "web"})})
    assert "policy subnet needs regions" in error({"zones": zone({"name": "www", "pool": "web", "policy": "subnet"})})
    assert "needs a fallback backend" in error({"zones": zone({"name": "www", "pool": "web", "all_down": "fallback"})})


def test_cname_rules() -> None:
    assert "has a CNAME and other records" in error({"zones": zone(
        {"name": "www", "type": "CNAME", "value": "x"}, {"name": "www", "type": "TXT", "value": "t"})})
    assert "apex cannot be a CNAME" in error({"zones": zone({"name": "@", "type": "CNAME", "value": "x."})})


def test_references_name_the_key() -> None:
    msg = error({"zones": zone({"name": "www", "pool": "nope"})})
    assert "listeners[0].zones[0].records[0].pool: no backend named 'nope'" in msg
    msg = error({"zones": zone({"name": "geo", "sites": ["mars"]})})
    assert "listeners[0].zones[0].records[0].sites: no site named 'mars'" in msg
    msg = error({"zones": zone({"name": "w", "pool": "web", "policy": "subnet", "regions": {"eu": ["zz"]}}),
                 "dns": {"regions": {"10.0.0.0/8": "eu"}}})
    assert "backend 'web' has no server 'zz'" in msg
    msg = error({"zones": zone({"name": "geo", "sites": ["a"]}),
                 "dns": {"sites": [{"name": "a", "region": "eu", "pool": "web"}]}})
    assert "dns.sites[0].region: 'eu' is not a region" in msg


def test_sites() -> None:
    base = {"zones": zone({"name": "geo", "sites": ["a"]})}
    assert "not both" in error({**base, "dns": {"sites": [
        {"name": "a", "pool": "web", "status_url": "http://10.0.0.1:9090/status", "backend": "web"}]}})
    assert "needs backend" in error({**base, "dns": {"sites": [
        {"name": "a", "status_url": "http://10.0.0.1:9090/status", "addresses": ["10.0.0.1"]}]}})
    assert "needs addresses" in error({**base, "dns": {"sites": [
        {"name": "a", "status_url": "http://10.0.0.1:9090/status", "backend": "web"}]}})
    assert "expected an IP address" in error({**base, "dns": {"sites": [{"name": "a", "addresses": ["x"]}]}})
    assert "expected a CIDR" in error({**base, "dns": {"regions": {"nope": "eu"}}})


def test_no_dns_keys_means_no_change() -> None:
    c = Config.model_validate({"listeners": [{"name": "h", "bind": ["127.0.0.1:1"], "backend": "web"}],
                               "backends": [{"name": "web", "servers": [{"name": "a", "address": "1.2.3.4:80"}]}]})
    assert c.listeners[0].zones == [] and c.listeners[0].dns is None
