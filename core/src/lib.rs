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
//! - [`client`]: the SMTP client session that delivers queued mail, with its TLS decisions
//!   and its STARTTLS hand-over.
//! - [`policy`], [`restriction`]: relay restrictions (`permit_tls_clientcerts`,
//!   `reject_unauth_destination`, ...) and their evaluation; [`alias`]: `virtual_alias_maps`
//!   rewriting, with which the policy refuses mail that would stay on this host;
//!   [`ccert_senders`]: the senders each client certificate owns (`smtpd_sender_ccert_maps`).
//! - [`config`], [`settings`], [`table`], [`tls_policy`], [`net`]: Postfix-style
//!   `main.cf`/`master.cf` and the typed settings built from them, lookup tables, per-site TLS
//!   policy, address lists; [`text`] and [`diagnostic`] are the text conventions and the
//!   `file:line` messages they all share.
//! - [`fingerprint`], [`cert`], [`facts`]: certificate and public-key digests, the
//!   fingerprint map, chain trust and depth, and what the shell learned about a peer.
//! - [`queue`], [`dsn`], [`dns`], [`nexthop`]: the pure parts of the spool and delivery engine
//!   (queue records, retry schedule, bounces, DNS messages, next-hop choice).
//! - [`dkim`]: DKIM canonicalization and the signature field, without the cryptography.
//! - [`proxy`]: the PROXY protocol header an L4 balancer sends before the client's bytes.
//! - [`address`], [`reply`], [`line`](mod@line), [`hosts`], [`time`]: mail addresses and domains, SMTP
//!   replies, bounded line buffers, the hosts file's text, and time as the shell reads it.
//!
//! ## Run loop
//!
//! Both sessions, [`server::ServerSession`] and [`client::ClientSession`], are driven the
//! same way (after quinn-proto and str0m). The shell owns the socket, the TLS stream, the
//! files and the clock, and does, in this order:
//!
//! 1. Create the session with `new(settings, peer, now)`. It may already have outputs (the
//!    server its greeting).
//! 2. Drain `poll_output()` until it returns `None`, acting on each output in order: a
//!    [`server::ServerOutput`] (bytes to send, a message to store piece by piece, a log
//!    line, `StartTls`, `Close`) or a [`client::ClientOutput`] (bytes to send, `StartTls`,
//!    `Ready`, a request for the next body chunk, a message's report, `Close`). On
//!    `StartTls`, hand the session over with `start_tls(self)` (below) before anything else.
//! 3. Ask `poll_timeout()` for the next deadline and arm one timer for it (`None`: no
//!    timer, as while the server waits for the shell to store a message).
//! 4. Wait for whichever comes first and hand it in, then go to 2:
//!    - bytes from the peer: `handle_input(bytes, now)`;
//!    - a fact of the shell's: `handle_event(event, now)`, with a [`server::ServerEvent`]
//!      (message stored, storing failed, queue full, connection lost) or a
//!      [`client::ClientEvent`] (a body chunk, end of body, connection lost);
//!    - the timer: `handle_timeout(now)` (early calls are ignored).
//!
//! The client also takes the shell's decisions when it says `Ready`: `send_message` the
//! next message, or `quit`. Time is an [`Instant`] (milliseconds on a clock the shell
//! chooses), never read here.
//!
//! ## STARTTLS
//!
//! The hand-over is enforced by types and has one shape on both sides: `start_tls(self)`
//! consumes the session and returns `Result<Handshake, Self>`. `Err` gives the session back
//! unchanged when it did not ask for TLS or has outputs not yet polled. `Ok` is a
//! [`server::ServerTlsHandshake`] or [`client::ClientTlsHandshake`], which has no input
//! method: the plaintext buffered or fed after the STARTTLS command (server) or after the
//! server's `220` (client) is dropped there and counted (`discarded()`), and can never be
//! read inside TLS. The shell bounds the handshake by the handshake's `poll_timeout()`, then
//! calls `established(...)`, which gives the session back to continue inside TLS, or
//! `failed(...)`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod address;
pub mod alias;
pub mod ccert_senders;
pub mod cert;
pub mod client;
pub mod config;
pub mod crlf;
pub mod diagnostic;
pub mod dkim;
pub mod dns;
pub mod dsn;
pub mod enroll;
pub mod facts;
pub mod fingerprint;
pub mod hosts;
pub mod line;
pub mod message;
pub mod net;
pub mod nexthop;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod reply;
pub mod restriction;
pub mod server;
pub mod settings;
pub mod table;
pub mod text;
pub mod time;
pub mod tls_policy;

pub use time::Instant;
