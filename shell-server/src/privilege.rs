//! Started as root, the relay binds its listeners, reads its keys and opens its queue
//! directory, and then becomes `mail_owner` before it reads a byte from any client: a flaw in
//! the code that parses what clients send then reaches an unprivileged account, not root.
//!
//! Root touches the spool once: it opens `queue_directory` itself, never following a
//! symbolic link, and when that directory is missing, or new, empty and root's, it creates
//! it and hands it to `mail_owner`, through the open handle. Everything inside the spool is
//! done after the drop, as `mail_owner`, relative to that handle (the relay makes it its
//! working directory, as Postfix's daemons do with theirs): so a parent folder `mail_owner`
//! cannot enter works, and a symbolic link `mail_owner` plants leads it nowhere it could not
//! already go.
//!
//! Not here: the spool's layout and recovery (the shell's `spool`), the pid file and the
//! reload report (`running`).

use certrelay_core::config::Diagnostic;
use certrelay_shell::conf::Loaded;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{self, Uid, User};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Whether this process runs as root (and so has to drop).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Looks `name` up and checks that it is an unprivileged account; the error says what is
/// wrong with it (the caller names the parameter).
pub fn mail_owner(name: &str) -> Result<User, AccountError> {
    let user = User::from_name(name)
        .map_err(AccountError::LookUp)?
        .ok_or_else(|| AccountError::NoSuchAccount(name.to_owned()))?;
    if user.uid.is_root() {
        return Err(AccountError::Root);
    }
    Ok(user)
}

/// Why `mail_owner` names no account the relay can become.
#[derive(Debug)]
pub enum AccountError {
    /// The account database could not be asked.
    LookUp(nix::Error),
    /// No account has this name.
    NoSuchAccount(String),
    /// The account is root's user id.
    Root,
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountError::LookUp(e) => write!(f, "cannot look the account up: {e}"),
            AccountError::NoSuchAccount(name) => write!(
                f,
                "no such account. Create it (for example `useradd --system --home-dir \
                 /nonexistent --shell /usr/sbin/nologin {name}`) or set mail_owner to an \
                 existing unprivileged account"
            ),
            AccountError::Root => f.write_str("user id 0; it must be an unprivileged account"),
        }
    }
}

impl std::error::Error for AccountError {}

/// The relay's configuration check, plus, when run as root, that `mail_owner` can be
/// become.
pub fn check(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut diags = crate::checks::check_relay(loaded);
    if is_root() {
        let config = &loaded.config;
        if let Err(e) = mail_owner(config.text("mail_owner")) {
            diags.push(config.problem("mail_owner", e));
        }
    }
    diags
}

/// Why the queue directory cannot be used. Each names the path and what fixes it.
#[derive(Debug)]
pub enum SpoolError {
    /// `queue_directory` itself is a symbolic link, which root does not follow.
    Link { path: PathBuf },
    /// It could not be created, opened, handed over or entered.
    Io {
        path: PathBuf,
        doing: &'static str,
        source: io::Error,
    },
    /// It belongs to another account than `mail_owner` (and is not a new, empty directory of
    /// root's, which would be handed over).
    NotOwned {
        path: PathBuf,
        uid: u32,
        owner: String,
    },
    /// What is inside is not all `mail_owner`'s plain files and directories.
    Inside {
        queue_directory: PathBuf,
        owner: String,
        problems: Vec<Inside>,
    },
    /// `mail_owner` cannot create, rename and remove files in the spool.
    Unwritable {
        path: PathBuf,
        owner: String,
        source: io::Error,
    },
}

/// One entry of the spool that `mail_owner` must not meet.
#[derive(Debug)]
pub enum Inside {
    /// A symbolic link.
    Link(PathBuf),
    /// A file or directory of another account (its user id).
    NotOwned(PathBuf, u32),
    /// Something that is neither a plain file nor a directory.
    Special(PathBuf),
    /// A directory that could not be read.
    Unreadable(PathBuf, io::Error),
}

