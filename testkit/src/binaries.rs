//! The workspace's real binaries (`certrelayd`, `certrelay`), built once per test process
//! with the cargo that runs the tests, and short ways to run them to completion. Daemons
//! that keep running are [`crate::daemon::Daemon`]'s.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace's root directory (this kit lives in `testkit/` under it).
pub fn workspace_root() -> PathBuf {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent().expect("testkit/ has a parent").to_path_buf()
}

/// Path of a built binary of the workspace (`certrelayd` or `certrelay`), built once per
/// test process with the same cargo that runs the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            // The same package set as `cargo test --workspace`, so nothing is rebuilt.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug")
    });
    dir.join(name)
}

/// Runs a binary with arguments and returns its output (never waits for stdin).
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("start binary")
}

/// As [`run`], failing the test unless the binary succeeds.
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `certrelayd -c DIR ARGS...` and returns its output.
pub fn certrelayd(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["-c", dir.to_str().expect("a UTF-8 test directory")];
    all.extend_from_slice(args);
    run("certrelayd", &all)
}

/// As [`certrelayd`], failing the test unless it succeeds.
pub fn certrelayd_ok(dir: &Path, args: &[&str]) -> Output {
    let out = certrelayd(dir, args);
    assert!(
        out.status.success(),
        "certrelayd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
