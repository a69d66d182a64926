"""RFC 7208 check_host(), section by section, against FakeDnsServer."""

from __future__ import annotations

import ipaddress

import pytest

from mailbridge.dnsauth import SpfVerdict, check_host
from mailbridge.dnsauth._spf_macros import MacroContext, MacroError, expand
from mailbridge.testing._dns import FakeDnsServer

IP4 = "192.0.2.3"
IP6 = "2001:db8::cb01"


# The plugin's dns_server fixture, serving these (initially empty) zones.
pytestmark = pytest.mark.dns_server(
    zones={"example.com": {}, "example.net": {}, "in-addr.arpa": {}}
)


def _spf(server: FakeDnsServer, name: str, record: str) -> None:
    server.add_record(name, "TXT", " ".join(f'"{part}"' for part in _chunks(record)))


def _chunks(text: str, size: int = 200) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _check(
    server: FakeDnsServer,
    ip: str = IP4,
    domain: str = "example.com",
    sender: str = "strong-bad@example.com",
    **kwargs: object,
):  # type: ignore[no-untyped-def]
    return check_host(ip, domain, sender, resolver=server.resolver(timeout=0.5), **kwargs)  # type: ignore[arg-type]


# -- 4.3 initial processing ------------------------------------------------------------


def test_4_3_a_domain_that_is_not_a_domain_name_is_none(dns_server: FakeDnsServer) -> None:
    assert _check(dns_server, domain="localhost").result == SpfVerdict.NONE
    assert _check(dns_server, domain="a..example.com").result == SpfVerdict.NONE
    assert _check(dns_server, domain="[192.0.2.3]").result == SpfVerdict.NONE  # a literal
    assert _check(dns_server, domain="exa mple.com").result == SpfVerdict.NONE


