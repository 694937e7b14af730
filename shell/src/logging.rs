//! The log of both programs, in Postfix's shape, sent where a mail administrator looks.
//!
//! A line names the program, the service and the process: `certrelay/smtpd[4711]: warning:
//! ...` (`syslog_name`, then the service the logging module belongs to, see
//! [`service_of`]). Levels are written as Postfix writes them: `warning: `, `error: `,
//! nothing for information (`debug: `, `trace: ` for the rest).
//!
//! Where the lines go, decided once main.cf is read ([`configure`]):
//! - `maillog_file` when it is set: appended one line per write, each line with an RFC 3339
//!   time in UTC and the host name in front, as rsyslog writes its files (so fail2ban and
//!   logwatch read it as they read mail.log). The file is opened when the program starts, so
//!   a relay started as root keeps writing to it after it becomes `mail_owner`; [`reopen`]
//!   (SIGHUP) opens the path again for log rotation when that account may.
//! - otherwise syslog, through `/dev/log` (RFC 3164 datagrams with `syslog_facility`,
//!   identifier `syslog_name/service`), when standard error leads nowhere a person reads: a
//!   socket (systemd's journal stream), `/dev/null`, or closed;
//! - otherwise standard error, as plain lines (`warning: ...`): a terminal, a service
//!   manager's pipe (procd, runit, docker) or a redirected file add their own time and name.
//!
//! Before [`configure`] (and for the commands that never call it) lines go to standard
//! error. `RUST_LOG` filters as env_logger reads it. Control characters in a message are
//! written as `?`, so that text from a client cannot make a line of its own.
//!
//! Not here: what is logged and when (the modules, and `smtpd_tls_loglevel` in the
//! session), reading main.cf (`conf`), signals (the roles' serving loops call [`reopen`]).

use certrelay_core::config::{Config, Diagnostic};
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// For the test suite only: a socket path used instead of [`DEV_LOG`], so that a test can
/// receive the datagrams. Nothing else should set it.
pub const TEST_ONLY_DEV_LOG_VAR: &str = "CERTRELAY_TEST_ONLY_DEV_LOG";

/// The longest message sent to syslog whole; longer ones are cut (journald and rsyslog take
/// 8 KiB, busybox's syslogd cuts at its own buffer).
const SYSLOG_MAX: usize = 8192;
/// What a message is cut to when the socket refuses a datagram as too big.
const SYSLOG_SMALL: usize = 1024;

/// The services a line may name, from the module that logs it (a prefix of the module path
/// as `log` records it). Anything else is the program's own service, given to [`init`].
const SERVICES: &[(&str, &str)] = &[
    ("certrelay_shell::smtpd", "smtpd"),
    ("certrelay::laptop_smtpd", "smtpd"),
    ("certrelay_shell::delivery", "smtp"),
    ("certrelay_shell::spool::maildrop", "pickup"),
];

/// The service a log line from module `target` belongs to: `smtpd` for the SMTP listener
/// and its sessions, `smtp` for delivery (the queue runner and the SMTP client are one task
/// here), `pickup` for the laptop's maildrop; `default` (`master` for the serving loops)
/// for the rest.
pub fn service_of(target: &str, default: &'static str) -> &'static str {
    SERVICES
        .iter()
        .find(|(prefix, _)| {
            target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
        .map_or(default, |(_, service)| service)
}

/// How a level is written in front of the message.
pub fn level_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error: ",
        log::Level::Warn => "warning: ",
        log::Level::Info => "",
        log::Level::Debug => "debug: ",
        log::Level::Trace => "trace: ",
    }
}

/// Syslog severity of a level (RFC 5424 numbers).
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// `warning: text`, with every control character written as `?`.
pub fn plain_line(level: log::Level, message: &fmt::Arguments<'_>) -> String {
    let mut out = String::from(level_prefix(level));
    push_printable(&mut out, message);
    out
}

/// Appends `message`, control characters as `?`.
fn push_printable(out: &mut String, message: &fmt::Arguments<'_>) {
    let start = out.len();
    // Writing to a String cannot fail.
    let _ = out.write_fmt(*message);
    if out[start..].chars().any(char::is_control) {
        let clean: String = out[start..]
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        out.truncate(start);
        out.push_str(&clean);
    }
}

/// `certrelay/smtpd[4711]: ` as syslog tags a line.
pub fn tag(ident: &str, service: &str, pid: u32) -> String {
    format!("{ident}/{service}[{pid}]: ")
}

/// A `maillog_file` line without its line end: `2025-12-04T01:02:03.000042+00:00 host
/// certrelay/smtpd[4711]: warning: ...`.
pub fn file_line(at: SystemTime, host: &str, tag: &str, plain: &str) -> String {
    format!("{} {host} {tag}{plain}", rfc3339_utc(at))
}

/// `2025-12-04T01:02:03.000042+00:00`: RFC 3339 in UTC with microseconds, as rsyslog writes
/// by default; fail2ban reads the offset, so the host's time zone does not matter.
pub fn rfc3339_utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = certrelay_core::time::civil_time(since.as_secs(), 0);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        since.subsec_micros()
    )
}

