//! Host names at the edge: turning a request authority (`:authority`, absolute-URI
//! authority, `Host`), a TLS SNI value or a user-supplied domain into a validated,
//! normalised [`HostName`], and computing its [`RegistrableDomain`] — the key filings
//! are stored under.
//!
//! Contract:
//! - A [`HostName`] is lowercase ASCII (punycode for IDN, IDNA UTS-46
//!   non-transitional, so `ß` stays `ß` → `xn--…`), has no port and no trailing dot,
//!   consists of 1–63-octet labels of letters, digits and inner hyphens, is at most
//!   253 octets, and never looks like an IP address (a final label that is a number
//!   is refused, so `127.1` or `0x7f.0.0.1` are invalid rather than names).
//! - [`Authority::parse`] additionally strips a port (1–5 digits, a valid `u16`) and
//!   recognises IPv4 dotted quads and bracketed IPv6 literals.
//! - Anything else — userinfo, percent-encoding, spaces, empty labels, a second
//!   trailing dot, bare IPv6 — is a [`HostError`]; callers map it to `invalid_host`.
//! - [`HostName::registrable_domain`] uses only the ICANN section of the Public
//!   Suffix List: an ICP filing is made for a domain bought under an ICANN suffix.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest label, in octets (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;
/// Longest name, in octets, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;

/// Why a string is not a usable host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host has an empty label (consecutive, leading or extra trailing dot)")]
    EmptyLabel,
    #[error("host has a label longer than 63 octets")]
    LabelTooLong,
    #[error("host is longer than 253 octets")]
    NameTooLong,
    #[error("host has a label that starts or ends with a hyphen")]
    HyphenAtLabelEdge,
    #[error("host's last label is numeric but the host is not a valid IPv4 address")]
    NumericFinalLabel,
    #[error("port must be 1 to 65535, written without leading zeros")]
    InvalidPort,
    #[error("host must not contain userinfo ('@')")]
    Userinfo,
    #[error("host must not be percent-encoded ('%')")]
    PercentEncoded,
    #[error("host contains invalid character {0:?}")]
    InvalidCharacter(char),
    #[error("host is not a valid internationalised domain name")]
    Idna,
    #[error("host is an IP address, not a domain name")]
    IpLiteral,
    #[error("IPv6 address in brackets is invalid")]
    InvalidIpv6,
    #[error("IPv6 address must be enclosed in brackets")]
    UnbracketedIpv6,
}

/// A validated, normalised DNS host name: lowercase ASCII (punycode for IDN), no
/// port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Parse a bare domain name (no port), e.g. from config, JSONL import, admin
    /// API, SNI. Accepts Unicode (IDNA UTS-46 non-transitional → punycode),
    /// uppercase, one trailing dot. IP addresses are refused with
    /// [`HostError::IpLiteral`].
    pub fn parse(input: &str) -> Result<HostName, HostError> {
        let name = strip_trailing_dot(input)?;
        if name.parse::<Ipv4Addr>().is_ok() || name.parse::<Ipv6Addr>().is_ok() {
            return Err(HostError::IpLiteral);
        }
        check_raw_characters(name)?;
        check_labels_present(name)?;
        let ascii = to_ascii(name)?;
        check_name(&ascii)?;
        Ok(HostName(ascii))
    }

    /// Registrable domain using ONLY the ICANN section of the Public Suffix List;
    /// `None` when the name is itself a public suffix (e.g. `com.cn`, or a single
    /// label such as `localhost` under the default rule `*`).
    pub fn registrable_domain(&self) -> Option<RegistrableDomain> {
        let suffix_len = icann_suffix(&self.0)?.len();
        let prefix = self.0.len().checked_sub(suffix_len + 1)?;
        let head = self.0.get(..prefix)?;
        let start = head.rfind('.').map_or(0, |dot| dot + 1);
        let domain = self.0.get(start..)?;
        Some(RegistrableDomain(domain.to_owned()))
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::parse(s)
    }
}

/// The registrable domain (the part a customer bought): the key filings are stored
/// under. Always a valid [`HostName`] string; serialises as a plain string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RegistrableDomain(String);

impl RegistrableDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RegistrableDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an HTTP authority (Host header, `:authority`, absolute-URI authority)
/// turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    Name(HostName),
    Ip(IpAddr),
}

impl Authority {
    /// Parse `host`, `host:port`, `[v6]`, `[v6]:port`, `1.2.3.4:80`. Strips the port
    /// and ONE trailing dot, lowercases, applies IDNA.
    pub fn parse(input: &str) -> Result<Authority, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if input.contains('@') {
            return Err(HostError::Userinfo);
        }
        if input.contains('%') {
            return Err(HostError::PercentEncoded);
        }
        if let Some(rest) = input.strip_prefix('[') {
            return parse_bracketed_ipv6(rest);
        }
        let host = split_port(input)?;
        let bare = strip_trailing_dot(host)?;
        if let Ok(v4) = bare.parse::<Ipv4Addr>() {
            return Ok(Authority::Ip(IpAddr::V4(v4)));
        }
        HostName::parse(host).map(Authority::Name)
    }
}

