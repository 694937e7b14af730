//! # certrelay-core
//!
//! The protocol heart of certrelay, with no input/output of its own.
//!
//! ## What this crate does not do
//!
//! It opens no socket, reads no file, looks at no clock, starts no thread and draws no random
//! number. It does not speak TLS: it decides *when* TLS starts and judges the certificates the
//! shell hands it, but the handshake belongs to the shell (rustls). It does not resolve names.
//! Everything here is bytes and events in, bytes and events out, so every dialogue can be
//! driven in a unit test on simulated time.
//!
//! ## What it does
//!
//! - [`server`]: the SMTP server session (RFC 5321 with ESMTP), its DATA receiver and the
//!   STARTTLS hand-over.
//! - [`client`]: the SMTP client session that delivers queued mail, with its TLS decisions.
//! - [`policy`]: relay restrictions (`permit_tls_clientcerts`, `reject_unauth_destination`, ...).
//! - [`config`], [`table`], [`tls_policy`], [`net`]: Postfix-style `main.cf`/`master.cf`, lookup
//!   tables, per-site TLS policy, address lists.
//! - [`fingerprint`], [`cert`]: certificate and public-key digests, the fingerprint map, chain
//!   trust and depth.
//! - [`queue`], [`dsn`], [`dns`], [`nexthop`]: the pure parts of the spool and delivery engine
//!   (queue records, retry schedule, bounces, DNS messages, next-hop choice).
//! - [`address`]: mail addresses and domains as SMTP carries them.
//!
//! ## Run loop
//!
//! Both sessions follow one pattern (after quinn-proto and str0m). The shell owns the socket,
//! the TLS stream, the files and the clock, and loops:
//!
//! 1. Feed what arrived: `handle_input(bytes, now)`. Feed shell-side facts as events:
//!    `handle_event(event, now)` (TLS established, message stored, timer fired, ...).
//! 2. Drain outputs with `poll_output()` until it returns `None`, acting on each in order:
//!    bytes to transmit, message chunks to store, "start TLS now", "close".
//! 3. Ask `poll_timeout()` for the next deadline and arm one timer for it; when it fires, call
//!    `handle_timeout(now)` and go to 2.
//!
//! Time is an [`Instant`] (milliseconds on a clock the shell chooses), never read here.
//!
//! STARTTLS is enforced by types: when a session asks for TLS, the shell calls its
//! `start_tls(self)`, which consumes the session and returns a value with no input method.
//! Whatever plaintext was already buffered behind the STARTTLS command (or behind the server's
//! `220`) is dropped there and counted; it can never be executed inside the TLS session.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod address;
pub mod cert;
pub mod client;
pub mod config;
pub mod diagnostic;
pub mod dns;
pub mod dsn;
pub mod facts;
pub mod fingerprint;
pub mod hosts;
pub mod line;
pub mod message;
pub mod net;
pub mod nexthop;
pub mod policy;
pub mod queue;
pub mod reply;
pub mod restriction;
pub mod server;
pub mod settings;
pub mod table;
pub mod time;
pub mod text;
pub mod tls_policy;

pub use time::Instant;
