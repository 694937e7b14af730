//! Virtual alias rewriting (`virtual_alias_maps`): turns one recipient into the addresses
//! its mail really goes to, following the tables recursively.
//!
//! How a recipient `user@domain` is looked up, in order (the first key found wins):
//! 1. the whole address, `user@domain`;
//! 2. the bare `user`, but only when `domain` is one of this host's own domains (the caller
//!    says which), so that a `root` entry never captures mail for `root` elsewhere;
//! 3. the catch-all `@domain`, for every user of that domain not listed on its own.
//!
//! A value lists one or more addresses, separated by commas or whitespace. Each of them is
//! looked up again, so aliases may point at aliases. An address whose list names the address
//! itself keeps it as a final address (`root@a root@a, admin@b` delivers to both). A chain
//! that comes back to an address already being expanded, one nested more than
//! [`MAX_DEPTH`] deep, or one that grows past [`MAX_ADDRESSES`] addresses is refused as a
//! whole: it is a mistake in the tables, never a reason to deliver somewhere half-way.
//!
//! Not here: reading the table files (the shell does, into [`Table`]s), and deciding what to
//! do with a final address that is still local (the relay policy refuses it; see
//! [`crate::policy::resolve_recipient`]).

use crate::address::{parse_mailbox, Mailbox, Path};
use crate::table::Table;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Deepest chain of aliases followed from one recipient.
pub const MAX_DEPTH: usize = 100;

/// Most final addresses one recipient may expand to.
pub const MAX_ADDRESSES: usize = 1000;

/// Something that maps a key to a value: one table, or several searched in order.
pub trait Lookup {
    /// The value for `key`, compared case-insensitively.
    fn lookup(&self, key: &str) -> Option<&str>;
}

impl Lookup for Table {
    fn lookup(&self, key: &str) -> Option<&str> {
        Table::lookup(self, key)
    }
}

/// Tables searched in order: the first one that has the key answers (as Postfix searches
/// the tables of a `*_maps` parameter).
impl<T: Lookup> Lookup for [T] {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.iter().find_map(|t| t.lookup(key))
    }
}

impl<T: Lookup> Lookup for Vec<T> {
    fn lookup(&self, key: &str) -> Option<&str> {
        self.as_slice().lookup(key)
    }
}

/// Why a recipient's aliases could not be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AliasError {
    /// The chain came back to `address`, which was already being expanded.
    Loop {
        /// The address met twice.
        address: String,
    },
    /// More than [`MAX_DEPTH`] aliases deep.
    TooDeep,
    /// More than [`MAX_ADDRESSES`] final addresses.
    TooMany,
    /// A value that is not an address.
    BadValue {
        /// The key whose value it is.
        key: String,
        /// The item that does not read as an address.
        item: String,
    },
}

impl fmt::Display for AliasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasError::Loop { address } => write!(
                f,
                "virtual_alias_maps loop: {address} is reached again while it is being expanded"
            ),
            AliasError::TooDeep => write!(
                f,
                "virtual_alias_maps nesting deeper than {MAX_DEPTH} aliases"
            ),
            AliasError::TooMany => write!(
                f,
                "virtual_alias_maps expansion to more than {MAX_ADDRESSES} addresses"
            ),
            AliasError::BadValue { key, item } => write!(
                f,
                "virtual_alias_maps entry \"{key}\": \"{item}\" is not a mail address"
            ),
        }
    }
}

/// The addresses one recipient goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expansion {
    /// The final addresses, in the order the tables list them, each once. An unqualified
    /// one stays unqualified (it was looked up as being at the `home` domain).
    pub addresses: Vec<Mailbox>,
    /// True when some table entry applied (the list is not just the recipient itself).
    pub rewritten: bool,
}

/// Expands `rcpt` through `tables`.
///
/// `home` qualifies unqualified addresses (the recipient's, and those in values), as
/// Postfix appends `$myorigin`. `is_local` tells whether a domain (lower case) is one of
/// this host's own: only those match a bare `user` key.
pub fn expand<L: Lookup + ?Sized>(
    tables: &L,
    rcpt: &Mailbox,
    home: &str,
    is_local: &dyn Fn(&str) -> bool,
) -> Result<Expansion, AliasError> {
    let mut run = Run {
        tables,
        home,
        is_local,
        path: Vec::new(),
        out: Vec::new(),
        rewritten: false,
    };
    let first = Address::of(rcpt, home);
    run.follow(first)?;
    Ok(Expansion {
        addresses: run.out.into_iter().map(Address::into_mailbox).collect(),
        rewritten: run.rewritten,
    })
}

