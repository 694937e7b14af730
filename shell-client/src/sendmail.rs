//! The sendmail command line: options as Postfix's `sendmail` takes them, and submission
//! of one message from standard input into the maildrop.

use crate::laptop::{self, Laptop};
use certrelay_core::dsn;
use certrelay_core::message::{
    self, find_header_end, Field, HeaderSection, LineNormalizer, LocalOrigin, MessageError, Status,
};
use certrelay_core::queue::{ClientFacts, Envelope, QueueId, Recipient};
use certrelay_shell::spool::maildrop::{Dropping, Maildrop};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

/// sysexits(3) codes the sendmail interface returns.
pub mod exit {
    /// Command line error.
    pub const USAGE: i32 = 64;
    /// The message is unacceptable (NUL byte, no recipient in the header).
    pub const DATAERR: i32 = 65;
    /// Standard input could not be read.
    pub const NOINPUT: i32 = 66;
    /// Internal problem.
    pub const SOFTWARE: i32 = 70;
    /// The queue directory could not be created.
    pub const CANTCREAT: i32 = 73;
    /// Temporary failure: try again later.
    pub const TEMPFAIL: i32 = 75;
    /// Configuration error.
    pub const CONFIG: i32 = 78;
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read a message and queue it (`-bm`, the default).
    Submit,
    /// List the queue (`-bp`, `mailq`).
    ListQueue,
    /// Deliver the queue now (`-q`).
    Flush,
    /// SMTP on standard input and output (`-bs`).
    Smtp,
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendmailArgs {
    /// What to do.
    pub mode: Mode,
    /// `-t`: take recipients from the header too.
    pub extract: bool,
    /// `-f`/`-r`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` that is added.
    pub full_name: Option<String>,
    /// `-i`/`-oi`: a line with only `.` is text, not the end.
    pub ignore_dots: bool,
    /// `-C`: the configuration directory.
    pub config_dir: Option<PathBuf>,
    /// `-v`: say what happened.
    pub verbose: bool,
    /// Recipients on the command line.
    pub recipients: Vec<String>,
}

/// A command line that cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `certrelay sendmail ARGS`: argh hands every argument after the word `sendmail` over
/// as it is, flags included, for [`parse_args`] (argh matches whole arguments, and
/// sendmail's `-fADDR`, `-oi` or `-bs` are not that).
#[derive(Debug)]
pub struct SendmailCmd {
    /// How many arguments follow `sendmail`: the tail of the command line.
    pub count: usize,
}

impl argh::FromArgs for SendmailCmd {
    fn from_args(command_name: &[&str], args: &[&str]) -> Result<Self, argh::EarlyExit> {
        // argh puts `help` first when `--help` came before the command word.
        if args.first() == Some(&"help") {
            return Err(argh::EarlyExit {
                output: format!(
                    "Usage: {} ARGS\n\n{}.\n\n{USAGE}",
                    command_name.join(" "),
                    <Self as argh::SubCommand>::COMMAND.description
                ),
                status: Ok(()),
            });
        }
        Ok(SendmailCmd { count: args.len() })
    }
}

impl argh::SubCommand for SendmailCmd {
    const COMMAND: &'static argh::CommandInfo = &argh::CommandInfo {
        name: "sendmail",
        short: &'\0',
        description: "sendmail-compatible submission: reads a message on standard input, \
                      queues it and starts delivery in the background (-t -i -oi -f -F -C -v \
                      -bp -q -bs; historic options accepted and ignored). Also run as \
                      `sendmail`. -bs: one SMTP dialogue on standard input and output",
    };
}

/// Parses sendmail options (not the program name). Historic options that make no sense
/// here are accepted and ignored, as Postfix does.
pub fn parse_args(args: Vec<OsString>) -> Result<SendmailArgs, UsageError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = SendmailArgs {
        mode: Mode::Submit,
        extract: false,
        sender: None,
        full_name: None,
        ignore_dots: false,
        config_dir: None,
        verbose: false,
        recipients: Vec::new(),
    };
    let bad = |e: lexopt::Error| UsageError(e.to_string());
    let text = |v: OsString| v.to_string_lossy().into_owned();
    while let Some(arg) = p.next().map_err(bad)? {
        match arg {
            Short('t') => a.extract = true,
            Short('i') => a.ignore_dots = true,
            Short('v') => a.verbose = true,
            Short('f' | 'r') => a.sender = Some(text(p.value().map_err(bad)?)),
            Short('F') => a.full_name = Some(text(p.value().map_err(bad)?)),
            Short('C') => a.config_dir = Some(p.value().map_err(bad)?.into()),
            Short('o') => {
                if text(p.value().map_err(bad)?) == "i" {
                    a.ignore_dots = true;
                }
            }
            Short('b') => {
                a.mode = match text(p.value().map_err(bad)?).as_str() {
                    "m" => Mode::Submit,
                    "p" => Mode::ListQueue,
                    "s" => Mode::Smtp,
                    other => return Err(UsageError(format!("-b{other} is not supported"))),
                }
            }
            Short('q') => {
                // -q, -q1h (interval), -qR.../-qS... (selection): all mean "deliver now".
                let _ = p.optional_value();
                a.mode = Mode::Flush;
            }
            // Options that take a value and change nothing here.
            Short('B' | 'N' | 'R' | 'V' | 'X' | 'L' | 'h' | 'O') => {
                p.value().map_err(bad)?;
            }
            Short('m' | 'n' | 'U' | 'G' | 'A' | 'd' | 'x') => {
                let _ = p.optional_value();
            }
            Value(v) => a.recipients.push(text(v)),
            other => return Err(UsageError(other.unexpected().to_string())),
        }
    }
    Ok(a)
}

