//! The relay's memory allocator: which one is installed, and the two moments the serving
//! loop tells it about (serving begins; a minute went by). Nothing else.

/// The allocator: the system's, keeping a few freed large blocks for reuse once the relay
/// serves (see `certrelay_shell::alloc`: musl's own allocator maps and unmaps memory for
/// each message's buffers). `--features mimalloc` (see Cargo.toml) puts mimalloc instead.
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: certrelay_shell::alloc::KeepLarge = certrelay_shell::alloc::KeepLarge::new();
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set-up is done and the relay serves: from now on freed large blocks are kept for reuse
/// (start-up's one-off buffers went back to the system).
pub fn serving_begins() {
    #[cfg(not(feature = "mimalloc"))]
    ALLOCATOR.keep_from_now();
}

/// Called once a minute: kept blocks go back to the system when the relay went idle.
pub fn housekeeping() {
    #[cfg(not(feature = "mimalloc"))]
    ALLOCATOR.release_if_unused();
}