/// An RFC 3164 datagram: `<PRI>tag message`, without a time stamp, which the syslog daemon
/// adds on receipt in its own time zone.
pub fn syslog_datagram(facility: Facility, level: log::Level, tag: &str, plain: &str) -> Vec<u8> {
    let pri = u16::from(facility.0) * 8 + u16::from(severity(level));
    format!("<{pri}>{tag}{plain}").into_bytes()
}

/// A syslog facility by its number (`mail` = 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl Facility {
    /// The `mail` facility, the default.
    pub const MAIL: Facility = Facility(2);

    /// The facility called `name` (any case).
    pub fn named(name: &str) -> Option<Facility> {
        FACILITIES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, code)| Facility(code))
    }
}

/// The logging parameters of main.cf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `maillog_file`: an absolute path, or `None` for syslog or standard error.
    pub maillog_file: Option<PathBuf>,
    /// `syslog_name`: the first part of every tag.
    pub syslog_name: String,
    /// `syslog_facility`.
    pub syslog_facility: Facility,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            maillog_file: None,
            syslog_name: String::from("certrelay"),
            syslog_facility: Facility::MAIL,
        }
    }
}

impl Settings {
    /// Reads `maillog_file`, `syslog_name` and `syslog_facility`. A value that cannot be
    /// used is an error at its file:line, and its default stands in.
    pub fn from_config(config: &Config) -> (Settings, Vec<Diagnostic>) {
        let mut settings = Settings::default();
        let mut diags = Vec::new();
        let file = config.text("maillog_file");
        if !file.is_empty() {
            if Path::new(file).is_absolute() {
                settings.maillog_file = Some(PathBuf::from(file));
            } else {
                diags.push(config.problem("maillog_file", "must be an absolute path"));
            }
        }
        let name = config.text("syslog_name");
        if valid_syslog_name(name) {
            settings.syslog_name = name.to_owned();
        } else {
            diags.push(config.problem(
                "syslog_name",
                "must be letters, digits, `.`, `_` and `-` (it starts every log line)",
            ));
        }
        match Facility::named(config.text("syslog_facility")) {
            Some(f) => settings.syslog_facility = f,
            None => diags.push(config.problem(
                "syslog_facility",
                "unknown syslog facility (mail, daemon, user, local0 to local7, ...)",
            )),
        }
        (settings, diags)
    }
}

/// A name fit to begin a tag: no space, colon, slash or bracket that would confuse the
/// readers of the log.
fn valid_syslog_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why the log could not go where main.cf says.
#[derive(Debug)]
pub enum LogError {
    /// `maillog_file` could not be opened for appending.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Open { path, source } => write!(
                f,
                "maillog_file = {}: cannot open for appending: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogError {}

/// Where the lines go now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard error, plain lines.
    Stderr,
    /// Standard output after a prefix ([`init_stdout`]).
    Stdout,
    /// `maillog_file` (and a terminal on standard error, when there is one).
    File(PathBuf),
    /// Syslog through this socket.
    Syslog(PathBuf),
}

/// What standard error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StderrIs {
    /// A person reads it.
    Terminal,
    /// A pipe or a file: a service manager, a test or a redirection keeps it.
    Kept,
    /// A socket (systemd's journal stream), a device such as `/dev/null`, or closed.
    Elsewhere,
}

fn stderr_is() -> StderrIs {
    let err = io::stderr();
    if err.is_terminal() {
        return StderrIs::Terminal;
    }
    let kind = err
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata())
        .map(|m| m.file_type());
    match kind {
        Ok(t) if t.is_fifo() || t.is_file() => StderrIs::Kept,
        _ => StderrIs::Elsewhere,
    }
}

