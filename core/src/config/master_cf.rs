//! `master.cf`: finds the SMTP listeners (`inet` services running `smtpd`) and their `-o`
//! settings. Every other service is Postfix plumbing whose work certrelay does in-process;
//! each is skipped with a notice.

use super::main_cf::split_setting;
use super::params::is_name_byte;
use crate::diagnostic::{Diagnostic, Location};
use crate::nexthop::parse_port;
use crate::text::logical_lines;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv6Addr;

/// Where a listener accepts connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address or host name to bind, without brackets; `None`: every address in
    /// `inet_interfaces`.
    pub host: Option<String>,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, "*:{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

impl Endpoint {
    /// Reads a service field: `smtp` (25), `submission` (587), `smtps`/`submissions` (465),
    /// a port number, `host:port`, or `[ipv6]:port`.
    pub fn parse(service: &str) -> Result<Endpoint, String> {
        let bad = || {
            format!(
                "cannot read address and port from service \"{service}\": write a port, \
                 a service name, host:port or [ipv6-address]:port"
            )
        };
        if let Some(rest) = service.strip_prefix('[') {
            let (addr, port) = rest.split_once("]:").ok_or_else(bad)?;
            addr.parse::<Ipv6Addr>().map_err(|_| bad())?;
            let port = parse_port(port).ok_or_else(bad)?;
            return Ok(Endpoint {
                host: Some(String::from(addr)),
                port,
            });
        }
        let (host, port) = match service.split_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(':') => (Some(String::from(h)), p),
            Some(_) => return Err(bad()),
            None => (None, service),
        };
        let port = parse_port(port).ok_or_else(bad)?;
        Ok(Endpoint { host, port })
    }
}

/// A setting applied on top of `main.cf`: a `master.cf` `-o name=value`, or one from the
/// shell's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// Parameter name.
    pub name: String,
    /// Value as written (expanded like any other).
    pub value: String,
    /// Where it was written (for a command line, a name such as `command line` and line 0).
    pub location: Location,
}

/// One SMTP listener from `master.cf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The service field as written (`smtp`, `127.0.0.1:2526`).
    pub service: String,
    /// Where to listen.
    pub endpoint: Endpoint,
    /// The `-o name=value` settings, in order, with the line of the service entry.
    pub overrides: Vec<(String, String, u32)>,
    /// The line the service entry starts on.
    pub line: u32,
    /// The `master.cf` file name.
    pub file: String,
}

impl Listener {
    /// The `-o` settings as [`Override`]s for [`super::Config::with_overrides`].
    pub fn override_list(&self) -> Vec<Override> {
        self.overrides
            .iter()
            .map(|(name, value, line)| Override {
                name: name.clone(),
                value: value.clone(),
                location: Location::new(&self.file, *line),
            })
            .collect()
    }
}

/// Removes `unused parameter` warnings (from [`super::Config::parse`]) for parameters that
/// some listener's `-o` value references as `$name`, `${name...}` or `$(name...)`.
pub fn drop_unused_referenced(diagnostics: &mut Vec<Diagnostic>, listeners: &[Listener]) {
    let values = || {
        listeners
            .iter()
            .flat_map(|l| l.overrides.iter().map(|o| o.1.as_str()))
    };
    diagnostics.retain(|d| {
        let Some(rest) = d.message.strip_prefix("unused parameter: ") else {
            return true;
        };
        let name = rest.split('=').next().unwrap_or_default();
        !values().any(|v| references(v, name))
    });
}

/// True when `value` references parameter `name`.
fn references(value: &str, name: &str) -> bool {
    value.match_indices('$').any(|(i, _)| {
        let after = &value[i + 1..];
        let after = after.strip_prefix(['{', '(']).unwrap_or(after);
        after
            .strip_prefix(name)
            .is_some_and(|tail| !tail.bytes().next().is_some_and(is_name_byte))
    })
}

/// Reads the text of `master.cf` (named `file` in messages) and returns its SMTP listeners.
pub fn parse(file: &str, text: &str) -> (Vec<Listener>, Vec<Diagnostic>) {
    let mut listeners = Vec::new();
    let mut diagnostics = Vec::new();
    let (lines, orphans) = logical_lines(text);
    for line in orphans {
        diagnostics.push(Diagnostic::warning(
            &Location::new(file, line),
            "line starts with whitespace but continues nothing; read as a new service",
        ));
    }
    for line in lines {
        let at = Location::new(file, line.line);
        match read_entry(&line.text, &at, &mut diagnostics) {
            Ok(Some(listener)) => listeners.push(listener),
            Ok(None) => {}
            Err(message) => diagnostics.push(Diagnostic::error(&at, message)),
        }
    }
    (listeners, diagnostics)
}

/// The fixed fields of a service entry.
struct Entry<'a> {
    service: &'a str,
    kind: &'a str,
    command: &'a str,
    args: &'a [Token],
}