/// How many problems inside the spool are named one by one.
const NAMED_PROBLEMS: usize = 5;

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Link { path } => write!(
                f,
                "queue_directory {}: is a symbolic link, which the relay does not follow as \
                 root; set queue_directory to the real directory (`readlink -f {}`)",
                path.display(),
                path.display()
            ),
            SpoolError::Io {
                path,
                doing,
                source,
            } => write!(
                f,
                "queue_directory {}: cannot {doing}: {source}",
                path.display()
            ),
            SpoolError::NotOwned { path, uid, owner } => write!(
                f,
                "queue_directory {}: owned by user id {uid}, not by mail_owner {owner}; after \
                 checking what it holds, give it to {owner}: `chown {owner}: {}`",
                path.display(),
                path.display()
            ),
            SpoolError::Inside {
                queue_directory,
                owner,
                problems,
            } => {
                write!(
                    f,
                    "queue_directory {}: the spool must hold only plain files and \
                     directories of mail_owner {owner}:",
                    queue_directory.display()
                )?;
                for p in problems.iter().take(NAMED_PROBLEMS) {
                    write!(f, "\n  ")?;
                    match p {
                        Inside::Link(path) => write!(
                            f,
                            "{}: a symbolic link; remove it: `rm {}`",
                            path.display(),
                            path.display()
                        )?,
                        Inside::NotOwned(path, uid) => write!(
                            f,
                            "{}: owned by user id {uid}; give it to {owner}: `chown {owner}: {}`",
                            path.display(),
                            path.display()
                        )?,
                        Inside::Special(path) => write!(
                            f,
                            "{}: neither a file nor a directory; remove it: `rm {}`",
                            path.display(),
                            path.display()
                        )?,
                        Inside::Unreadable(path, e) => write!(
                            f,
                            "{}: cannot be read as {owner}: {e}; `chown {owner}: {} && chmod \
                             u+rwx {}`",
                            path.display(),
                            path.display(),
                            path.display()
                        )?,
                    }
                }
                if problems.len() > NAMED_PROBLEMS {
                    write!(f, "\n  and {} more", problems.len() - NAMED_PROBLEMS)?;
                }
                Ok(())
            }
            SpoolError::Unwritable {
                path,
                owner,
                source,
            } => write!(
                f,
                "queue_directory: mail_owner {owner} cannot write in {}: {source}; the relay \
                 would refuse every message. Let it: `chown {owner}: {} && chmod u+rwx {}`",
                path.display(),
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for SpoolError {}

/// The queue directory, open: the relay's working directory once it dropped root.
#[derive(Debug)]
pub struct QueueDirectory {
    handle: File,
    path: PathBuf,
}

impl QueueDirectory {
    /// The path from the configuration, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes this directory the process's working directory: every spool path after this
    /// is relative to it, whatever happens to the folders above.
    pub fn enter(&self) -> Result<(), SpoolError> {
        unistd::fchdir(&self.handle).map_err(|e| SpoolError::Io {
            path: self.path.clone(),
            doing: "make it the working directory",
            source: e.into(),
        })?;
        certrelay_shell::spool::working_inside();
        Ok(())
    }
}

/// Opens `path` as a directory, creating it when missing. With `owner` (started as root):
/// a symbolic link is refused rather than followed, a new or empty directory of root's is
/// given to `owner` with mode 0700, and one owned by anybody else is refused.
pub fn open_queue_directory(
    path: &Path,
    owner: Option<&User>,
) -> Result<QueueDirectory, SpoolError> {
    let handle = match open_dir(path, owner.is_some()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir(path)?;
            open_dir(path, owner.is_some())
        }
        opened => opened,
    };
    let handle = handle.map_err(|e| {
        if owner.is_some() && is_link(path) {
            SpoolError::Link {
                path: path.to_owned(),
            }
        } else {
            SpoolError::Io {
                path: path.to_owned(),
                doing: "open it as a directory",
                source: e,
            }
        }
    })?;
    if let Some(user) = owner {
        hand_over(&handle, path, user)?;
    }
    Ok(QueueDirectory {
        handle,
        path: path.to_owned(),
    })
}

fn open_dir(path: &Path, no_follow: bool) -> io::Result<File> {
    let mut flags = OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if no_follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Creates the missing queue directory (mode 0700) and the folders above it.
fn create_dir(path: &Path) -> Result<(), SpoolError> {
    let fail = |e| SpoolError::Io {
        path: path.to_owned(),
        doing: "create it",
        source: e,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(fail(e)),
        _ => Ok(()),
    }
}

/// As root: keeps a directory `user` owns, gives a new or empty one of root's to `user`
/// (through the handle, so nothing swapped in at `path` meanwhile is touched), and refuses
/// any other.
fn hand_over(handle: &File, path: &Path, user: &User) -> Result<(), SpoolError> {
    let io_error = |doing, source| SpoolError::Io {
        path: path.to_owned(),
        doing,
        source,
    };
    let meta = handle
        .metadata()
        .map_err(|e| io_error("read its owner", e))?;
    if meta.uid() == user.uid.as_raw() {
        return Ok(());
    }
    let not_owned = || SpoolError::NotOwned {
        path: path.to_owned(),
        uid: meta.uid(),
        owner: user.name.clone(),
    };
    if meta.uid() != 0 || !is_empty(handle).map_err(|e| io_error("list it", e))? {
        return Err(not_owned());
    }
    std::os::unix::fs::fchown(handle, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(|e| io_error("give it to mail_owner", e))?;
    handle
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error("set its mode", e))
}

/// True when the directory open as `handle` has no entries.
fn is_empty(handle: &File) -> io::Result<bool> {
    // "." relative to the handle: the same directory, whatever its path leads to now.
    let mut dir = Dir::openat(
        handle,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for entry in dir.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives up root for good: supplementary groups, group and user become `user`'s. Returns
/// what to log.
pub fn drop_to(user: &User) -> Result<String, DropError> {
    let fail = |step, source| DropError::Failed {
        owner: user.name.clone(),
        step,
        source,
    };
    unistd::setgroups(&[user.gid]).map_err(|e| fail(DropStep::Groups, e))?;
    unistd::setgid(user.gid).map_err(|e| fail(DropStep::Group, e))?;
    unistd::setuid(user.uid).map_err(|e| fail(DropStep::User, e))?;
    // setuid as root changes the real, effective and saved ids alike; make sure.
    if unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
        return Err(DropError::RootRegained {
            owner: user.name.clone(),
        });
    }
    Ok(format!(
        "running as mail_owner {} (uid {}, gid {})",
        user.name, user.uid, user.gid
    ))
}

/// Why root could not be given up for `mail_owner`.
#[derive(Debug)]
pub enum DropError {
    /// A step of the change failed.
    Failed {
        /// The account's name.
        owner: String,
        /// Which step.
        step: DropStep,
        /// What the system said.
        source: nix::Error,
    },
    /// After the change, root could still be had back.
    RootRegained {
        /// The account's name.
        owner: String,
    },
}

/// One step of giving up root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropStep {
    /// Setting the supplementary groups.
    Groups,
    /// Setting the group id.
    Group,
    /// Setting the user id.
    User,
}

impl fmt::Display for DropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropError::Failed {
                owner,
                step,
                source,
            } => {
                let what = match step {
                    DropStep::Groups => "cannot set the groups",
                    DropStep::Group => "cannot change group",
                    DropStep::User => "cannot change user",
                };
                write!(f, "mail_owner {owner}: {what}: {source}")
            }
            DropError::RootRegained { owner } => {
                write!(f, "mail_owner {owner}: root could be regained")
            }
        }
    }
}