/// The syslog socket's path ([`DEV_LOG`] outside the tests).
fn dev_log() -> PathBuf {
    std::env::var_os(TEST_ONLY_DEV_LOG_VAR).map_or_else(|| PathBuf::from(DEV_LOG), PathBuf::from)
}

enum Sink {
    Stderr,
    /// Standard output, each line after a prefix (`certrelayd demo`).
    Stdout {
        prefix: &'static str,
    },
    File {
        path: PathBuf,
        file: File,
        host: String,
        /// Standard error is a terminal: lines go there too.
        echo: bool,
    },
    Syslog {
        path: PathBuf,
        socket: Option<UnixDatagram>,
        facility: Facility,
        /// Lines dropped because the socket was full, not yet reported.
        lost: u64,
    },
}

struct State {
    ident: String,
    sink: Sink,
}

/// The process's logger.
struct Logger {
    filter: env_filter::Filter,
    service: &'static str,
    pid: u32,
    state: Mutex<State>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Starts logging to standard error for a program whose own lines belong to `service`
/// (`master` for the serving loops), at `RUST_LOG`'s levels or `default_filter` (such as
/// `info`). A second call changes nothing.
pub fn init(service: &'static str, default_filter: &str) {
    let mut filter = env_filter::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) => filter.parse(&spec),
        Err(_) => filter.parse(default_filter),
    };
    let mut fresh = false;
    let logger = LOGGER.get_or_init(|| {
        fresh = true;
        Logger {
            filter: filter.build(),
            service,
            pid: std::process::id(),
            state: Mutex::new(State {
                ident: String::from("certrelay"),
                sink: Sink::Stderr,
            }),
        }
    });
    if fresh && log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.filter());
    }
}

/// As [`init`], with the lines on standard output after `prefix`, for a program that prints
/// its own report there (`certrelayd demo`); [`configure`] changes nothing after it.
pub fn init_stdout(prefix: &'static str, service: &'static str, default_filter: &str) {
    init(service, default_filter);
    if let Some(logger) = LOGGER.get() {
        logger.lock().sink = Sink::Stdout { prefix };
    }
}

/// Sends the lines where `settings` say (see the module's notes). Opens `maillog_file` now,
/// so call it before giving up privileges. Without [`init`] first, does nothing.
pub fn configure(settings: &Settings) -> Result<Destination, LogError> {
    let Some(logger) = LOGGER.get() else {
        return Ok(Destination::Stderr);
    };
    if matches!(logger.lock().sink, Sink::Stdout { .. }) {
        return Ok(Destination::Stdout);
    }
    let err = stderr_is();
    let (sink, destination) = if let Some(path) = &settings.maillog_file {
        let file = open_append(path)?;
        let sink = Sink::File {
            path: path.clone(),
            file,
            host: short_host_name(),
            echo: err == StderrIs::Terminal,
        };
        (sink, Destination::File(path.clone()))
    } else {
        let path = dev_log();
        match (err, connect(&path)) {
            (StderrIs::Elsewhere, Ok(socket)) => {
                let sink = Sink::Syslog {
                    path: path.clone(),
                    socket: Some(socket),
                    facility: settings.syslog_facility,
                    lost: 0,
                };
                (sink, Destination::Syslog(path))
            }
            _ => (Sink::Stderr, Destination::Stderr),
        }
    };
    let mut state = logger.lock();
    state.ident = settings.syslog_name.clone();
    state.sink = sink;
    Ok(destination)
}

/// Opens `maillog_file` again (SIGHUP, after log rotation moved it). When that fails (the
/// account the relay became may not create the file), the old file stays in use and the
/// error says why.
pub fn reopen() -> Result<(), LogError> {
    let Some(logger) = LOGGER.get() else {
        return Ok(());
    };
    let mut state = logger.lock();
    if let Sink::File { path, file, .. } = &mut state.sink {
        *file = open_append(path)?;
    }
    Ok(())
}

