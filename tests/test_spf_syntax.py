"""RFC 7208 sections 3.1, 4.6.1 and 7, line by line: record characters, term syntax, macros.

Records are given in zone-file text, so `\\DDD` is the byte with decimal value DDD.
"""

from __future__ import annotations

import ipaddress

import pytest

from mailbridge.dnsauth import SpfVerdict, check_host
from mailbridge.dnsauth._spf_macros import MacroContext, MacroError, expand, parse_macro_string
from mailbridge.testing._dns import FakeDnsServer

pytestmark = pytest.mark.dns_server(zones={"example.com": {}})

IP4 = "192.0.2.3"
PASS, FAIL, PERMERROR = SpfVerdict.PASS, SpfVerdict.FAIL, SpfVerdict.PERMERROR


def _check(server: FakeDnsServer, ip: str = IP4, sender: str = "strong-bad@example.com"):  # type: ignore[no-untyped-def]
    domain = sender.rpartition("@")[2]
    return check_host(ip, domain, sender, resolver=server.resolver(timeout=0.5))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # 3.1: "The character content of the record is encoded as [US-ASCII]."
        (r"v=spf1 a:\239\187\191garbage.example.com -all", PERMERROR),  # UTF-8 BOM in a name
        (r"v=spf1 \128a:example.com -all", PERMERROR),
        (r"v=spf1 ip4:192.0.2.3 \150all", PERMERROR),
        (r"v=spf1 moo=caf\195\169 ip4:192.0.2.3 -all", PERMERROR),  # in an unknown modifier
        (r"v=spf1 ip4:192.0.2.3\194\160-all", PERMERROR),  # a no-break space between terms
        # 4.6.1: terms = *( 1*SP ( directive / modifier ) ); record = version terms *SP
        (r"v=spf1 a:ctrl.example.com\013ptr -all", PERMERROR),  # CR between terms
        (r"v=spf1 ip4:192.0.2.3\009-all", PERMERROR),  # tab between terms
        (r"v=spf1 moo=a\009b ip4:192.0.2.3 -all", PERMERROR),  # tab inside a term
        (r"v=spf1 exists:%{d}\009.example.com ip4:192.0.2.3 -all", PERMERROR),
        (r"v=spf1 ip4:192.0.2.3 -all\010", PERMERROR),  # LF at the end
        ("v=spf1 ip4:192.0.2.3  -all", PASS),  # one or more SP
        ("v=spf1 ip4:192.0.2.3 -all ", PASS),  # trailing SP
        ("V=SpF1 IP4:192.0.2.3 -ALL", PASS),  # names are case-insensitive
        # 4.6.1: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ); "=" right after the name
        ("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.3 -all", PASS),
        ("v=spf1 moo.cow/far_out=man:dog/cat ip4:192.0.2.3 -all", PERMERROR),
        ("v=spf1 moo.cow:far_out=man:dog/cat ip4:192.0.2.3 -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 redirect:example.org", PERMERROR),  # a modifier, not mechanism
        ("v=spf1 1up=foo ip4:192.0.2.3", PERMERROR),
        ("v=spf1 =all", PERMERROR),
        # 7.1/7.2: c, r and t are allowed only in exp text
        ("v=spf1 -all exp=%{r}.example.com", PERMERROR),  # exp= itself is a domain-spec
        ("v=spf1 moo=%{c} ip4:192.0.2.3 -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 exists:%{t}.example.com -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 exists:%{v}.%{i}.example.com -all", PASS),  # v is a letter
        # 7.1: a "%" not followed by "{", "%", "-" or "_" is a syntax error
        ("v=spf1 -exists:%(ir).sbl.example.com ?all", PERMERROR),
        ("v=spf1 exists:foo%.sbl.example.com ?all", PERMERROR),
        # 7.1: domain-end = ( "." toplabel [ "." ] ) / macro-expand
        ("v=spf1 ip4:192.0.2.3 a:mail.example.com. -all", PASS),
        ("v=spf1 ip4:192.0.2.3 a:mail.example.com.. -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 a:foo-bar -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 a:mail.example.123 -all", PERMERROR),
        ("v=spf1 ip4:192.0.2.3 a:mail.1-2 -all", PASS),  # 1*alphanum "-" ... alphanum
        ("v=spf1 ip4:192.0.2.3 exists:%{d}%% -all", PASS),  # "%%" is a macro-expand too
        ("v=spf1 ip4:192.0.2.3 exists:%{d}com -all", PERMERROR),
    ],
)
def test_record_syntax(dns_server: FakeDnsServer, record: str, expected: SpfVerdict) -> None:
    dns_server.add_record("example.com", "TXT", f'"{record}"')
    result = _check(dns_server)
    assert result.result == expected, result.reason


