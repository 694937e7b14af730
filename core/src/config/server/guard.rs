//! The settings of a server's defences against hostile clients: `smtpd_forbidden_commands`,
//! and the restriction classes certrelay does not apply, which refuse the configuration
//! rather than doing nothing in silence.
//!
//! Not here: what the session does with them ([`crate::server`]).

use super::Builder;
use crate::settings::ForbiddenCommands;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Postfix's restriction classes other than the relay and recipient lists. certrelay applies
/// none of them, so a rule in one would be silently skipped: anything but `permit` (or
/// nothing) there is an error.
pub const UNAPPLIED_RESTRICTIONS: [&str; 6] = [
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "smtpd_etrn_restrictions",
];

/// The one regular expression certrelay knows: Postfix's default entry, a first word that
/// does not begin with a letter (regexp tables match without regard to case).
const NOT_A_LETTER: &str = "/^[^A-Z]/";

impl Builder<'_> {
    /// `smtpd_forbidden_commands`; Postfix's default when it does not read.
    pub(super) fn forbidden_commands(&mut self) -> ForbiddenCommands {
        const NAME: &str = "smtpd_forbidden_commands";
        match parse_forbidden(self.config.text(NAME)) {
            Ok(f) => f,
            Err(problem) => {
                let d = self.config.problem(NAME, problem);
                self.diagnostics.push(d);
                ForbiddenCommands::default()
            }
        }
    }

    /// An error, with the line that set it, for each restriction class certrelay does not
    /// apply that holds more than `permit`.
    pub(super) fn refuse_unapplied_restrictions(&mut self) {
        for name in UNAPPLIED_RESTRICTIONS {
            let items = self.config.list(name);
            if items.iter().all(|i| i.eq_ignore_ascii_case("permit")) {
                continue;
            }
            let d = self.config.problem(
                name,
                "certrelay does not apply this restriction class, so these rules would do \
                 nothing; remove the line, or put what must be checked in \
                 smtpd_recipient_restrictions (certrelay applies smtpd_relay_restrictions \
                 and smtpd_recipient_restrictions only)",
            );
            self.diagnostics.push(d);
        }
    }
}

/// Reads `smtpd_forbidden_commands`: command names, and Postfix's default
/// `regexp:{{/^[^A-Z]/ Bogus}}`, which certrelay implements without a regexp engine. Any
/// other regexp or lookup table is refused.
pub fn parse_forbidden(text: &str) -> Result<ForbiddenCommands, String> {
    let mut out = ForbiddenCommands {
        verbs: Vec::new(),
        not_a_letter: false,
    };
    for item in braced_items(text)? {
        let Some(table) = item
            .get(..7)
            .filter(|t| t.eq_ignore_ascii_case("regexp:"))
            .map(|_| &item[7..])
        else {
            if item.contains(':') || !item.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "\"{item}\": only command names and Postfix's default \
                     regexp:{{{{{NOT_A_LETTER} Bogus}}}} can be used here (no lookup tables)"
                ));
            }
            out.verbs.push(item.to_ascii_uppercase());
            continue;
        };
        if !is_not_a_letter_rule(table) {
            return Err(format!(
                "\"{item}\": certrelay has no regular expression engine; the one regexp entry \
                 it knows is Postfix's default regexp:{{{{{NOT_A_LETTER} Bogus}}}} (a line \
                 whose first word does not begin with a letter); list other commands by name"
            ));
        }
        out.not_a_letter = true;
    }
    Ok(out)
}

/// `{{/^[^A-Z]/ Result}}`, spaces inside the braces allowed.
fn is_not_a_letter_rule(table: &str) -> bool {
    let Some(rule) = unbrace(table).and_then(unbrace) else {
        return false;
    };
    if rule.contains(['{', '}']) {
        // More than one rule.
        return false;
    }
    rule.strip_prefix(NOT_A_LETTER)
        .is_some_and(|result| result.starts_with(char::is_whitespace) && !result.trim().is_empty())
}

/// The text inside one pair of outer braces, trimmed.
fn unbrace(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    Some(inner.trim())
}

