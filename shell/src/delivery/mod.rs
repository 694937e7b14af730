//! Onward delivery for both roles: the queue runner, one delivery attempt, next-hop routes
//! and DNS, the SMTP client connection and its cache, and main.cf's delivery settings.
//!
//! Not here: how messages enter the spool (the listener's store, the laptop's maildrop) or
//! when a role asks for a run (its binary).
pub mod conn_cache;
pub mod connection;
pub mod deliver;
pub mod last_relay;
pub mod outbound;
pub mod resolver;
pub mod route;
pub mod runner;