def test_3_1_non_ascii_elsewhere_is_none_of_spfs_business(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("example.com", "TXT", r'"\150"')
    dns_server.add_record("example.com", "TXT", r'"caf\195\169"')
    dns_server.add_record("example.com", "TXT", '"v=spf1 -all"')
    assert _check(dns_server).result == FAIL


def test_3_1_a_non_ascii_record_reason_says_so(dns_server: FakeDnsServer) -> None:
    dns_server.add_record("example.com", "TXT", r'"v=spf1 caf\195\169 -all"')
    assert "7-bit ASCII" in _check(dns_server).reason


# -- explanations (RFC 7208 6.2 and 7) -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "explanation"),
    [
        (r"\239\187\191Explanation", None),  # not 7-bit ASCII: no explanation
        (r"tab\009here", None),  # explain-string = *( macro-string / SP ): SP only
        ("The %{x}-files.", None),
        ("This is a test.", "This is a test."),  # the trailing dot stays
        (
            "%{c} (%{i}) at %{r} is not %{d2}'s",
            "192.0.2.3 (192.0.2.3) at unknown is not example.com's",
        ),
        ("%%%_%-", "% %20"),
    ],
)
def test_6_2_explanation_text(
    dns_server: FakeDnsServer, text: str, explanation: str | None
) -> None:
    dns_server.add_record("example.com", "TXT", '"v=spf1 -all exp=why.example.com"')
    dns_server.add_record("why.example.com", "TXT", f'"{text}"')
    result = _check(dns_server)
    assert result.result == FAIL
    assert result.explanation == explanation


def test_7_3_ipv6_in_explanations_is_lower_case_whatever_the_input(
    dns_server: FakeDnsServer,
) -> None:
    # RFC 7208 leaves the case of "i" open; its 7.4 example is lower case, and RFC 5952's
    # text form (used for "c") is too. An address given in upper case changes nothing.
    dns_server.add_record("example.com", "TXT", '"v=spf1 -all exp=why.example.com"')
    dns_server.add_record(
        "why.example.com", "TXT", '"%{c} is queried as %{ir}.%{v}.arpa; %{C} %{i1} %{I1}"'
    )
    result = _check(dns_server, ip="2001:DB8::CB01")
    nibbles = "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    assert result.explanation == (
        f"2001:db8::cb01 is queried as {nibbles}.ip6.arpa; 2001%3Adb8%3A%3Acb01 1 1"
    )


def test_7_3_truncation_keeps_the_rightmost_labels(dns_server: FakeDnsServer) -> None:
    sender = "test@somewhat.long.exp.example.com"
    dns_server.add_record(
        "somewhat.long.exp.example.com",
        "TXT",
        '"v=spf1 -all exp=foobar.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.example.com"',
    )
    dns_server.add_record(
        "somewhat.long.exp.example.com." * 8 + "example.com",
        "TXT",
        '"Congratulations!  That was tricky."',
    )
    assert _check(dns_server, sender=sender).explanation == "Congratulations!  That was tricky."


# -- macro-string syntax and transformers (7.1, 7.3) ---------------------------------

CONTEXT = MacroContext(ipaddress.ip_address(IP4), "foo-bar+zip+quux@example.com", "example.com")


def test_7_3_any_delimiters_split_and_parts_rejoin_with_dots() -> None:
    assert expand("%{l2r+-}", CONTEXT) == "bar.foo"
    assert expand("%{l-+}", CONTEXT) == "foo.bar.zip.quux"


def test_7_3_huge_digits_mean_every_part() -> None:
    # More parts than available: all of them. (int() of 5,000 digits used to raise.)
    assert expand("%{d" + "9" * 5000 + "}", CONTEXT) == "example.com"
    assert expand("%{d" + "0" * 5000 + "1}", CONTEXT) == "com"
    with pytest.raises(MacroError):
        expand("%{d000}", CONTEXT)


def test_7_3_huge_digits_in_a_record_are_not_a_crash(dns_server: FakeDnsServer) -> None:
    record = "v=spf1 exists:%{d" + "9" * 5000 + "}.allow.example.com -all"
    dns_server.add_record(
        "example.com",
        "TXT",
        " ".join(f'"{record[i : i + 250]}"' for i in range(0, len(record), 250)),
    )
    dns_server.add_record("example.com.allow.example.com", "A", "127.0.0.2")
    assert _check(dns_server).result == PASS


@pytest.mark.parametrize(
    "text",
    ["a\tb", "a b", "caf\u00e9", "%{c}", "%{R}", "%{t1}", "%{x}", "%", "%a", "%{d0}", "a\x7fb"],
)
def test_7_1_macro_strings_outside_explanations(text: str) -> None:
    with pytest.raises(MacroError):
        parse_macro_string(text)


def test_7_1_explain_strings_allow_sp_and_crt() -> None:
    parsed = parse_macro_string("%{c} at %{r} %{t}", explanation=True)
    assert expand(parsed, CONTEXT, explanation=True).startswith("192.0.2.3 at unknown ")
    with pytest.raises(MacroError):
        parse_macro_string("a\tb", explanation=True)
