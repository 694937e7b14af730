//! Mail addresses and domains as SMTP carries them in `MAIL FROM:` and `RCPT TO:`.
//!
//! The parser is lenient where Postfix is lenient (a path without angle brackets, odd dots in
//! a local part) and strict where leniency would change who gets the mail: an address whose
//! meaning is unclear is a syntax error, never a guess.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a path did not parse.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing where an address was expected.
    Empty,
    /// `<` without its `>`.
    Unclosed,
    /// A character that may not appear in an unquoted local part.
    BadLocalPart,
    /// A quoted local part without its closing quote, or with a control character.
    BadQuotedString,
    /// The domain is empty or has a character a host name may not have.
    BadDomain,
    /// `[...]` that is neither an IPv4 address nor `IPv6:` and an IPv6 address.
    BadAddressLiteral,
    /// A source route (`@a,@b:`) that is malformed.
    BadSourceRoute,
    /// The whole path is longer than RFC 5321 allows (256 octets).
    TooLong,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AddressError::Empty => "no address given",
            AddressError::Unclosed => "'<' without a closing '>'",
            AddressError::BadLocalPart => "invalid character in the local part",
            AddressError::BadQuotedString => "malformed quoted local part",
            AddressError::BadDomain => "invalid domain",
            AddressError::BadAddressLiteral => "invalid address literal",
            AddressError::BadSourceRoute => "malformed source route",
            AddressError::TooLong => "address longer than 256 octets",
        };
        f.write_str(text)
    }
}

/// Longest path RFC 5321 allows, brackets included.
const MAX_PATH: usize = 256;

/// The domain of a mailbox: a host name or an address literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A host name as written (case kept; compare with [`domain_eq`]).
    Name(String),
    /// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    Literal(IpAddr),
}

impl Domain {
    /// The host name, if this is not an address literal.
    pub fn name(&self) -> Option<&str> {
        match self {
            Domain::Name(n) => Some(n),
            Domain::Literal(_) => None,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(a)) => write!(f, "[{a}]"),
            Domain::Literal(IpAddr::V6(a)) => write!(f, "[IPv6:{a}]"),
        }
    }
}

/// `local@domain`, or a bare local part (`postmaster`), as the client wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written, quotes and backslashes included.
    pub local: String,
    /// The domain; `None` for an unqualified address.
    pub domain: Option<Domain>,
}

impl Mailbox {
    /// The local part with quoting undone (`"a b"` → `a b`, `"a\"b"` → `a"b`).
    pub fn local_unquoted(&self) -> String {
        let Some(inner) = self
            .local
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
        else {
            return self.local.clone();
        };
        let mut out = String::with_capacity(inner.len());
        let mut escaped = false;
        for c in inner.chars() {
            if escaped || c != '\\' {
                out.push(c);
                escaped = false;
            } else {
                escaped = true;
            }
        }
        out
    }

    /// True when the local part itself names a further route (`%`, `!` or `@` in it once
    /// unquoted): the sender is choosing the next hop, which a relay must not allow.
    pub fn has_sender_routing(&self) -> bool {
        self.local_unquoted()
            .chars()
            .any(|c| matches!(c, '%' | '!' | '@'))
    }

