//! The IO side shared by both binaries: spool, delivery engine, TLS set-up.
pub mod conf;
pub mod spool;
pub mod tls;
