//! The IO side shared by both binaries: spool, delivery engine, SMTP server driver
//! ([`smtpd`]), TLS set-up, configuration loading.
pub mod clock;
pub mod conf;
pub mod conn_cache;
pub mod control;
pub mod deliver;
pub mod laptop;
pub mod laptop_smtpd;
pub mod maildrop;
pub mod netwatch;
pub mod outbound;
pub mod pki;
pub mod probe;
pub mod resolver;
pub mod route;
pub mod runlock;
pub mod runner;
pub mod sendmail;
pub mod smtp_conn;
pub mod smtpd;
pub mod spool;
pub mod tls;
pub mod tools;
