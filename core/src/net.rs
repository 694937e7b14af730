//! Address lists (`mynetworks`): networks in CIDR notation.

use core::net::IpAddr;

/// One network, `192.0.2.0/24` or `[2001:db8::]/32` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}