/// The items of a list, split on commas and whitespace outside braces, as Postfix reads a
/// list with inline tables (`regexp:{{...}}`).
fn braced_items(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| String::from("a '}' without its '{'"))?;
            }
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if let Some(s) = start.take() {
                    items.push(&text[s..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if depth > 0 {
        return Err(String::from("a '{' without its '}'"));
    }
    if let Some(s) = start {
        items.push(&text[s..]);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn verbs(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn forbidden_commands_read() {
        let table: &[(&str, Vec<String>, bool)] = &[
            (
                "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
                verbs(&["CONNECT", "GET", "POST"]),
                true,
            ),
            (
                "connect, get,post regexp:{ { /^[^A-Z]/ Bogus } }",
                verbs(&["CONNECT", "GET", "POST"]),
                true,
            ),
            ("CONNECT", verbs(&["CONNECT"]), false),
            ("", Vec::new(), false),
            ("regexp:{{/^[^A-Z]/ x}} PUT", verbs(&["PUT"]), true),
        ];
        for (text, want_verbs, want_rule) in table {
            let got = parse_forbidden(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&got.verbs, want_verbs, "{text}");
            assert_eq!(got.not_a_letter, *want_rule, "{text}");
        }
        let default = crate::config::params::find("smtpd_forbidden_commands").unwrap();
        assert_eq!(
            parse_forbidden(default.default).unwrap(),
            ForbiddenCommands::default()
        );
    }

    #[test]
    fn a_restriction_class_not_applied_refuses_the_configuration_at_its_line() {
        use crate::config::{server::server_settings, Config};
        for name in UNAPPLIED_RESTRICTIONS {
            let text = format!("myhostname = relay.test\n\n{name} = permit_mynetworks, reject\n");
            let (config, d) = Config::parse("main.cf", &text);
            assert!(d.is_empty(), "{d:?}");
            let (_, d) = server_settings(&config);
            let errors: Vec<String> = d
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert!(
                errors[0].starts_with(&format!("main.cf:3: error: {name} = permit_mynetworks")),
                "{}",
                errors[0]
            );
            for harmless in ["", "permit", "PERMIT"] {
                let (config, _) = Config::parse("main.cf", &format!("{name} = {harmless}\n"));
                let (_, d) = server_settings(&config);
                assert!(!crate::config::has_errors(&d), "{name} = {harmless}: {d:?}");
            }
        }
    }

    #[test]
    fn the_settings_of_the_defences_read() {
        use crate::config::{server::server_settings, Config};
        use core::time::Duration;
        let text = "smtpd_soft_error_limit = 3\n\
                    smtpd_error_sleep_time = 2\n\
                    smtpd_forbidden_commands = GET\n\
                    certrelay_command_time_limit = 1m\n\
                    certrelay_data_min_rate = 250\n\
                    certrelay_data_rate_grace = 5s\n";
        let (config, d) = Config::parse("main.cf", text);
        assert!(d.is_empty(), "{d:?}");
        let (s, d) = server_settings(&config);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.soft_error_limit, 3);
        assert_eq!(s.error_sleep_time, Duration::from_secs(2));
        assert_eq!(s.forbidden_commands.verbs, verbs(&["GET"]));
        assert!(!s.forbidden_commands.not_a_letter);
        assert_eq!(s.command_time_limit, Duration::from_secs(60));
        assert_eq!(s.data_min_rate, 250);
        assert_eq!(s.data_rate_grace, Duration::from_secs(5));
        let (config, _) = Config::parse(
            "main.cf",
            "x = 1\nsmtpd_forbidden_commands = regexp:{{/^X/ B}}\n",
        );
        let (_, d) = server_settings(&config);
        let e = d
            .iter()
            .find(|d| d.is_error())
            .expect("refused")
            .to_string();
        assert!(
            e.starts_with("main.cf:2: error: smtpd_forbidden_commands"),
            "{e}"
        );
    }

    #[test]
    fn other_regexps_and_tables_are_refused() {
        for text in [
            "GET regexp:{{/^X/ Bogus}}",
            "regexp:{{/^[^A-Z]/}}",
            "regexp:{{/^[^A-Z]/ Bogus}, {/^Y/ Bogus}}",
            "regexp:/etc/postfix/forbidden",
            "pcre:{{/^[^A-Z]/ Bogus}}",
            "hash:/etc/postfix/forbidden",
            "GET {POST",
            "GET POST}",
        ] {
            assert!(parse_forbidden(text).is_err(), "{text}");
        }
        let e = parse_forbidden("regexp:{{/^X/ Bogus}}").unwrap_err();
        assert!(e.contains("no regular expression engine"), "{e}");
    }
}
