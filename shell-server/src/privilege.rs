//! Started as root, the relay binds its listeners, opens its spool and reads its keys, and
//! then becomes `mail_owner` before it reads a byte from any client: a flaw in the code that
//! parses what clients send then reaches an unprivileged account, not root.

use certrelay_core::config::Diagnostic;
use certrelay_shell::conf::Loaded;
use nix::unistd::{self, Gid, Uid, User};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether this process runs as root (and so has to drop).
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Looks `name` up and checks that it is an unprivileged account; the error says what is
/// wrong with it (the caller names the parameter).
pub fn mail_owner(name: &str) -> Result<User, String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look the account up: {e}"))?
        .ok_or_else(|| {
            format!(
                "no such account. Create it (for example `useradd --system --home-dir \
                 /nonexistent --shell /usr/sbin/nologin {name}`) or set mail_owner to an \
                 existing unprivileged account"
            )
        })?;
    if user.uid.is_root() {
        return Err("user id 0; it must be an unprivileged account".to_owned());
    }
    Ok(user)
}

/// The relay's configuration check, plus, when run as root, that `mail_owner` can be
/// become.
pub fn check(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut diags = crate::checks::check_relay(loaded);
    if is_root() {
        let config = &loaded.config;
        if let Err(msg) = mail_owner(config.text("mail_owner")) {
            diags.push(config.problem("mail_owner", msg));
        }
    }
    diags
}

/// Gives the spool to `user` and becomes `user` for good (supplementary groups, group and
/// user). Returns what to log.
pub fn drop_to(user: &User, queue_directory: &Path) -> Result<String, String> {
    // The queue directory itself may be a symbolic link to the real one.
    let queue_directory = std::fs::canonicalize(queue_directory)
        .map_err(|e| format!("queue_directory {}: {e}", queue_directory.display()))?;
    chown_tree(&queue_directory, user.uid, user.gid).map_err(|e| {
        format!(
            "queue_directory {}: cannot give it to mail_owner {}: {e}",
            queue_directory.display(),
            user.name
        )
    })?;
    let fail = |what: &str, e: nix::Error| format!("mail_owner {}: {what}: {e}", user.name);
    unistd::setgroups(&[user.gid]).map_err(|e| fail("cannot set the groups", e))?;
    unistd::setgid(user.gid).map_err(|e| fail("cannot change group", e))?;
    unistd::setuid(user.uid).map_err(|e| fail("cannot change user", e))?;
    // setuid as root changes the real, effective and saved ids alike; make sure.
    if unistd::setuid(Uid::from_raw(0)).is_ok() || Uid::effective().is_root() {
        return Err(format!("mail_owner {}: root could be regained", user.name));
    }
    Ok(format!(
        "running as mail_owner {} (uid {}, gid {})",
        user.name, user.uid, user.gid
    ))
}

/// `chown -R` without following symbolic links: the spool's directories and files, which
/// root may have created at an earlier start.
fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
        std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