/// Opens `path` to append, creating it (mode 0600) when missing. Opened as root before the
/// privilege drop: a link or a FIFO planted at the path is refused, never followed or
/// waited on; only a regular file is written.
fn open_append(path: &Path) -> Result<File, LogError> {
    let fail = |source| LogError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(file)
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    // A full socket drops lines rather than stall the relay.
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The host name as syslog writes it: up to the first dot.
fn short_host_name() -> String {
    let full = crate::conf::host_name();
    full.split('.').next().unwrap_or("localhost").to_owned()
}

impl Logger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let plain = plain_line(record.level(), record.args());
        let service = service_of(record.target(), self.service);
        let mut state = self.lock();
        let State { ident, sink } = &mut *state;
        match sink {
            Sink::Stderr => to_stderr(&plain),
            Sink::Stdout { prefix } => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{prefix}{plain}");
            }
            Sink::File {
                file, host, echo, ..
            } => {
                let tag = tag(ident, service, self.pid);
                let mut line = file_line(SystemTime::now(), host, &tag, &plain);
                line.push('\n');
                if file.write_all(line.as_bytes()).is_err() || *echo {
                    to_stderr(&plain);
                }
            }
            Sink::Syslog {
                path,
                socket,
                facility,
                lost,
            } => {
                let tag = tag(ident, service, self.pid);
                if *lost > 0 {
                    let note = format!(
                        "warning: {lost} log line(s) lost: the syslog socket {} was full",
                        path.display()
                    );
                    let datagram = syslog_datagram(*facility, log::Level::Warn, &tag, &note);
                    if send(path, socket, &datagram) == Sent::Yes {
                        *lost = 0;
                    }
                }
                let datagram = syslog_datagram(*facility, record.level(), &tag, &plain);
                match send(path, socket, &datagram) {
                    Sent::Yes => {}
                    Sent::Full => *lost += 1,
                    Sent::No => to_stderr(&plain),
                }
            }
        }
    }

    fn flush(&self) {}
}

/// One line to stderr in one write: stderr is unbuffered, so the line and its line feed
/// written apart cost two system calls per line on the relay's busiest thread, and lines
/// of two threads could interleave.
fn to_stderr(plain: &str) {
    let mut line = String::with_capacity(plain.len() + 1);
    line.push_str(plain);
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Yes,
    /// The socket's queue is full.
    Full,
    /// Not even after connecting again.
    No,
}

