//! The SMTP server side shared by both roles: binding listeners, accepting within the
//! session limits, driving one connection around the core's
//! [`ServerSession`](certrelay_core::server::ServerSession) (STARTTLS included), and
//! storing what it receives.
//!
//! The relay (`certrelayd`) stores into its spool and wakes its queue runner. The laptop
//! (`certrelay run`, `sendmail -bs`) stores into the maildrop, because only the holder of
//! the run lock may open the laptop's spool (see the laptop binary's `laptop_smtpd`).
//! Which of the two is the [`store::Store`]'s choice; the connection driver does not know.
//!
//! Not here: configuration generations, reload and signals (the relay's binary), and the
//! delivery of what was stored (the queue runner).

pub mod accept;
pub mod enroll;
pub mod limits;
pub mod listen;
pub mod listener;
pub mod peername;
pub mod proxy;
pub mod session;
pub mod store;
pub mod tlsinfo;

pub use accept::{ListenerSource, Server};
