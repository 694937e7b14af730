//! The hosts file (`/etc/hosts`): the name of an address and the addresses of a name, as
//! a system resolver set to read files before DNS finds them. The shell reads the file;
//! this reads its text.

use alloc::vec::Vec;
use core::net::IpAddr;

/// Each line as (address, names), comments and lines without a valid address left out.
fn entries(text: &str) -> impl Iterator<Item = (IpAddr, core::str::SplitWhitespace<'_>)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let addr = fields.next()?.parse().ok()?;
        Some((addr, fields))
    })
}

/// The canonical name of `addr`: the first name of the first line that lists it.
pub fn name_of(text: &str, addr: IpAddr) -> Option<&str> {
    entries(text)
        .filter(|(a, _)| *a == addr)
        .find_map(|(_, mut names)| names.next())
}

/// Every address listed for `name` (canonical name or alias, any case), in file order.
pub fn addresses_of(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.strip_suffix('.').unwrap_or(name);
    entries(text)
        .filter(|(_, names)| names.clone().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|(a, _)| a)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "# comment\n\
        127.0.0.1\tlocalhost\n\
        ::1 localhost ip6-localhost # trailing comment\n\
        192.0.2.7 Laptop.Example.NET laptop\n\
        not-an-address somename\n\
        192.0.2.8 laptop\n\
        192.0.2.9\n";

    #[test]
    fn names_and_addresses() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(name_of(HOSTS, ip("127.0.0.1")), Some("localhost"));
        assert_eq!(name_of(HOSTS, ip("::1")), Some("localhost"));
        assert_eq!(name_of(HOSTS, ip("192.0.2.7")), Some("Laptop.Example.NET"));
        assert_eq!(name_of(HOSTS, ip("192.0.2.9")), None);
        assert_eq!(name_of(HOSTS, ip("192.0.2.99")), None);
        assert_eq!(
            addresses_of(HOSTS, "LAPTOP"),
            [ip("192.0.2.7"), ip("192.0.2.8")]
        );
        assert_eq!(
            addresses_of(HOSTS, "localhost."),
            [ip("127.0.0.1"), ip("::1")]
        );
        assert!(addresses_of(HOSTS, "somename").is_empty());
    }
}
