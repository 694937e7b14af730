//! What a closed standard output does to a command: `certrelayd queue | head` should end
//! quietly, as `mailq | head` does, not panic with "failed printing to stdout". Rust
//! starts every program with SIGPIPE ignored, so a write to a closed pipe fails and
//! `println!` panics; the printing commands put the signal's default back (the process
//! ends silently, as a Unix filter does). Programs that serve or talk to networks keep it
//! ignored: a peer that goes away must be an error on one connection, never the end of the
//! process. Nothing else about signals is here.

/// Puts SIGPIPE back to its default action: a write to a closed pipe ends the process.
/// For commands that only print.
pub fn end_quietly_on_closed_output() {
    set(libc::SIG_DFL);
}

/// Ignores SIGPIPE again (Rust's start-up setting): writes to closed pipes and sockets
/// fail with an error instead. For commands that serve or connect anywhere.
pub fn ignore() {
    set(libc::SIG_IGN);
}

fn set(action: libc::sighandler_t) {
    // SAFETY: signal(2) with SIG_DFL or SIG_IGN installs no handler of ours, so nothing
    // runs in signal context; it is called from the main thread before anything else
    // depends on the disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, action);
    }
}