def test_4_3_empty_local_part_means_postmaster(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 exists:%{l}.users.example.com -all")
    dns_server.add_record("postmaster.users.example.com", "A", "127.0.0.2")
    assert _check(dns_server, sender="example.com").result == SpfVerdict.PASS
    assert _check(dns_server, sender="@example.com").result == SpfVerdict.PASS


# -- 4.4 / 4.5 record lookup and selection -----------------------------------------------


def test_4_4_no_record_is_none(dns_server: FakeDnsServer) -> None:
    assert _check(dns_server).result == SpfVerdict.NONE
    assert _check(dns_server, domain="nowhere.example.com").result == SpfVerdict.NONE


def test_4_4_dns_failure_is_temperror(dns_server: FakeDnsServer) -> None:
    dns_server.fail("example.com", "SERVFAIL")
    assert _check(dns_server).result == SpfVerdict.TEMPERROR
    dns_server.clear_faults()
    dns_server.timeout("example.com")
    assert _check(dns_server).result == SpfVerdict.TEMPERROR


def test_4_5_only_v_spf1_records_count_and_strings_are_joined(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("example.com", "TXT", '"google-site-verification=xyz"')
    dns_server.add_record("example.com", "TXT", '"v=spf1 ip4:192.0.2.0" "/24 -all"')
    dns_server.add_record("example.com", "TXT", '"v=spf10 +all"')
    result = _check(dns_server)
    assert result.result == SpfVerdict.PASS
    assert result.record == "v=spf1 ip4:192.0.2.0/24 -all"


def test_4_5_two_records_are_permerror(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 -all")
    _spf(dns_server, "example.com", "v=spf1 +all")
    assert _check(dns_server).result == SpfVerdict.PERMERROR


# -- 4.6 record evaluation: syntax and limits --------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 foo:bar -all",
        "v=spf1 ip4:192.0.2.0/33 -all",
        "v=spf1 ip4:192.0.2.0/024 -all",
        "v=spf1 ip6:192.0.2.1 -all",
        "v=spf1 include -all",
        "v=spf1 redirect=a.example.com redirect=b.example.com",
        "v=spf1 exists:%{x}.example.com",
        "v=spf1 a:example.com/24//129",
        "v=spf1 all:example.com",
        "v=spf1 -all moo=%{z}",
        "v=spf1 include:example.com.%",
    ],
)
def test_4_6_syntax_errors_are_permerror(dns_server: FakeDnsServer, record: str) -> None:
    _spf(dns_server, "example.com", record)
    assert _check(dns_server).result == SpfVerdict.PERMERROR


def test_4_6_unknown_modifiers_are_ignored(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 moo=cow ip4:192.0.2.3 -all")
    assert _check(dns_server).result == SpfVerdict.PASS


def test_4_6_4_ten_lookups_are_allowed_the_eleventh_is_permerror(dns_server: FakeDnsServer) -> None:
    for n in range(11):
        dns_server.add_record(f"h{n}.example.com", "A", "198.51.100.1")
    ten = " ".join(f"a:h{n}.example.com" for n in range(9))
    _spf(dns_server, "example.com", f"v=spf1 {ten} a:h9.example.com ip4:192.0.2.3 -all")
    assert _check(dns_server).result == SpfVerdict.PASS
    _spf(dns_server, "example.net", f"v=spf1 {ten} a:h9.example.com a:h10.example.com +all")
    result = _check(dns_server, domain="example.net")
    assert result.result == SpfVerdict.PERMERROR
    assert "more than 10" in result.reason


def test_4_6_4_lookups_count_across_includes(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 include:a.example.net include:b.example.net -all")
    many = " ".join(f"a:n{n}.example.net" for n in range(5))
    for name in ("a", "b"):
        _spf(dns_server, f"{name}.example.net", f"v=spf1 {many} -all")
    for n in range(5):
        dns_server.add_record(f"n{n}.example.net", "A", "198.51.100.1")
    assert _check(dns_server).result == SpfVerdict.PERMERROR  # 2 includes + 10 a


def test_4_6_4_more_than_two_void_lookups_is_permerror(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 a:v1.example.com a:v2.example.com ip4:192.0.2.3 -all")
    assert _check(dns_server).result == SpfVerdict.PASS  # two void lookups are fine
    _spf(
        dns_server,
        "example.net",
        "v=spf1 a:v1.example.com a:v2.example.com exists:v3.example.com +all",
    )
    assert _check(dns_server, domain="example.net").result == SpfVerdict.PERMERROR


def test_4_6_4_more_than_ten_mx_records_is_permerror(dns_server: FakeDnsServer) -> None:
    for n in range(11):
        dns_server.add_record("example.com", "MX", f"{n} mx{n}.example.com.")
    _spf(dns_server, "example.com", "v=spf1 mx +all")
    assert _check(dns_server).result == SpfVerdict.PERMERROR


# -- 5 mechanisms -------------------------------------------------------------------


def test_5_1_all_and_qualifiers(dns_server: FakeDnsServer) -> None:
    for qualifier, verdict in [
        ("+", "pass"),
        ("-", "fail"),
        ("~", "softfail"),
        ("?", "neutral"),
        ("", "pass"),
    ]:
        dns_server.remove_records("example.com", "TXT")
        _spf(dns_server, "example.com", f"v=spf1 {qualifier}all")
        assert _check(dns_server).result == verdict


def test_no_match_and_no_redirect_is_neutral(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 ip4:198.51.100.0/24")
    assert _check(dns_server).result == SpfVerdict.NEUTRAL


@pytest.mark.parametrize(
    ("included", "expected"),
    [
        ("v=spf1 +all", SpfVerdict.FAIL),  # pass: the include matches, so -include applies
        ("v=spf1 -all", SpfVerdict.NEUTRAL),  # fail: no match, evaluation goes on
        ("v=spf1 ~all", SpfVerdict.NEUTRAL),
        ("v=spf1 ?all", SpfVerdict.NEUTRAL),
        (None, SpfVerdict.PERMERROR),  # none: permerror
        ("v=spf1 bogus", SpfVerdict.PERMERROR),
    ],
)
def test_5_2_include_result_table(
    dns_server: FakeDnsServer, included: str | None, expected: SpfVerdict
) -> None:
    _spf(dns_server, "example.com", "v=spf1 -include:spf.example.net ?all")
    if included is not None:
        _spf(dns_server, "spf.example.net", included)
    assert _check(dns_server).result == expected


def test_5_2_include_temperror_propagates(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 include:spf.example.net -all")
    dns_server.fail("spf.example.net")
    assert _check(dns_server).result == SpfVerdict.TEMPERROR


def test_5_3_a_with_cidr(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("mail.example.com", "A", "192.0.2.200")
    dns_server.add_record("mail.example.com", "AAAA", "2001:db8::1")
    _spf(dns_server, "example.com", "v=spf1 a:mail.example.com/24//64 -all")
    assert _check(dns_server).result == SpfVerdict.PASS
    assert _check(dns_server, ip=IP6).result == SpfVerdict.PASS
    assert _check(dns_server, ip="192.0.3.3").result == SpfVerdict.FAIL
    _spf(dns_server, "example.net", "v=spf1 a:mail.example.com -all")
    assert _check(dns_server, domain="example.net").result == SpfVerdict.FAIL


def test_5_3_a_defaults_to_the_current_domain(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("example.com", "A", IP4)
    _spf(dns_server, "example.com", "v=spf1 a -all")
    assert _check(dns_server).result == SpfVerdict.PASS


def test_5_4_mx(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("example.com", "MX", "10 mx1.example.com.")
    dns_server.add_record("example.com", "MX", "20 mx2.example.com.")
    dns_server.add_record("mx2.example.com", "A", IP4)
    _spf(dns_server, "example.com", "v=spf1 mx -all")
    result = _check(dns_server)
    assert result.result == SpfVerdict.PASS
    assert result.mechanism == "mx"


def test_5_5_ptr_needs_a_validated_name(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("3.2.0.192.in-addr.arpa", "PTR", "mail.example.com.")
    _spf(dns_server, "example.com", "v=spf1 ptr -all")
    assert _check(dns_server).result == SpfVerdict.FAIL  # the name does not resolve back
    dns_server.add_record("mail.example.com", "A", IP4)
    assert _check(dns_server).result == SpfVerdict.PASS
    _spf(dns_server, "example.net", "v=spf1 ptr -all")
    assert _check(dns_server, domain="example.net").result == SpfVerdict.FAIL


def test_5_6_ip4_ip6_and_mapped_addresses(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
    assert _check(dns_server).result == SpfVerdict.PASS
    assert _check(dns_server, ip=IP6).result == SpfVerdict.PASS
    assert _check(dns_server, ip="::ffff:192.0.2.3").result == SpfVerdict.PASS
    assert _check(dns_server, ip="2001:db9::1").result == SpfVerdict.FAIL
    assert _check(dns_server, ip=ipaddress.ip_address("198.51.100.9")).result == SpfVerdict.FAIL


def test_5_7_exists_always_queries_a(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 exists:%{ir}.%{v}.allow.example.com -all")
    dns_server.add_record("3.2.0.192.in-addr.allow.example.com", "A", "127.0.0.2")
    assert _check(dns_server).result == SpfVerdict.PASS
    assert _check(dns_server, ip="192.0.2.4").result == SpfVerdict.FAIL


# -- 6 modifiers ---------------------------------------------------------------------


def test_6_1_redirect(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 ip4:198.51.100.1 redirect=_spf.example.net")
    _spf(dns_server, "_spf.example.net", "v=spf1 ip4:192.0.2.0/24 -all")
    assert _check(dns_server).result == SpfVerdict.PASS
    assert _check(dns_server, ip="203.0.113.1").result == SpfVerdict.FAIL


def test_6_1_redirect_is_ignored_with_all_and_none_target_is_permerror(
    dns_server: FakeDnsServer,
) -> None:
    _spf(dns_server, "example.com", "v=spf1 ?all redirect=_spf.example.net")
    _spf(dns_server, "_spf.example.net", "v=spf1 +all")
    assert _check(dns_server).result == SpfVerdict.NEUTRAL
    _spf(dns_server, "example.net", "v=spf1 redirect=_nothing.example.net")
    assert _check(dns_server, domain="example.net").result == SpfVerdict.PERMERROR


def test_6_2_exp_explains_a_fail_with_macros(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 -all exp=explain._spf.%{d}")
    dns_server.add_record(
        "explain._spf.example.com", "TXT", '"%{i} is not one of %{d}\'s designated mail servers."'
    )
    result = _check(dns_server)
    assert result.result == SpfVerdict.FAIL
    assert result.explanation == "192.0.2.3 is not one of example.com's designated mail servers."


def test_6_2_broken_exp_means_no_explanation(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 -all exp=missing.example.com")
    result = _check(dns_server)
    assert result.result == SpfVerdict.FAIL
    assert result.explanation is None


# -- 7 macros (the examples of section 7.4) -------------------------------------------

RFC_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%%%_%-", "% %20"),
]


@pytest.mark.parametrize(("macro", "expanded"), RFC_EXAMPLES)
def test_7_4_macro_examples(macro: str, expanded: str) -> None:
    context = MacroContext(
        ipaddress.ip_address(IP4), "strong-bad@email.example.com", "email.example.com"
    )
    assert expand(macro, context) == expanded


def test_7_4_ipv6_macro_example() -> None:
    context = MacroContext(
        ipaddress.ip_address(IP6), "strong-bad@email.example.com", "email.example.com"
    )
    assert expand("%{ir}.%{v}._spf.%{d2}", context) == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


def test_7_uppercase_macros_are_url_escaped_and_crt_only_in_exp() -> None:
    context = MacroContext(ipaddress.ip_address(IP4), "a b/c@example.com", "example.com")
    assert expand("%{L}", context) == "a%20b%2Fc"
    for macro in ("%{c}", "%{r}", "%{t}"):
        with pytest.raises(MacroError):
            expand(macro, context)
    assert expand("%{c}", context, explanation=True) == IP4
    with pytest.raises(MacroError):
        expand("%{d0}", context)


# -- findings of a review ------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 ip4:192.0.2.3 ip4:10.0.0.0/40 -all",
        "v=spf1 ip4:192.0.2.3 a/99 -all",
        "v=spf1 ip4:192.0.2.3 exists:%{z}.example.com -all",
        "v=spf1 ip4:192.0.2.3 include:nodot -all",
        "v=spf1 ip4:192.0.2.3 ip6:2001:db8::/32//64 -all",
    ],
)
def test_4_6_a_syntax_error_anywhere_is_permerror(dns_server: FakeDnsServer, record: str) -> None:
    _spf(dns_server, "example.com", record)
    assert _check(dns_server).result == SpfVerdict.PERMERROR


def test_p_macro_lookups_are_not_void_lookups(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 exists:%{p}.allow.example.com ip4:192.0.2.4 -all")
    assert _check(dns_server, ip="192.0.2.4").result == SpfVerdict.PASS


def test_names_that_cannot_exist_are_not_crashes(dns_server: FakeDnsServer) -> None:
    _spf(dns_server, "example.com", "v=spf1 include:a\\\\1.example.com -all")
    assert _check(dns_server).result in (SpfVerdict.PERMERROR, SpfVerdict.FAIL)


def test_no_record_is_cached_only_briefly(dns_server: FakeDnsServer) -> None:
    result = _check(dns_server)
    assert result.result == SpfVerdict.NONE and result.ttl <= 60