impl FromStr for Authority {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Authority::parse(s)
    }
}

/// `rest` is what follows `[`: an IPv6 address, `]`, then nothing or `:port`.
fn parse_bracketed_ipv6(rest: &str) -> Result<Authority, HostError> {
    let (addr, after) = rest.split_once(']').ok_or(HostError::InvalidIpv6)?;
    if !after.is_empty() {
        let port = after.strip_prefix(':').ok_or(HostError::InvalidPort)?;
        check_port(port)?;
    }
    let v6 = addr
        .parse::<Ipv6Addr>()
        .map_err(|_| HostError::InvalidIpv6)?;
    Ok(Authority::Ip(IpAddr::V6(v6)))
}

/// Split `host[:port]`, validating and dropping the port. More than one colon
/// outside brackets is an IPv6 address missing its brackets.
fn split_port(input: &str) -> Result<&str, HostError> {
    match input.split_once(':') {
        None => Ok(input),
        Some((_, port)) if port.contains(':') => Err(HostError::UnbracketedIpv6),
        Some((host, port)) => check_port(port).map(|()| host),
    }
}

/// A port is 1–5 ASCII digits without a leading zero, naming 1..=65535. An empty
/// port, port 0 and spellings like `080` are invalid: two spellings of one port
/// would be two cache keys and two log values for the same site.
fn check_port(port: &str) -> Result<(), HostError> {
    let digits_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && !port.starts_with('0');
    if digits_ok && port.parse::<u16>().is_ok() {
        Ok(())
    } else {
        Err(HostError::InvalidPort)
    }
}

/// Remove exactly one trailing dot; the remainder must be non-empty and must not
/// end in another dot.
fn strip_trailing_dot(input: &str) -> Result<&str, HostError> {
    let name = input.strip_suffix('.').unwrap_or(input);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.ends_with('.') {
        return Err(HostError::EmptyLabel);
    }
    Ok(name)
}