/// Sends one datagram; connects again once when the socket is gone (the syslog daemon
/// restarted), and cuts a datagram the socket finds too big.
fn send(path: &Path, socket: &mut Option<UnixDatagram>, datagram: &[u8]) -> Sent {
    let mut datagram = &datagram[..datagram.len().min(SYSLOG_MAX)];
    for _ in 0..3 {
        let Some(s) = socket.as_ref() else {
            match connect(path) {
                Ok(s) => *socket = Some(s),
                Err(_) => return Sent::No,
            }
            continue;
        };
        match s.send(datagram) {
            Ok(_) => return Sent::Yes,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Full,
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && datagram.len() > SYSLOG_SMALL => {
                datagram = &datagram[..SYSLOG_SMALL];
            }
            Err(_) => *socket = None,
        }
    }
    Sent::No
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args_line(level: log::Level, text: &str) -> String {
        plain_line(level, &format_args!("{text}"))
    }

    #[test]
    fn levels_are_written_as_postfix_writes_them() {
        assert_eq!(
            args_line(log::Level::Info, "connect from a[1.2.3.4]"),
            "connect from a[1.2.3.4]"
        );
        assert_eq!(args_line(log::Level::Warn, "x"), "warning: x");
        assert_eq!(args_line(log::Level::Error, "x"), "error: x");
        assert_eq!(args_line(log::Level::Debug, "x"), "debug: x");
    }

    #[test]
    fn a_line_break_from_a_client_cannot_start_a_line_of_its_own() {
        let forged = "EHLO x\nDec  4 01:02:03 host certrelay/smtpd[1]: NOQUEUE: reject: RCPT \
                      from x[192.0.2.9]: 554 5.7.1 <a@b>: Relay access denied";
        let line = args_line(log::Level::Info, forged);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("EHLO x?Dec"), "{line}");
        assert_eq!(args_line(log::Level::Info, "a\r\u{7f}\u{1b}b"), "a???b");
    }

    #[test]
    fn services_follow_the_module_that_logs() {
        let cases = [
            ("certrelay_shell::smtpd::session", "smtpd"),
            ("certrelay_shell::smtpd", "smtpd"),
            ("certrelay::laptop_smtpd", "smtpd"),
            ("certrelay_shell::delivery::runner", "smtp"),
            ("certrelay_shell::delivery::deliver", "smtp"),
            ("certrelay_shell::spool::maildrop", "pickup"),
            ("certrelayd::serve", "master"),
            ("certrelay_shell::smtpdx", "master"),
            ("rustls::common_state", "master"),
        ];
        for (target, want) in cases {
            assert_eq!(service_of(target, "master"), want, "{target}");
        }
    }

    #[test]
    fn file_lines_carry_time_host_and_tag() {
        let at = UNIX_EPOCH + Duration::new(1_764_810_123, 42_000);
        let tag = tag("certrelay", "smtpd", 4711);
        assert_eq!(
            file_line(
                at,
                "relay",
                &tag,
                "warning: non-SMTP command from x[192.0.2.1]: GET /"
            ),
            "2025-12-04T01:02:03.000042+00:00 relay certrelay/smtpd[4711]: warning: non-SMTP \
             command from x[192.0.2.1]: GET /"
        );
    }

    #[test]
    fn syslog_datagrams_carry_priority_and_tag() {
        let tag = tag("certrelay-out", "smtp", 7);
        assert_eq!(
            syslog_datagram(Facility::MAIL, log::Level::Info, &tag, "1AB: removed"),
            b"<22>certrelay-out/smtp[7]: 1AB: removed"
        );
        let local3 = Facility::named("LOCAL3").unwrap();
        assert_eq!(
            syslog_datagram(local3, log::Level::Error, &tag, "error: x"),
            b"<155>certrelay-out/smtp[7]: error: x"
        );
        assert_eq!(Facility::named("mial"), None);
    }

    #[test]
    fn settings_come_from_main_cf_with_problems_at_their_line() {
        let (config, _) = Config::parse(
            "main.cf",
            "maillog_file = /var/log/certrelay.log\nsyslog_name = relay-out\n\
             syslog_facility = local1\n",
        );
        let (s, diags) = Settings::from_config(&config);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            s.maillog_file.as_deref(),
            Some(Path::new("/var/log/certrelay.log"))
        );
        assert_eq!(s.syslog_name, "relay-out");
        assert_eq!(s.syslog_facility, Facility::named("local1").unwrap());

        let (config, _) = Config::parse("main.cf", "");
        assert_eq!(
            Settings::from_config(&config),
            (Settings::default(), vec![])
        );

        let (config, _) = Config::parse(
            "main.cf",
            "maillog_file = mail.log\nsyslog_name = a b\nsyslog_facility = mial\n",
        );
        let (s, diags) = Settings::from_config(&config);
        assert_eq!(s, Settings::default());
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text[0].starts_with("main.cf:1: ") && text[0].contains("absolute"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("main.cf:2: ") && text[1].contains("syslog_name"),
            "{text:?}"
        );
        assert!(
            text[2].starts_with("main.cf:3: ") && text[2].contains("facility"),
            "{text:?}"
        );
    }

    #[test]
    fn maillog_file_is_a_regular_file_never_a_link_or_a_fifo() {
        let dir = std::env::temp_dir().join(format!("certrelay-maillog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mail.log");
        assert!(open_append(&file).is_ok());
        let target = dir.join("root-only");
        std::fs::write(&target, "").unwrap();
        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_append(&link).is_err(), "a link is not followed");
        let fifo = dir.join("fifo.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Refused at once: with no reader the open fails (ENXIO), with one it is no file.
        assert!(
            open_append(&fifo).is_err(),
            "a FIFO is not written to or waited on"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn datagrams_reach_the_socket_and_a_full_one_is_counted_not_waited_for() {
        let dir = std::env::temp_dir().join(format!("certrelay-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut socket = None;
        assert_eq!(
            send(&path, &mut socket, b"<22>certrelay/smtpd[1]: one"),
            Sent::Yes
        );
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<22>certrelay/smtpd[1]: one");
        // Nobody reads: the queue fills, and a send returns at once.
        let mut outcome = Sent::Yes;
        for _ in 0..100_000 {
            outcome = send(&path, &mut socket, &[b'x'; 512]);
            if outcome != Sent::Yes {
                break;
            }
        }
        assert_eq!(outcome, Sent::Full);
        // The daemon restarts: a new socket at the same path; the next line reconnects.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = UnixDatagram::bind(&path).unwrap();
        assert_eq!(
            send(&path, &mut socket, b"<22>certrelay/smtpd[1]: two"),
            Sent::Yes
        );
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<22>certrelay/smtpd[1]: two");
        // No daemon at all.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(send(&path, &mut socket, b"three"), Sent::No);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