fn read_entry(
    text: &str,
    at: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<Listener>, String> {
    let tokens = tokenize(text)?;
    let entry = check_fields(&tokens)?;
    if entry.kind != "inet" || entry.command != "smtpd" {
        diagnostics.push(skipped(&entry, at));
        return Ok(None);
    }
    let endpoint = Endpoint::parse(entry.service)?;
    let overrides = read_args(entry.args, at, diagnostics)?;
    Ok(Some(Listener {
        service: String::from(entry.service),
        endpoint,
        overrides,
        line: at.line,
        file: at.file.clone(),
    }))
}

fn skipped(entry: &Entry<'_>, at: &Location) -> Diagnostic {
    let (service, kind, command) = (entry.service, entry.kind, entry.command);
    if kind == "inet" {
        return Diagnostic::warning(
            at,
            format!(
                "service {service} ({kind}) runs \"{command}\", which certrelay does not \
                 provide; nothing will listen on {service}"
            ),
        );
    }
    let why = match command {
        "tlsmgr" => "its job is built in",
        "smtp" | "lmtp" | "qmgr" | "cleanup" | "pickup" | "bounce" | "defer" | "trace"
        | "flush" | "scache" | "anvil" | "rewrite" | "trivial-rewrite" | "showq" | "verify"
        | "proxymap" | "postlog" => "certrelay does this work in-process or has no need of it",
        _ => "only inet smtpd services are used",
    };
    Diagnostic::notice(
        at,
        format!("service {service} ({kind} {command}) ignored: {why}"),
    )
}

fn check_fields(tokens: &[Token]) -> Result<Entry<'_>, String> {
    if tokens.len() < 8 {
        return Err(format!(
            "expected at least 8 fields (service type private unpriv chroot wakeup maxproc \
             command), found {}",
            tokens.len()
        ));
    }
    let field = |i: usize| tokens[i].text.as_str();
    let kind = field(1);
    if !matches!(kind, "inet" | "unix" | "unix-dgram" | "fifo" | "pass") {
        return Err(format!(
            "unknown service type \"{kind}\": expected inet, unix, unix-dgram, fifo or pass"
        ));
    }
    for (i, name) in [(2, "private"), (3, "unpriv"), (4, "chroot")] {
        if !matches!(field(i), "y" | "n" | "-") {
            return Err(format!("{name} field \"{}\": expected y, n or -", field(i)));
        }
    }
    let wakeup = field(5);
    let wake_digits = wakeup.strip_suffix('?').unwrap_or(wakeup);
    if wakeup != "-" && !is_number(wake_digits) {
        return Err(format!(
            "wakeup field \"{wakeup}\": expected -, a number or a number followed by ?"
        ));
    }
    if field(6) != "-" && !is_number(field(6)) {
        return Err(format!(
            "maxproc field \"{}\": expected - or a number",
            field(6)
        ));
    }
    Ok(Entry {
        service: field(0),
        kind,
        command: field(7),
        args: &tokens[8..],
    })
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn read_args(
    args: &[Token],
    at: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<(String, String, u32)>, String> {
    let mut overrides = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let setting = if arg.grouped {
            None
        } else if arg.text == "-o" {
            i += 1;
            let value = args.get(i).ok_or_else(|| {
                String::from("-o at the end of the line: expected name=value after it")
            })?;
            Some(value.text.as_str())
        } else {
            arg.text.strip_prefix("-o")
        };
        match setting {
            Some(setting) => {
                let (name, value) =
                    split_setting(setting).map_err(|e| format!("-o {setting}: {e}"))?;
                overrides.push((String::from(name), String::from(value), at.line));
            }
            None => diagnostics.push(Diagnostic::notice(
                at,
                format!("smtpd argument \"{}\" ignored", arg.text),
            )),
        }
        i += 1;
    }
    Ok(overrides)
}

/// One field; `grouped` when it was written as `{ ... }` (its text is the inside, trimmed).
#[derive(Debug, PartialEq, Eq)]
struct Token {
    text: String,
    grouped: bool,
}

/// Splits on whitespace, keeping a `{ ... }` group (which may hold spaces) as one field.
fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix('{') {
            let end = group_end(body).ok_or_else(|| format!("missing \"}}\" in \"{rest}\""))?;
            let after = &body[end + 1..];
            if !after.is_empty() && !after.starts_with(char::is_whitespace) {
                return Err(format!("text right after \"}}\" in \"{rest}\""));
            }
            tokens.push(Token {
                text: String::from(body[..end].trim()),
                grouped: true,
            });
            rest = after.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            tokens.push(Token {
                text: String::from(&rest[..end]),
                grouped: false,
            });
            rest = rest[end..].trim_start();
        }
    }
    Ok(tokens)
}

