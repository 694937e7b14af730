//! `smtpd_sender_ccert_maps`: which envelope senders each client certificate may use.
//!
//! The tables are keyed by a `relay_clientcerts` label (the value column of that map); the
//! value lists the addresses (`alice@example.net`) and whole domains (`@alice.example`) the
//! certificate owns. [`lookup`] tells whether a sender is owned and by which line;
//! [`check_table`] reports entries that are not addresses. The restriction that refuses an
//! unowned sender (`reject_sender_ccert_mismatch`) is evaluated in [`crate::policy`], and
//! the shell reads the table files; neither is here.
//!
//! Matching: the domain compares as DNS does (any case, one trailing dot ignored); the local
//! part compares without regard to ASCII case too (Postfix folds the keys of its sender
//! login maps to lower case, so `Alice@` and `alice@` are one owner there as well). There is
//! no address extension stripping: certrelay has no `recipient_delimiter`, so
//! `alice+news@example.net` is owned only when listed itself or by its `@domain`. An
//! unqualified sender is owned by no entry, since every entry names a domain.

use crate::address::{domain_eq, parse_domain, parse_mailbox, Domain, Mailbox};
use crate::diagnostic::{Diagnostic, Location};
use crate::table::Table;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// One item of a value: an address, or every address of a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owned {
    /// `local@domain`.
    Address(Mailbox),
    /// `@domain`: any local part at exactly this domain (not its subdomains).
    Domain(Domain),
}

impl Owned {
    /// Reads one item of a value; `Err` says why it is not one.
    pub fn parse(item: &str) -> Result<Owned, String> {
        if let Some(domain) = item.strip_prefix('@') {
            return parse_domain(domain)
                .map(Owned::Domain)
                .map_err(|e| format!("\"{item}\" is not @domain: {e}"));
        }
        match parse_mailbox(item) {
            Ok(m) if m.domain.is_some() => Ok(Owned::Address(m)),
            Ok(_) => Err(format!(
                "\"{item}\" has no domain; write local@domain, or @domain for a whole domain"
            )),
            Err(e) => Err(format!("\"{item}\" is not a mail address: {e}")),
        }
    }

    /// True when this item owns `sender`.
    pub fn owns(&self, sender: &Mailbox) -> bool {
        let Some(domain) = &sender.domain else {
            return false;
        };
        match self {
            Owned::Domain(d) => same_domain(d, domain),
            Owned::Address(m) => {
                m.domain.as_ref().is_some_and(|d| same_domain(d, domain))
                    && m.local_unquoted()
                        .eq_ignore_ascii_case(&sender.local_unquoted())
            }
        }
    }
}

impl fmt::Display for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owned::Address(m) => write!(f, "{m}"),
            Owned::Domain(d) => write!(f, "@{d}"),
        }
    }
}

fn same_domain(a: &Domain, b: &Domain) -> bool {
    match (a, b) {
        (Domain::Name(a), Domain::Name(b)) => domain_eq(a, b),
        (Domain::Literal(a), Domain::Literal(b)) => a == b,
        _ => false,
    }
}

/// What [`lookup`] found for a label and a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The label's entry owns the sender through `item`.
    Owned {
        /// Where the entry is.
        at: Location,
        /// The item that matched, as written.
        item: String,
    },
    /// The label's entry at `at` does not list the sender.
    NotListed {
        /// Where the entry is.
        at: Location,
    },
    /// No table has an entry for the label: it owns no sender.
    NoEntry,
}

impl Lookup {
    /// True when the sender is owned.
    pub fn is_owned(&self) -> bool {
        matches!(self, Lookup::Owned { .. })
    }
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Owned { at, item } => write!(f, "owned, by \"{item}\" at {at}"),
            Lookup::NotListed { at } => write!(f, "not owned: the entry at {at} does not list it"),
            Lookup::NoEntry => {
                f.write_str("not owned: no smtpd_sender_ccert_maps entry for this label")
            }
        }
    }
}

