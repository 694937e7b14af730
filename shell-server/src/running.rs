//! How the administrator's commands find the running relay and hear back from it: the pid
//! file, the reload report, the status file's name, and the signals.
//!
//! Both files live in the queue directory and are written by the relay after it dropped
//! to `mail_owner` (in its working directory, each replaced whole by a rename). Root never
//! writes into that directory, which `mail_owner` controls: a file root wrote there could
//! be unlinked and replaced by `mail_owner` anyway. So the commands, often run as root,
//! treat both files as claims: read without following links, at most a few bytes, from a
//! plain file only; and a process is signalled only when `/proc` shows that it runs the
//! same program (`certrelayd`), never on the word of the pid file alone.
//!
//! The report says when the relay began its last reload, on the system-wide monotonic
//! clock, so a command that changed a file knows whether that reload read its change.
//!
//! Not here: what a reload does (`serve`), what is checked (`generation`).

use nix::sys::signal::{self, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pid file, in the queue directory.
pub const PID_FILE: &str = "certrelayd.pid";

/// The reload report, in the queue directory.
pub const REPORT_FILE: &str = "certrelayd.reload";

/// The status file (sessions, counts, listeners), in the queue directory: rewritten every
/// few seconds by the relay, read by `certrelayd status`.
pub const STATUS_FILE: &str = "certrelayd.status";

/// How long a command waits for the relay to report a reload.
pub const REPORT_WAIT: Duration = Duration::from_secs(5);

/// The most a command reads of either file.
const MAX_READ: u64 = 64 * 1024;

/// Nanoseconds on the monotonic clock, the same for every process of the machine and never
/// set back.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

/// How the relay's last (re)load went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The relay's process id.
    pub pid: u32,
    /// Configurations loaded since the start, the first one included.
    pub generation: u64,
    /// When the load began reading the files ([`monotonic_ns`]).
    pub began: u64,
    /// Empty when it loaded; else why it was refused (each with its file:line).
    pub refused: Vec<String>,
}

impl Report {
    /// The file's text: one `name value` per line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "pid {}\ngeneration {}\nbegan {}\nresult {}\n",
            self.pid,
            self.generation,
            self.began,
            if self.refused.is_empty() {
                "loaded"
            } else {
                "refused"
            }
        );
        for why in &self.refused {
            // One line each, whatever the message holds.
            let _ = writeln!(out, "error {}", why.replace(['\n', '\r'], " "));
        }
        out
    }

    /// Reads [`Report::render`]'s text; `None` when it is not that.
    pub fn parse(text: &str) -> Option<Report> {
        let mut pid = None;
        let mut generation = None;
        let mut began = None;
        let mut result = None;
        let mut refused = Vec::new();
        for line in text.lines() {
            let (name, value) = line.split_once(' ')?;
            match name {
                "pid" => pid = value.parse().ok(),
                "generation" => generation = value.parse().ok(),
                "began" => began = value.parse().ok(),
                "result" => result = Some(value == "loaded"),
                "error" => refused.push(value.to_owned()),
                _ => {}
            }
        }
        let loaded = result?;
        if loaded != refused.is_empty() {
            return None;
        }
        Some(Report {
            pid: pid?,
            generation: generation?,
            began: began?,
            refused,
        })
    }
}

/// The relay's side: writes `name` in the working directory (the queue directory) whole,
/// through a temporary file and a rename.
fn replace(name: &str, text: &str) -> io::Result<()> {
    replace_with_mode(name, text, 0o644)
}

/// [`replace`], the file created with `mode` (before the umask).
pub fn replace_with_mode(name: &str, text: &str, mode: u32) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    drop(file);
    std::fs::rename(&tmp, name)
}

/// The relay's side: its process id, for the commands.
pub fn write_pid() -> io::Result<()> {
    replace(PID_FILE, &format!("{}\n", std::process::id()))
}

/// The relay's side: at a clean stop.
pub fn remove_files() {
    let _ = std::fs::remove_file(PID_FILE);
    let _ = std::fs::remove_file(REPORT_FILE);
    let _ = std::fs::remove_file(STATUS_FILE);
}

/// The relay's side: how the last load went.
pub fn write_report(report: &Report) -> io::Result<()> {
    replace(REPORT_FILE, &report.render())
}

/// Reads a small plain file that another account may control: no link is followed, no
/// special file read (a FIFO would block), at most [`MAX_READ`] bytes.
fn read_claim(path: &Path) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a plain file",
        ));
    }
    let mut text = String::new();
    file.take(MAX_READ).read_to_string(&mut text)?;
    Ok(text)
}

/// The report in `queue_directory`, if there is a readable one.
pub fn read_report(queue_directory: &Path) -> Option<Report> {
    Report::parse(&read_claim(&queue_directory.join(REPORT_FILE)).ok()?)
}

/// Why no relay could be signalled.
#[derive(Debug)]
pub enum NotRunning {
    /// No pid file (or an unreadable one).
    NoPidFile(PathBuf, io::Error),
    /// Not a process id.
    Garbled(PathBuf),
    /// No such process, or one that is not certrelayd.
    Stale(PathBuf, u32),
}

impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRunning::NoPidFile(path, e) => write!(f, "{}: {e}", path.display()),
            NotRunning::Garbled(path) => write!(f, "{}: not a process id", path.display()),
            NotRunning::Stale(path, pid) => write!(
                f,
                "{}: process {pid} is not a running certrelayd",
                path.display()
            ),
        }
    }
}

/// The process id of the relay that serves `queue_directory`, when its pid file names a
/// running certrelayd.
pub fn find_relay(queue_directory: &Path) -> Result<Pid, NotRunning> {
    let path = queue_directory.join(PID_FILE);
    let text = read_claim(&path).map_err(|e| NotRunning::NoPidFile(path.clone(), e))?;
    // 0 and negative numbers signal process groups and everything; never those.
    let pid: u32 = text
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0 && i32::try_from(p).is_ok())
        .ok_or_else(|| NotRunning::Garbled(path.clone()))?;
    if pid == std::process::id() || !runs_this_program(pid) {
        return Err(NotRunning::Stale(path, pid));
    }
    Ok(Pid::from_raw(pid as i32))
}

/// True when process `pid` runs a program of this one's name (`certrelayd`, the same
/// binary or an upgraded one), as `/proc/PID/exe` shows.
fn runs_this_program(pid: u32) -> bool {
    let name = |link: &Path| {
        let target = std::fs::read_link(link).ok()?;
        let name = target.file_name()?.to_str()?.to_owned();
        // The running binary was replaced by an upgrade.
        Some(name.trim_end_matches(" (deleted)").to_owned())
    };
    let theirs = name(Path::new(&format!("/proc/{pid}/exe")));
    let ours = name(Path::new("/proc/self/exe"));
    theirs.is_some() && theirs == ours
}

/// Sends `sig` to the relay `pid` found by [`find_relay`].
pub fn signal(pid: Pid, sig: Signal) -> nix::Result<()> {
    signal::kill(pid, sig)
}

/// What came of a reload that was asked for.
#[derive(Debug)]
pub enum Reloaded {
    /// The relay loaded the configuration (this generation).
    Loaded(u64),
    /// The relay refused it, for these reasons.
    Refused(Vec<String>),
    /// No report of a reload begun after `since` came within [`REPORT_WAIT`].
    Silent,
}

/// Waits until relay `pid` reports a load it began at or after `since`
/// ([`monotonic_ns`], taken before the signal and after the change was written).
pub fn await_reload(queue_directory: &Path, pid: Pid, since: u64) -> Reloaded {
    let until = Instant::now() + REPORT_WAIT;
    loop {
        if let Some(r) = read_report(queue_directory) {
            if i64::from(r.pid) == i64::from(pid.as_raw()) && r.began >= since {
                return if r.refused.is_empty() {
                    Reloaded::Loaded(r.generation)
                } else {
                    Reloaded::Refused(r.refused)
                };
            }
        }
        if Instant::now() >= until {
            return Reloaded::Silent;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_and_garbage_is_no_report() {
        for report in [
            Report {
                pid: 42,
                generation: 3,
                began: 123_456_789,
                refused: Vec::new(),
            },
            Report {
                pid: 42,
                generation: 3,
                began: 5,
                refused: vec!["main.cf:7: error: bad".into(), "two".into()],
            },
        ] {
            assert_eq!(Report::parse(&report.render()), Some(report));
        }
        // A line break inside a reason stays inside it.
        let broken = Report {
            pid: 1,
            generation: 1,
            began: 1,
            refused: vec!["one\nresult loaded".into()],
        };
        assert_eq!(
            Report::parse(&broken.render()).unwrap().refused,
            ["one result loaded"]
        );
        for garbage in [
            "",
            "pid 1\ngeneration 1\nbegan 1\n",
            "pid x\ngeneration 1\nbegan 1\nresult loaded\n",
            "pid 1\ngeneration 1\nbegan 1\nresult loaded\nerror contradicts\n",
            "pid 1\ngeneration 1\nbegan 1\nresult refused\n",
            "\u{0}\u{1}",
        ] {
            assert_eq!(Report::parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_pid_file_is_believed_only_for_a_running_certrelayd() {
        let dir = std::env::temp_dir().join(format!("certrelayd-pidfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join(PID_FILE);
        assert!(matches!(find_relay(&dir), Err(NotRunning::NoPidFile(..))));
        // Process groups and every process: never.
        for text in ["0\n", "-1\n", "init\n", "4294967295\n"] {
            std::fs::write(&pid_file, text).unwrap();
            assert!(
                matches!(find_relay(&dir), Err(NotRunning::Garbled(_))),
                "{text}"
            );
        }
        // pid 1 is running, but it is not this program.
        std::fs::write(&pid_file, "1\n").unwrap();
        assert!(matches!(find_relay(&dir), Err(NotRunning::Stale(_, 1))));
        // A link is not followed, even to a good pid file.
        let elsewhere = dir.join("elsewhere");
        std::fs::write(&elsewhere, "1\n").unwrap();
        std::fs::remove_file(&pid_file).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &pid_file).unwrap();
        assert!(matches!(find_relay(&dir), Err(NotRunning::NoPidFile(..))));
        // A FIFO is not read (it would block).
        std::fs::remove_file(&pid_file).unwrap();
        nix::unistd::mkfifo(&pid_file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(find_relay(&dir), Err(NotRunning::NoPidFile(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