/// Index of the `}` closing a group whose `{` was already consumed.
fn group_end(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in body.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn endpoints() {
        let ok: &[(&str, Option<&str>, u16)] = &[
            ("smtp", None, 25),
            ("submission", None, 587),
            ("smtps", None, 465),
            ("submissions", None, 465),
            ("2526", None, 2526),
            ("127.0.0.1:2526", Some("127.0.0.1"), 2526),
            ("127.0.0.1:smtp", Some("127.0.0.1"), 25),
            ("relay.example:587", Some("relay.example"), 587),
            ("[::1]:2526", Some("::1"), 2526),
            ("[2001:db8::1]:smtps", Some("2001:db8::1"), 465),
        ];
        for &(text, host, port) in ok {
            let e = Endpoint::parse(text).unwrap_or_else(|m| panic!("{text}: {m}"));
            assert_eq!((e.host.as_deref(), e.port), (host, port), "{text}");
        }
        for bad in [
            "pop3",
            "0",
            "65536",
            "::1:25",
            "[::1]",
            "[::1]25",
            "[nope]:25",
            ":25",
            "host:",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let shown: Vec<String> = ["smtp", "127.0.0.1:2526", "[::1]:25"]
            .iter()
            .map(|s| Endpoint::parse(s).unwrap().to_string())
            .collect();
        assert_eq!(shown, ["*:25", "127.0.0.1:2526", "[::1]:25"]);
    }

    const SEED: &str = "\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
127.0.0.1:2526 inet n   -       y       -       -       smtpd
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_banner = $myhostname ESMTP relay }
  -osmtpd_tls_req_ccert=yes
  -v
pickup    unix  n       -       y       60      1       pickup
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
postscreen inet n       -       y       -       1       postscreen
";

    #[test]
    fn seed_like_file() {
        let (listeners, diags) = parse("master.cf", SEED);
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[0].endpoint,
            Endpoint {
                host: None,
                port: 25
            }
        );
        assert!(listeners[0].overrides.is_empty());
        assert_eq!(listeners[0].line, 2);
        let relay = &listeners[1];
        assert_eq!(relay.service, "127.0.0.1:2526");
        assert_eq!(relay.line, 3);
        let o: Vec<(&str, &str, u32)> = relay
            .overrides
            .iter()
            .map(|(n, v, l)| (n.as_str(), v.as_str(), *l))
            .collect();
        assert_eq!(
            o,
            [
                ("smtpd_tls_security_level", "encrypt", 3),
                ("smtpd_banner", "$myhostname ESMTP relay", 3),
                ("smtpd_tls_req_ccert", "yes", 3),
            ]
        );
        assert_eq!(
            relay.override_list()[0].location,
            Location::new("master.cf", 3)
        );
        let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "master.cf:3: notice: smtpd argument \"-v\" ignored",
                "master.cf:8: notice: service pickup (unix pickup) ignored: certrelay does this work in-process or has no need of it",
                "master.cf:9: notice: service tlsmgr (unix tlsmgr) ignored: its job is built in",
                "master.cf:10: warning: service postscreen (inet) runs \"postscreen\", which certrelay does not provide; nothing will listen on postscreen",
            ]
        );
    }

    #[test]
    fn malformed_entries() {
        let cases = [
            ("smtp inet n - y - - ", "expected at least 8 fields"),
            ("smtp tcp n - y - - smtpd", "unknown service type \"tcp\""),
            ("smtp inet x - y - - smtpd", "private field \"x\""),
            ("smtp inet n - maybe - - smtpd", "chroot field \"maybe\""),
            ("smtp inet n - y soon - smtpd", "wakeup field \"soon\""),
            ("smtp inet n - y - many smtpd", "maxproc field \"many\""),
            (
                "pop3 inet n - y - - smtpd",
                "cannot read address and port from service \"pop3\"",
            ),
            ("smtp inet n - y - - smtpd -o", "-o at the end of the line"),
            ("smtp inet n - y - - smtpd -o novalue", "missing \"=\""),
            (
                "smtp inet n - y - - smtpd -o { a b = c }",
                "invalid parameter name \"a b\"",
            ),
            ("smtp inet n - y - - smtpd -o { a = b", "missing \"}\""),
            (
                "smtp inet n - y - - smtpd -o {a=b}c",
                "text right after \"}\"",
            ),
        ];
        for (line, want) in cases {
            let text = alloc::format!("# head\n{line}\n");
            let (listeners, diags) = parse("master.cf", &text);
            assert!(listeners.is_empty(), "{line}");
            assert_eq!(diags.len(), 1, "{line}: {diags:?}");
            let d = &diags[0];
            assert!(d.is_error() && d.line == 2, "{line}: {d}");
            assert!(d.message.contains(want), "{line}: {d}");
        }
    }

    #[test]
    fn references_from_overrides_count_as_use() {
        let (_, mut diags) = super::super::Config::parse(
            "main.cf",
            "mua_client_restrictions = permit\nmua_x = 1\nmua = 2\nother = 3\n",
        );
        let (listeners, _) = parse(
            "master.cf",
            "submission inet n - y - - smtpd\n  -o a=$mua_client_restrictions,${mua_x}\n  -o b=$mua_xy\n",
        );
        drop_unused_referenced(&mut diags, &listeners);
        let left: Vec<String> = diags.iter().map(|d| d.message.clone()).collect();
        assert_eq!(
            left,
            ["unused parameter: mua=2", "unused parameter: other=3"]
        );
    }

    #[test]
    fn nested_groups_and_wakeup_forms() {
        let text = "smtp inet n - - 60? 1 smtpd -o { smtpd_banner = a {b} c }\n";
        let (listeners, diags) = parse("m", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(listeners[0].overrides[0].1, "a {b} c");
    }
}