/// The sendmail usage line.
pub const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F name] [-C dir] [-v] \
                         [recipient ...] < message\n       sendmail -bp | -q | -bs";

/// Why a message was not queued, with its exit code.
#[derive(Debug)]
pub enum SubmitError {
    /// No recipient on the command line (and no `-t`).
    NoRecipients,
    /// `-t` found no recipient in the header.
    NoHeaderRecipients,
    /// The message was refused.
    Message(MessageError),
    /// Standard input could not be read.
    Input(io::Error),
    /// The queue directory could not be created.
    QueueDir(PathBuf, io::Error),
    /// The maildrop could not take the message.
    Write(io::Error),
}

impl SubmitError {
    /// The sysexits code.
    pub fn exit_code(&self) -> i32 {
        match self {
            SubmitError::NoRecipients => exit::USAGE,
            SubmitError::NoHeaderRecipients | SubmitError::Message(_) => exit::DATAERR,
            SubmitError::Input(_) => exit::NOINPUT,
            SubmitError::QueueDir(..) => exit::CANTCREAT,
            SubmitError::Write(_) => exit::TEMPFAIL,
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::NoRecipients => {
                f.write_str("no recipients: name them on the command line or use -t")
            }
            SubmitError::NoHeaderRecipients => {
                f.write_str("no recipient addresses found in the message header (-t)")
            }
            SubmitError::Message(e) => write!(f, "message refused: {e}"),
            SubmitError::Input(e) => write!(f, "cannot read the message: {e}"),
            SubmitError::QueueDir(dir, e) => {
                write!(
                    f,
                    "cannot create the queue directory {}: {e}",
                    dir.display()
                )
            }
            SubmitError::Write(e) => write!(f, "cannot queue the message (try again): {e}"),
        }
    }
}

/// Largest header section parsed; what follows is body.
use certrelay_core::message::HEADER_LIMIT;

/// Reads a message from `input` and commits it to the maildrop; returns its queue id.
pub fn submit(
    laptop: &Laptop,
    args: &SendmailArgs,
    input: &mut impl Read,
) -> Result<String, SubmitError> {
    if !args.extract && args.recipients.is_empty() {
        return Err(SubmitError::NoRecipients);
    }
    let queue_dir = &laptop.queue_dir;
    let maildrop =
        Maildrop::open(queue_dir).map_err(|e| SubmitError::QueueDir(queue_dir.clone(), e))?;
    let now = certrelay_shell::clock::unix_secs();
    let mut drop_file = create(&maildrop, now)?;
    let mut normalizer = LineNormalizer::new(!args.ignore_dots);
    let mut pending = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0; 64 * 1024];
    let mut status = Status::Reading;
    // The header section: read until its end is known.
    let end = loop {
        let complete = status == Status::Ended || pending.len() > HEADER_LIMIT;
        if let Some(end) = find_header_end(&pending, complete) {
            break end;
        }
        let n = read_some(input, &mut chunk)?;
        if n == 0 {
            normalizer.finish(&mut pending);
            status = Status::Ended;
        } else {
            status = normalizer
                .feed(&chunk[..n], &mut pending)
                .map_err(SubmitError::Message)?;
        }
    };
    let mut header = HeaderSection::parse(&pending[..end.header_len]);
    let sender = match &args.sender {
        Some(s) => laptop.qualify(s.trim().trim_start_matches('<').trim_end_matches('>')),
        None => laptop.qualify(&login_name()),
    };
    let mut recipients: Vec<String> = args.recipients.iter().map(|r| laptop.qualify(r)).collect();
    if args.extract {
        let found = header.recipients();
        if found.is_empty() && recipients.is_empty() {
            return Err(SubmitError::NoHeaderRecipients);
        }
        recipients.extend(found.iter().map(|r| laptop.qualify(r)));
    }
    dedup(&mut recipients);
    complete_header(&mut header, laptop, args, &sender, drop_file.id(), now);
    let write = |d: &mut Dropping, b: &[u8]| d.write(b).map_err(SubmitError::Write);
    let mut head = Vec::with_capacity(header.len() + 2);
    header.write_to(&mut head);
    head.extend_from_slice(b"\r\n");
    write(&mut drop_file, &head)?;
    write(&mut drop_file, &pending[end.body_start..])?;
    drop(pending);
    // The body: streamed, one chunk at a time.
    let mut body = Vec::with_capacity(64 * 1024);
    while status == Status::Reading {
        let n = read_some(input, &mut chunk)?;
        if n == 0 {
            normalizer.finish(&mut body);
            status = Status::Ended;
        } else {
            status = normalizer
                .feed(&chunk[..n], &mut body)
                .map_err(SubmitError::Message)?;
        }
        write(&mut drop_file, &body)?;
        body.clear();
    }
    let id = QueueId::parse(drop_file.id()).expect("generated id");
    // As Postfix's sendmail (smtputf8_autodetect_classes): a message with UTF-8 in its
    // envelope or header asks for SMTPUTF8.
    let smtputf8 =
        !(head.is_ascii() && sender.is_ascii() && recipients.iter().all(|r| r.is_ascii()));
    let mut envelope = Envelope::new(
        id,
        sender,
        now,
        recipients.into_iter().map(Recipient::new).collect(),
    );
    envelope.size = drop_file.size();
    envelope.smtputf8 = smtputf8;
    envelope.client = ClientFacts {
        protocol: "local".to_owned(),
        ..ClientFacts::default()
    };
    let queue_id = drop_file.id().to_owned();
    drop_file
        .commit(envelope.to_text().as_bytes())
        .map_err(SubmitError::Write)?;
    Ok(queue_id)
}