/// Refuse ASCII that can never be part of a host name, with the most specific
/// error. Non-ASCII is left to IDNA.
fn check_raw_characters(name: &str) -> Result<(), HostError> {
    for c in name.chars() {
        match c {
            '@' => return Err(HostError::Userinfo),
            '%' => return Err(HostError::PercentEncoded),
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => {}
            c if c.is_ascii() || c.is_whitespace() || c.is_control() => {
                return Err(HostError::InvalidCharacter(c));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Empty labels are checked before IDNA, which would silently accept them.
fn check_labels_present(name: &str) -> Result<(), HostError> {
    if name.split('.').any(str::is_empty) {
        return Err(HostError::EmptyLabel);
    }
    Ok(())
}

/// IDNA UTS-46 ToASCII, non-transitional (the `idna` 1.x default), with the STD3
/// deny list so that Unicode mapping to forbidden ASCII (e.g. fullwidth `％`) is
/// refused. Hyphen placement and lengths are checked afterwards by [`check_name`].
fn to_ascii(name: &str) -> Result<String, HostError> {
    Uts46::new()
        .to_ascii(
            name.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map(|ascii| ascii.into_owned())
        .map_err(|_| HostError::Idna)
}

/// Final checks on the ASCII form: lengths, characters, hyphens, numeric last label.
fn check_name(ascii: &str) -> Result<(), HostError> {
    if ascii.is_empty() {
        return Err(HostError::Empty);
    }
    if ascii.len() > MAX_NAME_LEN {
        return Err(HostError::NameTooLong);
    }
    for label in ascii.split('.') {
        check_label(label)?;
    }
    match ascii.rsplit('.').next() {
        Some(last) if is_numeric_label(last) => Err(HostError::NumericFinalLabel),
        _ => Ok(()),
    }
}

fn check_label(label: &str) -> Result<(), HostError> {
    if label.is_empty() {
        return Err(HostError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(HostError::LabelTooLong);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(HostError::InvalidCharacter(c));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(HostError::HyphenAtLabelEdge);
    }
    Ok(())
}

/// A label a URL parser would read as a number (WHATWG "ends in a number"):
/// all decimal digits, or `0x` followed by hex digits.
fn is_numeric_label(label: &str) -> bool {
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    label
        .strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The longest matching public suffix of `name` among ICANN rules (and the default
/// rule `*`). When the overall longest match is a PRIVATE rule, drop that rule's
/// leftmost label and look again: every rule that still matches is shorter, so the
/// first non-private answer is the longest ICANN match.
fn icann_suffix(name: &str) -> Option<&str> {
    let mut candidate = name;
    loop {
        let suffix = psl::suffix(candidate.as_bytes())?;
        let len = suffix.trim().as_bytes().len();
        let start = candidate.len().checked_sub(len)?;
        let matched = candidate.get(start..)?;
        if suffix.typ() != Some(psl::Type::Private) {
            return Some(matched);
        }
        candidate = matched.split_once('.')?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a case should produce: a name with its registrable domain, an IP, or an error.
    enum Want {
        Name(&'static str, Option<&'static str>),
        Ip(&'static str),
        Err(HostError),
    }
    use Want::{Err as E, Ip, Name};

    fn label(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn authority_normalisation_table() {
        let long_label = format!("{}.com", label(64));
        // 3 × 63 + 58 + ".com" + 3 dots = 254 octets.
        let long_name = format!("{0}.{0}.{0}.{1}.com", label(63), label(58));
        let cases: Vec<(&str, Want)> = vec![
            // uppercase is lowercased
            (
                "WwW.Example.COM",
                Name("www.example.com", Some("example.com")),
            ),
            // port is stripped
            ("example.com:8080", Name("example.com", Some("example.com"))),
            // one trailing dot is stripped
            ("example.com.", Name("example.com", Some("example.com"))),
            // trailing dot and port together
            ("example.com.:443", Name("example.com", Some("example.com"))),
            // double trailing dot is an empty label
            ("example.com..", E(HostError::EmptyLabel)),
            // IDN → punycode; registrable under the IDN ICANN suffix 中国
            (
                "www.例子.中国",
                Name("www.xn--fsqu00a.xn--fiqs8s", Some("xn--fsqu00a.xn--fiqs8s")),
            ),
            // non-transitional: ß stays ß (not "ss")
            ("faß.de", Name("xn--fa-hia.de", Some("xn--fa-hia.de"))),
            // already-punycode input is accepted as is
            (
                "xn--fa-hia.de",
                Name("xn--fa-hia.de", Some("xn--fa-hia.de")),
            ),
            // multi-level public suffix
            (
                "shop.example.com.cn",
                Name("shop.example.com.cn", Some("example.com.cn")),
            ),
            // a public suffix itself has no registrable domain
            ("com.cn", Name("com.cn", None)),
            // gov.cn is an ICANN suffix too
            ("gov.cn", Name("gov.cn", None)),
            // a name under gov.cn
            (
                "www.beijing.gov.cn",
                Name("www.beijing.gov.cn", Some("beijing.gov.cn")),
            ),
            // single label: valid name, itself the suffix under the default rule
            ("localhost", Name("localhost", None)),
            // unknown TLD: default rule `*`
            (
                "a.example.unknowntld",
                Name("a.example.unknowntld", Some("example.unknowntld")),
            ),
            // PRIVATE rule uk.com ignored: registrable under ICANN com
            (
                "www.example.uk.com",
                Name("www.example.uk.com", Some("uk.com")),
            ),
            // PRIVATE rule github.io ignored
            ("user.github.io", Name("user.github.io", Some("github.io"))),
            // wildcard + exception rules
            ("www.ck", Name("www.ck", Some("www.ck"))),
            ("a.b.test.ck", Name("a.b.test.ck", Some("b.test.ck"))),
            // hyphens inside labels are fine
            (
                "my-shop.example.com",
                Name("my-shop.example.com", Some("example.com")),
            ),
            // IPv4
            ("1.2.3.4", Ip("1.2.3.4")),
            // IPv4 with port
            ("1.2.3.4:80", Ip("1.2.3.4")),
            // IPv4 with trailing dot
            ("1.2.3.4.", Ip("1.2.3.4")),
            // bracketed IPv6 without port
            ("[::1]", Ip("::1")),
            // bracketed IPv6 with port
            ("[2001:db8::1]:443", Ip("2001:db8::1")),
            // bracketed IPv6, junk after bracket
            ("[::1]x", E(HostError::InvalidPort)),
            // bracketed garbage
            ("[example.com]", E(HostError::InvalidIpv6)),
            // unclosed bracket
            ("[::1", E(HostError::InvalidIpv6)),
            // IPv6 without brackets
            ("::1", E(HostError::UnbracketedIpv6)),
            // short IPv4 form is not accepted as an IP nor a name
            ("127.1", E(HostError::NumericFinalLabel)),
            // hex IPv4 form likewise
            ("0x7f.0.0.1", E(HostError::NumericFinalLabel)),
            // hex final label
            ("example.0x7f", E(HostError::NumericFinalLabel)),
            // out-of-range octet
            ("1.2.3.256", E(HostError::NumericFinalLabel)),
            // space
            ("exa mple.com", E(HostError::InvalidCharacter(' '))),
            // leading/trailing whitespace
            (" example.com", E(HostError::InvalidCharacter(' '))),
            // percent-encoding
            ("%41.com", E(HostError::PercentEncoded)),
            // userinfo
            ("user@host", E(HostError::Userinfo)),
            // underscore is refused (strict)
            ("_dmarc.example.com", E(HostError::InvalidCharacter('_'))),
            // path characters
            ("example.com/x", E(HostError::InvalidCharacter('/'))),
            // fullwidth percent maps to '%' under UTS-46 and is refused
            ("％41.com", E(HostError::Idna)),
            // empty label in the middle
            ("a..b.com", E(HostError::EmptyLabel)),
            // leading dot
            (".a.com", E(HostError::EmptyLabel)),
            // a lone dot
            (".", E(HostError::Empty)),
            // 64-octet label
            (long_label.as_str(), E(HostError::LabelTooLong)),
            // 254-octet name
            (long_name.as_str(), E(HostError::NameTooLong)),
            // leading hyphen
            ("-a.com", E(HostError::HyphenAtLabelEdge)),
            // trailing hyphen
            ("a-.com", E(HostError::HyphenAtLabelEdge)),
            // bogus punycode
            ("xn--a.com", E(HostError::Idna)),
            // empty
            ("", E(HostError::Empty)),
            // port only
            (":80", E(HostError::Empty)),
            // empty port
            ("host:", E(HostError::InvalidPort)),
            // port out of range
            ("host:99999", E(HostError::InvalidPort)),
            // six-digit port
            ("host:000080", E(HostError::InvalidPort)),
            // non-numeric port
            ("host:abc", E(HostError::InvalidPort)),
            // port 0
            ("host:0", E(HostError::InvalidPort)),
            // a leading zero
            ("host:080", E(HostError::InvalidPort)),
            // just past the largest port
            ("host:65536", E(HostError::InvalidPort)),
            // the largest port is fine
            (
                "host.example:65535",
                Name("host.example", Some("host.example")),
            ),
        ];
        let mut failures = Vec::new();
        for (input, want) in &cases {
            if let Some(why) = check_case(input, want) {
                failures.push(format!("{input:?}: {why}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn check_case(input: &str, want: &Want) -> Option<String> {
        let got = Authority::parse(input);
        match (want, &got) {
            (Name(name, reg), Ok(Authority::Name(h))) => {
                let got_reg = h.registrable_domain();
                let got_reg = got_reg.as_ref().map(RegistrableDomain::as_str);
                (h.as_str() != *name || got_reg != *reg)
                    .then(|| format!("want {name} / {reg:?}, got {h} / {got_reg:?}"))
            }
            (Ip(ip), Ok(Authority::Ip(got_ip))) => {
                (ip.parse::<IpAddr>().ok() != Some(*got_ip)).then(|| format!("got {got_ip}"))
            }
            (E(e), Err(got_e)) => (e != got_e).then(|| format!("want {e:?}, got {got_e:?}")),
            _ => Some(format!("got {got:?}")),
        }
    }

    #[test]
    fn longest_legal_name_is_253_octets() {
        let max_name = format!("{0}.{0}.{0}.{1}.com", label(63), label(57));
        assert_eq!(max_name.len(), 253);
        let host = HostName::parse(&max_name);
        assert_eq!(host.as_ref().map(HostName::as_str), Ok(max_name.as_str()));
        let reg = host.ok().and_then(|h| h.registrable_domain());
        let want = format!("{}.com", label(57));
        assert_eq!(reg.map(RegistrableDomain::into_string), Some(want));
        let with_dot = format!("{max_name}.");
        assert!(
            HostName::parse(&with_dot).is_ok(),
            "trailing dot is not counted"
        );
    }

    #[test]
    fn host_name_parse_refuses_ports_and_ips() {
        assert_eq!(
            HostName::parse("example.com:80"),
            Err(HostError::InvalidCharacter(':'))
        );
        assert_eq!(HostName::parse("1.2.3.4"), Err(HostError::IpLiteral));
        assert_eq!(HostName::parse("::1"), Err(HostError::IpLiteral));
        assert_eq!(
            HostName::parse("Example.COM.").map(|h| h.to_string()),
            Ok("example.com".to_owned())
        );
    }

    #[test]
    fn registrable_domain_serialises_as_plain_string() {
        let reg = HostName::parse("www.example.com.cn")
            .ok()
            .and_then(|h| h.registrable_domain());
        let json = reg.map(|r| serde_json::to_string(&r).ok());
        assert_eq!(json, Some(Some("\"example.com.cn\"".to_owned())));
    }

    #[test]
    fn errors_read_as_english() {
        assert_eq!(
            HostError::InvalidCharacter(' ').to_string(),
            "host contains invalid character ' '"
        );
        assert_eq!(HostError::Empty.to_string(), "host is empty");
    }
}