impl std::error::Error for DropError {}

/// After the drop, in the queue directory (the working directory): every entry below it is
/// a plain file or directory of `user`'s. Nothing is followed or changed; `shown` names the
/// queue directory in the error.
pub fn check_spool_entries(shown: &Path, user: &User) -> Result<(), SpoolError> {
    let mut problems = Vec::new();
    walk(Path::new("."), shown, user.uid.as_raw(), &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpoolError::Inside {
            queue_directory: shown.to_owned(),
            owner: user.name.clone(),
            problems,
        })
    }
}

fn walk(dir: &Path, shown: &Path, uid: u32, problems: &mut Vec<Inside>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return problems.push(Inside::Unreadable(shown.to_owned(), e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return problems.push(Inside::Unreadable(shown.to_owned(), e)),
        };
        let name = entry.file_name();
        let (path, shown_path) = (dir.join(&name), shown.join(&name));
        // Not followed: the entry itself.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Gone since the listing (the relay is not serving yet: nobody else should be
            // here, but a vanished entry does no harm).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(Inside::Unreadable(shown_path, e));
                continue;
            }
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            problems.push(Inside::Link(shown_path));
        } else if meta.uid() != uid {
            problems.push(Inside::NotOwned(shown_path, meta.uid()));
        } else if kind.is_dir() {
            walk(&path, &shown_path, uid, problems);
        } else if !kind.is_file() {
            problems.push(Inside::Special(shown_path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_and_drop_errors_say_what_is_wrong() {
        let cases: Vec<(Box<dyn std::error::Error>, String)> = vec![
            (
                Box::new(AccountError::LookUp(nix::Error::EIO)),
                format!("cannot look the account up: {}", nix::Error::EIO),
            ),
            (
                Box::new(AccountError::NoSuchAccount("certrelay".into())),
                "no such account. Create it (for example `useradd --system --home-dir \
                 /nonexistent --shell /usr/sbin/nologin certrelay`) or set mail_owner to an \
                 existing unprivileged account"
                    .into(),
            ),
            (
                Box::new(AccountError::Root),
                "user id 0; it must be an unprivileged account".into(),
            ),
            (
                Box::new(DropError::Failed {
                    owner: "certrelay".into(),
                    step: DropStep::Groups,
                    source: nix::Error::EPERM,
                }),
                format!(
                    "mail_owner certrelay: cannot set the groups: {}",
                    nix::Error::EPERM
                ),
            ),
            (
                Box::new(DropError::Failed {
                    owner: "certrelay".into(),
                    step: DropStep::Group,
                    source: nix::Error::EPERM,
                }),
                format!(
                    "mail_owner certrelay: cannot change group: {}",
                    nix::Error::EPERM
                ),
            ),
            (
                Box::new(DropError::Failed {
                    owner: "certrelay".into(),
                    step: DropStep::User,
                    source: nix::Error::EAGAIN,
                }),
                format!(
                    "mail_owner certrelay: cannot change user: {}",
                    nix::Error::EAGAIN
                ),
            ),
            (
                Box::new(DropError::RootRegained {
                    owner: "certrelay".into(),
                }),
                "mail_owner certrelay: root could be regained".into(),
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn root_and_missing_accounts_are_refused() {
        assert!(matches!(mail_owner("root"), Err(AccountError::Root)));
        let missing = "certrelay-no-such-account";
        assert!(matches!(mail_owner(missing), Err(AccountError::NoSuchAccount(n)) if n == missing));
    }
}