fn read_some(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, SubmitError> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map_err(SubmitError::Input),
        }
    }
}

/// A new maildrop file under a fresh queue id.
fn create(maildrop: &Maildrop, now: u64) -> Result<Dropping, SubmitError> {
    let seed = std::process::id() << 12 ^ certrelay_shell::clock::unix_millis() as u32;
    let mut last = None;
    for n in 0..32u32 {
        let id = QueueId::generate(now, seed.wrapping_add(n.wrapping_mul(7919)));
        match maildrop.create(id.as_str()) {
            Ok(d) => return Ok(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(SubmitError::Write(e)),
        }
    }
    Err(SubmitError::Write(last.expect("tried")))
}

/// Adds what a message needs and lacks, and removes blind copies: `Received:` on top,
/// `Date:`, `Message-ID:` and `From:` when missing; `Bcc:` (and `Resent-Bcc:`) never
/// leave.
fn complete_header(
    header: &mut HeaderSection,
    laptop: &Laptop,
    args: &SendmailArgs,
    sender: &str,
    queue_id: &str,
    now: u64,
) {
    header.remove("Bcc");
    header.remove("Resent-Bcc");
    let date = dsn::rfc5322_date(now, 0);
    let received = format!(
        "by {} (certrelay, from userid {})\r\n\tid {queue_id}; {date}",
        laptop.myhostname,
        laptop::user_id()
    );
    header.prepend(Field::new("Received", &received));
    let full_name = args
        .full_name
        .clone()
        .or_else(|| std::env::var("NAME").ok())
        .unwrap_or_default();
    let origin = LocalOrigin {
        unix: now,
        queue_id,
        myhostname: &laptop.myhostname,
        sender,
        full_name: &full_name,
    };
    message::add_missing_origin(header, &origin);
}

/// The user submitting: `$USER` (`$LOGNAME`), else the uid.
pub(crate) fn login_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("uid{}", laptop::user_id()))
}

/// Removes repeated recipients, keeping the first (domains compare in any case).
fn dedup(recipients: &mut Vec<String>) {
    let key = |r: &str| match r.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => r.to_owned(),
    };
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(key(r)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<SendmailArgs, UsageError> {
        parse_args(list.iter().map(OsString::from).collect())
    }

    #[test]
    fn sendmail_options() {
        let a = args(&[
            "-t",
            "-oi",
            "-fme@x",
            "-F",
            "Me Myself",
            "-oem",
            "-odb",
            "bob",
        ])
        .unwrap();
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("me@x"));
        assert_eq!(a.full_name.as_deref(), Some("Me Myself"));
        assert_eq!(a.recipients, ["bob"]);
        assert_eq!(a.mode, Mode::Submit);
        let a = args(&[
            "-ti", "-f", "<>", "-B", "8BITMIME", "-N", "never", "-C", "/d",
        ])
        .unwrap();
        assert!(a.extract && a.ignore_dots);
        assert_eq!(a.sender.as_deref(), Some("<>"));
        assert_eq!(a.config_dir, Some(PathBuf::from("/d")));
        assert_eq!(args(&["-bp"]).unwrap().mode, Mode::ListQueue);
        assert_eq!(args(&["-q"]).unwrap().mode, Mode::Flush);
        assert_eq!(args(&["-q30m"]).unwrap().mode, Mode::Flush);
        assert_eq!(args(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(args(&["-v", "--", "-odd"]).unwrap().recipients, ["-odd"]);
        assert!(args(&["-bz"]).is_err());
        assert!(args(&["-f"]).is_err());
        assert!(args(&["--frobnicate"]).is_err());
    }

    #[test]
    fn recipients_deduplicated() {
        let mut r = vec![
            "a@X.org".to_owned(),
            "a@x.org".to_owned(),
            "A@x.org".to_owned(),
        ];
        dedup(&mut r);
        assert_eq!(r, ["a@X.org", "A@x.org"]);
    }
}