/// Looks `label` up in `tables` (the first table with an entry for it decides, keys compared
/// without regard to case) and tells whether its entry owns `sender`.
pub fn lookup(tables: &[Table], label: &str, sender: &Mailbox) -> Lookup {
    let Some((table, entry)) = tables
        .iter()
        .find_map(|t| t.lookup_entry(label).map(|e| (t, e)))
    else {
        return Lookup::NoEntry;
    };
    let at = Location::new(table.file(), entry.line);
    for item in crate::text::split_list(&entry.value) {
        if Owned::parse(item).is_ok_and(|o| o.owns(sender)) {
            return Lookup::Owned {
                at,
                item: String::from(item),
            };
        }
    }
    Lookup::NotListed { at }
}

/// An error at the entry's line for each item of `table` that is not `local@domain` or
/// `@domain`.
pub fn check_table(table: &Table) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for entry in table.entries() {
        for item in crate::text::split_list(&entry.value) {
            if let Err(why) = Owned::parse(item) {
                let at = Location::new(table.file(), entry.line);
                out.push(Diagnostic::error(
                    &at,
                    format!("smtpd_sender_ccert_maps entry \"{}\": {why}", entry.key),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_path;
    use alloc::string::ToString;

    fn mailbox(text: &str) -> Mailbox {
        parse_path(&format!("<{text}>")).unwrap().0.mailbox.unwrap()
    }

    fn tables() -> Vec<Table> {
        let (a, d) = Table::parse(
            "senders",
            "# label  owned senders\n\
             alice    alice@example.net, @alice.example\n\
             carol    carol@example.net @[192.0.2.7]\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let (b, _) = Table::parse("more", "ALICE  nobody@example.net\nbob bob@example.net\n");
        alloc::vec![a, b]
    }

    #[test]
    fn senders_owned_by_a_label() {
        let t = tables();
        let table: &[(&str, &str, bool)] = &[
            ("alice", "alice@example.net", true),
            ("alice", "ALICE@Example.NET.", true),
            ("Alice", "alice@example.net", true),
            ("alice", "\"alice\"@example.net", true),
            ("alice", "anyone@alice.example", true),
            ("alice", "anyone@ALICE.example", true),
            // Not a subdomain, not another address of the domain, no extension stripping.
            ("alice", "anyone@mail.alice.example", false),
            ("alice", "bob@example.net", false),
            ("alice", "alice+news@example.net", false),
            ("alice", "alice", false),
            ("alice", "alice@example.net.evil.example", false),
            // The first table with the label decides: "more" is not looked at for alice.
            ("alice", "nobody@example.net", false),
            ("bob", "bob@example.net", true),
            ("bob", "alice@example.net", false),
            ("carol", "Carol@example.net", true),
            ("carol", "x@[192.0.2.7]", true),
            ("carol", "x@[192.0.2.8]", false),
            ("dave", "dave@example.net", false),
        ];
        for &(label, sender, want) in table {
            assert_eq!(
                lookup(&t, label, &mailbox(sender)).is_owned(),
                want,
                "{label} {sender}"
            );
        }
    }

    #[test]
    fn lookups_say_where() {
        let t = tables();
        assert_eq!(
            lookup(&t, "alice", &mailbox("x@alice.example")).to_string(),
            "owned, by \"@alice.example\" at senders:2"
        );
        assert_eq!(
            lookup(&t, "bob", &mailbox("x@alice.example")).to_string(),
            "not owned: the entry at more:2 does not list it"
        );
        assert_eq!(lookup(&t, "dave", &mailbox("x@a.example")), Lookup::NoEntry);
    }

    #[test]
    fn items_that_are_not_addresses_are_errors_at_their_line() {
        let (t, _) = Table::parse(
            "senders",
            "alice alice@example.net\nbob bob, @, @bad..example\n  x@@y\n",
        );
        let shown: Vec<String> = check_table(&t).iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 4, "{shown:?}");
        for s in &shown {
            assert!(
                s.starts_with("senders:2: error: smtpd_sender_ccert_maps entry \"bob\""),
                "{s}"
            );
        }
        assert!(shown[0].contains("\"bob\" has no domain"), "{}", shown[0]);
        assert!(check_table(&tables()[0]).is_empty());
    }
}
