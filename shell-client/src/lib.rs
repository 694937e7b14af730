//! The IO side shared by both binaries: spool, delivery engine, TLS set-up.
pub mod spool;
pub mod tls;
