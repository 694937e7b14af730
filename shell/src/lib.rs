//! The IO both certrelay binaries run on, with smol: the spool, the delivery engine, the
//! SMTP listener, TLS set-up, certificates and configuration loading.
//!
//! Not here: anything only one role does. The laptop's queue commands, `sendmail`, its
//! local listener's policy and its run lock live in `shell-client`; the relay's serving
//! loop, reloads, privilege drop and admin commands in `shell-server`. Nothing in this
//! crate calls into either, and protocol decisions belong to `certrelay-core`.
pub mod alloc;
pub mod clock;
pub mod conf;
pub mod delivery;
pub mod error;
pub mod io;
pub mod logging;
pub mod pki;
pub mod reexec;
pub mod sigpipe;
pub mod smtpd;
pub mod spool;
pub mod status;
pub mod tls;