    /// True for the `postmaster` mailbox, which RFC 5321 says is always accepted.
    pub fn is_postmaster(&self) -> bool {
        self.local_unquoted().eq_ignore_ascii_case("postmaster")
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.local)?;
        if let Some(d) = &self.domain {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A reverse-path or forward-path: `<>`, `<local@domain>` or `<@relay,@relay:local@domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The source route (`@a,@b:`), domains only; empty when there is none.
    pub route: Vec<Domain>,
    /// The mailbox; `None` for the null path `<>`.
    pub mailbox: Option<Mailbox>,
}

impl Path {
    /// The null reverse-path `<>` (bounces).
    pub const fn null() -> Self {
        Path {
            route: Vec::new(),
            mailbox: None,
        }
    }

    /// True for `<>`.
    pub fn is_null(&self) -> bool {
        self.mailbox.is_none()
    }

    /// True when the mailbox's local part is ASCII (and for `<>`).
    pub fn local_is_ascii(&self) -> bool {
        self.mailbox.as_ref().is_none_or(|m| m.local.is_ascii())
    }

    /// True when every domain, of the mailbox and of the source route, is ASCII.
    pub fn domains_are_ascii(&self) -> bool {
        let ascii = |d: &Domain| d.name().is_none_or(str::is_ascii);
        self.route.iter().all(ascii)
            && self
                .mailbox
                .as_ref()
                .and_then(|m| m.domain.as_ref())
                .is_none_or(ascii)
    }

    /// True when the path carries a source route or its local part routes further.
    pub fn has_sender_routing(&self) -> bool {
        !self.route.is_empty()
            || self
                .mailbox
                .as_ref()
                .is_some_and(|m| m.has_sender_routing())
    }
}

/// The address without brackets, as logs show it inside `from=<...>`: empty for `<>`, and
/// the source route dropped.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mailbox {
            Some(m) => write!(f, "{m}"),
            None => Ok(()),
        }
    }
}

/// Parses a path at the start of `input` and returns it with the unparsed rest.
///
/// Accepts `<...>` and, as Postfix does by default, a bare address running to the next
/// space. The rest starts right after the path (normally empty or a space before ESMTP
/// parameters).
pub fn parse_path(input: &str) -> Result<(Path, &str), AddressError> {
    parse_path_with(input, false)
}

/// As [`parse_path`], with `utf8` also accepting the UTF-8 addresses of RFC 6531 (SMTPUTF8):
/// non-ASCII characters in the local part, quoted or not, and in domain labels (U-labels).
/// C1 control characters (U+0080 to U+009F) are refused like the ASCII ones.
pub fn parse_path_with(input: &str, utf8: bool) -> Result<(Path, &str), AddressError> {
    let (inner, rest) = if let Some(after) = input.strip_prefix('<') {
        let end = closing_bracket(after).ok_or(AddressError::Unclosed)?;
        (&after[..end], &after[end + 1..])
    } else {
        let end = input.find(' ').unwrap_or(input.len());
        if end == 0 {
            return Err(AddressError::Empty);
        }
        (&input[..end], &input[end..])
    };
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if inner.is_empty() {
        return Ok((Path::null(), rest));
    }
    let (route, mailbox) = split_route(inner, utf8)?;
    Ok((
        Path {
            route,
            mailbox: Some(parse_mailbox_with(mailbox, utf8)?),
        },
        rest,
    ))
}

/// Index of the `>` that closes the path, skipping over a quoted local part.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `@a,@b:mailbox` into its route and mailbox.
fn split_route(inner: &str, utf8: bool) -> Result<(Vec<Domain>, &str), AddressError> {
    if !inner.starts_with('@') {
        return Ok((Vec::new(), inner));
    }
    let colon = inner.find(':').ok_or(AddressError::BadSourceRoute)?;
    let route = inner[..colon]
        .split(',')
        .map(|hop| {
            let name = hop.strip_prefix('@').ok_or(AddressError::BadSourceRoute)?;
            parse_domain_with(name, utf8).map_err(|_| AddressError::BadSourceRoute)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((route, &inner[colon + 1..]))
}

/// Parses `local@domain` or a bare local part.
pub fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    parse_mailbox_with(s, false)
}

/// As [`parse_mailbox`]; `utf8` as in [`parse_path_with`].
pub fn parse_mailbox_with(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    let local_end = local_part_end(s, utf8)?;
    let local = &s[..local_end];
    let domain = match &s[local_end..] {
        "" => None,
        rest => Some(parse_domain_with(
            rest.strip_prefix('@').ok_or(AddressError::BadLocalPart)?,
            utf8,
        )?),
    };
    Ok(Mailbox {
        local: String::from(local),
        domain,
    })
}

/// Length of the local part at the start of `s` (quoted string or unquoted run).
fn local_part_end(s: &str, utf8: bool) -> Result<usize, AddressError> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            if !(c == ' ' || c.is_ascii_graphic() || (utf8 && is_utf8_non_ascii(c))) {
                return Err(AddressError::BadQuotedString);
            }
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Ok(i + 2),
                _ => {}
            }
        }
        return Err(AddressError::BadQuotedString);
    }
    let end = s.rfind('@').unwrap_or(s.len());
    let allowed =
        |c: char| u8::try_from(c).is_ok_and(is_atext_or_dot) || (utf8 && is_utf8_non_ascii(c));
    if end == 0 || !s[..end].chars().all(allowed) {
        return Err(AddressError::BadLocalPart);
    }
    Ok(end)
}

/// Characters of an unquoted local part (RFC 5321 atext, and the dot).
fn is_atext_or_dot(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
}

/// A character RFC 6532 allows beyond ASCII: any but the C1 controls (U+0080 to U+009F).
fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

/// Parses a host name or an address literal.
pub fn parse_domain(s: &str) -> Result<Domain, AddressError> {
    parse_domain_with(s, false)
}

/// As [`parse_domain`]; with `utf8`, labels may also hold non-ASCII characters (U-labels,
/// kept as written; a label's 63-octet limit counts UTF-8 octets).
pub fn parse_domain_with(s: &str, utf8: bool) -> Result<Domain, AddressError> {
    if let Some(lit) = s.strip_prefix('[') {
        let inner = lit
            .strip_suffix(']')
            .ok_or(AddressError::BadAddressLiteral)?;
        return parse_literal(inner).map(Domain::Literal);
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && is_utf8_non_ascii(c)))
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(AddressError::BadDomain);
    }
    Ok(Domain::Name(String::from(s)))
}

/// The inside of `[...]`: an IPv4 address, or `IPv6:` and an IPv6 address.
fn parse_literal(inner: &str) -> Result<IpAddr, AddressError> {
    let bad = |_| AddressError::BadAddressLiteral;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner[5..].parse::<Ipv6Addr>().map(IpAddr::V6).map_err(bad)
        }
        _ => inner.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(bad),
    }
}

/// Compares two domain names the way DNS does: ASCII case-insensitive, one trailing dot
/// ignored.
pub fn domain_eq(a: &str, b: &str) -> bool {
    let trim = |s: &str| s.strip_suffix('.').unwrap_or(s).len();
    let (a, b) = (&a[..trim(a)], &b[..trim(b)]);
    a.eq_ignore_ascii_case(b)
}

/// True when `domain` is `parent` or one of its subdomains (`mail.example.org` is within
/// `example.org`; `badexample.org` is not).
pub fn domain_within(domain: &str, parent: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let parent = parent.strip_suffix('.').unwrap_or(parent);
    let parent = parent.strip_prefix('.').unwrap_or(parent);
    if domain_eq(domain, parent) {
        return true;
    }
    let Some(cut) = domain.len().checked_sub(parent.len() + 1) else {
        return false;
    };
    domain.as_bytes()[cut] == b'.' && domain_eq(&domain[cut + 1..], parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn paths_that_parse() {
        // (input, display, route length, rest)
        let table: &[(&str, &str, usize, &str)] = &[
            ("<a@example.org>", "a@example.org", 0, ""),
            ("<a@Example.ORG> SIZE=10", "a@Example.ORG", 0, " SIZE=10"),
            ("<>", "", 0, ""),
            ("<> BODY=8BITMIME", "", 0, " BODY=8BITMIME"),
            ("a@example.org", "a@example.org", 0, ""),
            ("a@example.org SIZE=1", "a@example.org", 0, " SIZE=1"),
            ("<postmaster>", "postmaster", 0, ""),
            ("<@a.example,@b.example:u@d.example>", "u@d.example", 2, ""),
            (
                "<\"john doe\"@example.org>",
                "\"john doe\"@example.org",
                0,
                "",
            ),
            ("<\"a>b\"@example.org>", "\"a>b\"@example.org", 0, ""),
            ("<\"a\\\"b\"@x.org>", "\"a\\\"b\"@x.org", 0, ""),
            ("<u@[192.0.2.1]>", "u@[192.0.2.1]", 0, ""),
            ("<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]", 0, ""),
            ("<u%v@x.org>", "u%v@x.org", 0, ""),
            ("<x.org!u@y.org>", "x.org!u@y.org", 0, ""),
            ("<a@example.org.>", "a@example.org.", 0, ""),
        ];
        for &(input, shown, route, rest) in table {
            let (path, left) = parse_path(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(path.to_string(), shown, "{input}");
            assert_eq!(path.route.len(), route, "{input}");
            assert_eq!(left, rest, "{input}");
        }
    }

    #[test]
    fn paths_that_do_not_parse() {
        let table: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            (" <a@b>", AddressError::Empty),
            ("<a@example.org", AddressError::Unclosed),
            ("<a b@example.org>", AddressError::BadLocalPart),
            ("<a@>", AddressError::BadDomain),
            ("<@example.org>", AddressError::BadSourceRoute),
            ("<a@b@example.org>", AddressError::BadLocalPart),
            ("<a@exa_mple.org>", AddressError::BadDomain),
            ("<a@example..org>", AddressError::BadDomain),
            ("<a@[300.1.1.1]>", AddressError::BadAddressLiteral),
            ("<a@[IPv6:zz]>", AddressError::BadAddressLiteral),
            ("<a@[192.0.2.1>", AddressError::BadAddressLiteral),
            ("<\"abc@x.org>", AddressError::Unclosed),
            ("<\"ab\tc\"@x.org>", AddressError::BadQuotedString),
            ("<@a.example:>", AddressError::Empty),
            ("<@a.example,b.example:u@d>", AddressError::BadSourceRoute),
            ("<@a.example u@d>", AddressError::BadSourceRoute),
            ("<a(b)@x.org>", AddressError::BadLocalPart),
        ];
        for &(input, want) in table {
            assert_eq!(parse_path(input).map(|p| p.0), Err(want), "{input:?}");
        }
        let long = alloc::format!("<{}@x.org>", "a".repeat(300));
        assert_eq!(parse_path(&long).map(|p| p.0), Err(AddressError::TooLong));
    }

    #[test]
    fn sender_routing_and_postmaster() {
        let table: &[(&str, bool, bool)] = &[
            ("<u@x.org>", false, false),
            ("<u%v@x.org>", true, false),
            ("<h!u@x.org>", true, false),
            ("<\"u@v\"@x.org>", true, false),
            ("<@r.org:u@x.org>", true, false),
            ("<PostMaster>", false, true),
            ("<postmaster@x.org>", false, true),
            ("<\"postmaster\"@x.org>", false, true),
        ];
        for &(input, routing, postmaster) in table {
            let path = parse_path(input).unwrap().0;
            assert_eq!(path.has_sender_routing(), routing, "{input}");
            let mb = path.mailbox.unwrap();
            assert_eq!(mb.is_postmaster(), postmaster, "{input}");
        }
    }

    #[test]
    fn unquoting() {
        let mb = parse_mailbox("\"a\\\"b c\"@x.org").unwrap();
        assert_eq!(mb.local_unquoted(), "a\"b c");
        assert_eq!(parse_mailbox("plain@x").unwrap().local_unquoted(), "plain");
    }

    #[test]
    fn domain_comparisons() {
        let table: &[(&str, &str, bool, bool)] = &[
            ("Example.ORG", "example.org", true, true),
            ("example.org.", "example.org", true, true),
            ("mail.example.org", "example.org", false, true),
            ("mail.example.org", ".example.org", false, true),
            ("badexample.org", "example.org", false, false),
            ("example.org", "mail.example.org", false, false),
            ("org", "example.org", false, false),
        ];
        for &(a, b, eq, within) in table {
            assert_eq!(domain_eq(a, b), eq, "eq {a} {b}");
            assert_eq!(domain_within(a, b), within, "within {a} {b}");
        }
    }

    #[test]
    fn error_display_says_what() {
        assert_eq!(
            AddressError::Unclosed.to_string(),
            "'<' without a closing '>'"
        );
    }
}