/// A qualified address as the tables see it: the local part unquoted, the domain as text.
#[derive(Clone, Debug)]
struct Address {
    /// The mailbox to hand out when this address is final, as written.
    mailbox: Mailbox,
    /// The local part with quoting undone.
    user: String,
    /// The domain in lower case, without a final dot (`home` for an unqualified address).
    domain: String,
}

impl Address {
    fn of(mailbox: &Mailbox, home: &str) -> Address {
        let domain = match &mailbox.domain {
            Some(d) => format!("{d}"),
            None => String::from(home),
        };
        Address {
            user: mailbox.local_unquoted(),
            mailbox: mailbox.clone(),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// `user@domain`, the key and the identity of the address.
    fn key(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    fn same(&self, other: &Address) -> bool {
        self.user.eq_ignore_ascii_case(&other.user) && self.domain == other.domain
    }

    fn into_mailbox(self) -> Mailbox {
        self.mailbox
    }
}

struct Run<'a, L: ?Sized> {
    tables: &'a L,
    home: &'a str,
    is_local: &'a dyn Fn(&str) -> bool,
    /// The addresses being expanded, outermost first.
    path: Vec<Address>,
    out: Vec<Address>,
    rewritten: bool,
}

impl<'a, L: Lookup + ?Sized> Run<'a, L> {
    /// The key found for `address` and its value, in the order of the module docs.
    fn find(&self, address: &Address) -> Option<(String, &'a str)> {
        let tables: &'a L = self.tables;
        let full = address.key();
        if let Some(v) = tables.lookup(&full) {
            return Some((full, v));
        }
        if (self.is_local)(&address.domain) {
            if let Some(v) = tables.lookup(&address.user) {
                return Some((address.user.clone(), v));
            }
        }
        let catch_all = format!("@{}", address.domain);
        tables.lookup(&catch_all).map(|v| (catch_all, v))
    }

    fn follow(&mut self, address: Address) -> Result<(), AliasError> {
        if self.path.len() >= MAX_DEPTH {
            return Err(AliasError::TooDeep);
        }
        let Some((key, value)) = self.find(&address) else {
            return self.keep(address);
        };
        self.rewritten = true;
        let mut items = Vec::new();
        for item in crate::text::split_list(value) {
            items.push(self.read_item(&key, item)?);
        }
        self.path.push(address);
        for item in items {
            let current = self.path.last().map(|a| a.same(&item)).unwrap_or(false);
            if current {
                self.keep(item)?;
            } else if self.path.iter().any(|a| a.same(&item)) {
                return Err(AliasError::Loop {
                    address: item.key(),
                });
            } else {
                self.follow(item)?;
            }
        }
        self.path.pop();
        Ok(())
    }

    fn read_item(&self, key: &str, item: &str) -> Result<Address, AliasError> {
        let bad = || AliasError::BadValue {
            key: String::from(key),
            item: String::from(item),
        };
        let bare = item
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(item);
        let mailbox = parse_mailbox(bare).map_err(|_| bad())?;
        if mailbox.has_sender_routing() {
            return Err(bad());
        }
        Ok(Address::of(&mailbox, self.home))
    }

    fn keep(&mut self, address: Address) -> Result<(), AliasError> {
        if self.out.iter().any(|a| a.same(&address)) {
            return Ok(());
        }
        if self.out.len() >= MAX_ADDRESSES {
            return Err(AliasError::TooMany);
        }
        self.out.push(address);
        Ok(())
    }
}

/// A final address as a forward path (no source route).
pub fn to_path(mailbox: Mailbox) -> Path {
    Path {
        route: Vec::new(),
        mailbox: Some(mailbox),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn tables(texts: &[&str]) -> Vec<Table> {
        texts.iter().map(|t| Table::parse("va", t).0).collect()
    }

    fn local(domain: &str) -> bool {
        domain == "relay.test" || domain == "localhost"
    }

    /// The final addresses as text, `*` first when a rewrite happened.
    fn run(t: &[Table], rcpt: &str) -> Result<String, AliasError> {
        let mailbox = parse_mailbox(rcpt).unwrap();
        let e = expand(t, &mailbox, "relay.test", &local)?;
        let list: Vec<String> = e.addresses.iter().map(ToString::to_string).collect();
        let mark = if e.rewritten { "*" } else { "" };
        Ok(format!("{mark}{}", list.join(" ")))
    }

    #[test]
    fn key_order_and_domains() {
        let t = tables(&["root@relay.test     admin@example.org\n\
             root                 ops@example.org\n\
             @relay.test          catch@example.org\n\
             bob@far.example      bob@elsewhere.example\n\
             @partner.example     desk@example.org\n"]);
        let table: &[(&str, &str)] = &[
            // The full address wins over the bare user and the catch-all.
            ("root@relay.test", "*admin@example.org"),
            ("ROOT@Relay.Test.", "*admin@example.org"),
            // The bare user applies to every local domain, and to unqualified addresses.
            ("root@localhost", "*ops@example.org"),
            ("root", "*admin@example.org"),
            // ...but never to a domain that is not ours.
            ("root@far.example", "root@far.example"),
            // The catch-all takes the rest of its domain.
            ("anyone@relay.test", "*catch@example.org"),
            ("postmaster", "*catch@example.org"),
            ("anyone@localhost", "anyone@localhost"),
            // Any domain can be rewritten, not only local ones.
            ("bob@far.example", "*bob@elsewhere.example"),
            ("alice@far.example", "alice@far.example"),
            ("x@partner.example", "*desk@example.org"),
        ];
        for (rcpt, want) in table {
            assert_eq!(run(&t, rcpt).as_deref(), Ok(*want), "{rcpt}");
        }
    }

    #[test]
    fn several_values_recursion_and_self() {
        let t = tables(&[
            "team@relay.test  a@example.org, <b@example.org> ops\n\
             ops@relay.test   ops@relay.test c@example.org\n\
             a@example.org    a@example.org a2@example.org\n\
             twice@relay.test a@example.org a@example.org\n",
            // A second table is searched after the first.
            "ops c@example.org\nnext@relay.test d@example.org\n",
        ]);
        assert_eq!(
            run(&t, "team@relay.test").as_deref(),
            Ok("*a@example.org a2@example.org b@example.org ops@relay.test c@example.org")
        );
        assert_eq!(
            run(&t, "twice@relay.test").as_deref(),
            Ok("*a@example.org a2@example.org")
        );
        assert_eq!(run(&t, "next@relay.test").as_deref(), Ok("*d@example.org"));
        assert_eq!(run(&[], "x@relay.test").as_deref(), Ok("x@relay.test"));
    }

    #[test]
    fn loops_depth_size_and_bad_values_are_refused() {
        let t = tables(&["a@relay.test b@relay.test\n\
             b@relay.test c@example.org, a@relay.test\n\
             bad@relay.test \"unclosed@example.org\n\
             route@relay.test x%y@example.org\n"]);
        assert_eq!(
            run(&t, "a@relay.test"),
            Err(AliasError::Loop {
                address: "a@relay.test".into()
            })
        );
        assert!(matches!(
            run(&t, "bad@relay.test"),
            Err(AliasError::BadValue { .. })
        ));
        assert!(matches!(
            run(&t, "route@relay.test"),
            Err(AliasError::BadValue { .. })
        ));
        // A chain of distinct aliases deeper than the limit.
        let chain: String = (0..=MAX_DEPTH)
            .map(|i| format!("u{i}@example.org u{}@example.org\n", i + 1))
            .collect();
        let t = tables(&[&chain]);
        assert_eq!(run(&t, "u0@example.org"), Err(AliasError::TooDeep));
        let short: String = (0..10)
            .map(|i| format!("u{i}@example.org u{}@example.org\n", i + 1))
            .collect();
        assert_eq!(
            run(&tables(&[&short]), "u0@example.org").as_deref(),
            Ok("*u10@example.org")
        );
        // A fan-out wider than the limit.
        let wide: String = (0..=MAX_ADDRESSES)
            .map(|i| format!("w{i}@example.org "))
            .collect();
        let t = tables(&[&format!("big@relay.test {wide}\n")]);
        assert_eq!(run(&t, "big@relay.test"), Err(AliasError::TooMany));
        assert!(AliasError::TooMany
            .to_string()
            .contains("virtual_alias_maps"));
    }

    #[test]
    fn to_path_has_no_route() {
        let p = to_path(parse_mailbox("a@example.org").unwrap());
        assert!(p.route.is_empty());
        assert_eq!(p.to_string(), "a@example.org");
    }
}
