//! Starting this program again as a child (the demo's relay, `sendmail`'s detached delivery
//! run), also where the program itself runs under a user-mode emulator with no binfmt
//! registration (`qemu-aarch64 ./certrelayd demo` on a machine of another architecture):
//! the kernel then refuses the program (`Exec format error`), and the child is started
//! again through the same emulator, found on PATH.
//!
//! Not here: what the child does, its arguments, or waiting for it; the callers decide.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Child, Command};

/// Starts `exe`, with the arguments and standard streams `configure` sets. When the kernel
/// cannot run it (`Exec format error`), starts `emulator exe ...` instead, configured the
/// same way; the error then names both failures. Any other failure is returned as it is.
pub fn spawn(exe: &Path, emulator: &str, configure: impl Fn(&mut Command)) -> io::Result<Child> {
    let start = |program: &OsStr, first: Option<&Path>| {
        let mut command = Command::new(program);
        if let Some(first) = first {
            command.arg(first);
        }
        configure(&mut command);
        command.spawn()
    };
    match start(exe.as_os_str(), None) {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => start(OsStr::new(emulator), Some(exe))
            .map_err(|again| {
                io::Error::new(
                    again.kind(),
                    format!("{e}; through {emulator} neither: {again}"),
                )
            }),
        started => started,
    }
}

/// The name of QEMU's user-mode emulator for the architecture this program was built for
/// (`qemu-aarch64`, `qemu-arm`, `qemu-mipsel`, `qemu-x86_64`).
pub fn emulator() -> String {
    let arch = match std::env::consts::ARCH {
        "x86" => "i386",
        "powerpc" => "ppc",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips" | "mips64" if cfg!(target_endian = "little") => {
            return format!("qemu-{}el", std::env::consts::ARCH)
        }
        other => other,
    };
    format!("qemu-{arch}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::process::Stdio;

    /// A file the kernel refuses to run (`Exec format error`): a script without `#!`,
    /// which stands in for a binary of another architecture.
    fn foreign_program(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("certrelay-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("foreign");
        std::fs::write(&path, "echo \"ran with $*\" >&2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    fn configure(c: &mut Command) {
        c.args(["-c", "/some/dir", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    }

    #[test]
    fn a_program_the_kernel_refuses_is_started_through_the_emulator() {
        let (dir, exe) = foreign_program("foreign");
        // `sh` plays the emulator: it is given the program, then the arguments.
        let mut child = spawn(&exe, "sh", configure).expect("started through sh");
        let mut said = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut said)
            .unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(said, "ran with -c /some/dir run\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_emulator_is_named_with_the_first_failure() {
        let (dir, exe) = foreign_program("noemu");
        let e = spawn(&exe, "qemu-certrelay-test-none", configure).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("format error"), "{text}");
        assert!(
            text.contains("through qemu-certrelay-test-none neither"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_program_is_not_handed_to_the_emulator() {
        // Only `Exec format error` means "another architecture"; `sh` would run anything.
        let e = spawn(Path::new("/nonexistent/certrelayd"), "sh", configure).unwrap_err();
        assert!(!e.to_string().contains("through sh"), "{e}");
    }

    #[test]
    fn the_emulator_is_qemus_name_for_this_architecture() {
        let expected = if cfg!(target_arch = "x86_64") {
            "qemu-x86_64"
        } else if cfg!(target_arch = "aarch64") {
            "qemu-aarch64"
        } else if cfg!(target_arch = "arm") {
            "qemu-arm"
        } else if cfg!(all(target_arch = "mips", target_endian = "little")) {
            "qemu-mipsel"
        } else {
            return;
        };
        assert_eq!(emulator(), expected);
    }
}
