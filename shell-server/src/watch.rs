//! Watching the configuration for changes: the relay reloads when `main.cf`, `master.cf` or
//! a file they name changes, without a SIGHUP (`certrelay_config_watch`).
//!
//! What is watched is worked out from the files as they are now: `main.cf`, `master.cf`,
//! the tables of `relay_clientcerts`, `virtual_alias_maps`, `smtpd_sender_ccert_maps`,
//! `smtp_tls_per_site` and `dkim_signing_keys` (with the key files it lists), and the
//! certificate and key files of `smtpd_tls_*` and `smtp_tls_*`, in main.cf and in every
//! listener's `-o` overrides. For each, the folder that holds it is watched, not the file:
//! editors and Kubernetes replace files by a rename, which a watch on the file would miss.
//! A name that is a symbolic link is followed by its links only (read, never opened), and
//! the folder of each link on the way is watched too: a Kubernetes volume's `main.cf ->
//! ..data/main.cf` with `..data -> ..2026_12_04_01_02_03.123` is seen to change when a new
//! `..data` is renamed over the old one.
//!
//! A burst of changes leads to one reload, after [`QUIET`] without a change (or at most
//! [`LONGEST`] after the first, so that a file touched in a loop still gets read, and never
//! more than one reload per [`QUIET`]). The watcher only says that something changed: the
//! reload itself is the SIGHUP one (`serve`), which reads what main.cf names (as
//! `mail_owner` once the relay dropped root), keeps the running configuration when the new
//! one has an error, and writes the reload report.
//!
//! With inotify (Linux) changes are seen at once; where inotify is missing or refused (its
//! limits), or with `certrelay_config_watch = poll`, each name is looked at (its link
//! target, inode, size, times) every [`POLL`].
//!
//! Not here: reading or checking the configuration (`generation`), the reload (`serve`).

use certrelay_core::config::{Config, Diagnostic};
use certrelay_core::dkim::KeyLine;
use certrelay_shell::conf;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// The parameter choosing how the configuration is watched.
pub const PARAMETER: &str = "certrelay_config_watch";

/// A burst of changes is over after this long without another.
pub const QUIET: Duration = Duration::from_millis(500);

/// The longest a reload waits after the first change of a burst that goes on.
pub const LONGEST: Duration = Duration::from_secs(2);

/// How often names are looked at when they are polled.
pub const POLL: Duration = Duration::from_secs(2);

/// The most symbolic links followed for one name (as the kernel does).
const MAX_LINKS: usize = 40;

/// The tables a reload reads, by parameter.
const TABLE_PARAMS: &[&str] = &[
    "relay_clientcerts",
    "virtual_alias_maps",
    "smtpd_sender_ccert_maps",
    "smtp_tls_per_site",
    "dkim_signing_keys",
];

/// The certificate and key files a reload reads, by parameter.
const FILE_PARAMS: &[&str] = &[
    "smtpd_tls_cert_file",
    "smtpd_tls_key_file",
    "smtpd_tls_CAfile",
    "smtp_tls_cert_file",
    "smtp_tls_key_file",
    "smtp_tls_CAfile",
];

/// How the configuration is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// inotify where the system has it (Linux), else polling.
    Inotify,
    /// Polling every [`POLL`].
    Poll,
    /// Not at all: SIGHUP reloads.
    Off,
}

/// `certrelay_config_watch` of `config`.
pub fn mode(config: &Config) -> Result<Mode, Diagnostic> {
    match config.text(PARAMETER).trim() {
        "inotify" | "" => Ok(Mode::Inotify),
        "poll" => Ok(Mode::Poll),
        "no" => Ok(Mode::Off),
        _ => Err(config.problem(PARAMETER, "expected inotify, poll or no")),
    }
}

/// What `certrelayd check` (and a start or reload) says about `certrelay_config_watch`.
pub fn check(config: &Config) -> Vec<Diagnostic> {
    mode(config).err().into_iter().collect()
}

/// One name in one folder: when it changes, the configuration may have changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    dir: PathBuf,
    name: OsString,
}

impl Entry {
    fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// The names to watch for the configuration in `dir`, as its files are now.
fn plan(dir: &Path) -> BTreeSet<Entry> {
    named_files(dir)
        .iter()
        .flat_map(|path| chain(path))
        .collect()
}

/// `main.cf`, `master.cf` and the files they name that a reload reads.
fn named_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("main.cf"), dir.join("master.cf")];
    // A main.cf that cannot be read or parsed names nothing more; its own folder is watched,
    // so that the fix is seen.
    let Ok(loaded) = conf::load(dir) else {
        return out;
    };
    let mut configs = vec![loaded.config.clone()];
    for listener in &loaded.listeners {
        configs.push(loaded.config.with_overrides(&listener.override_list()).0);
    }
    for config in &configs {
        for name in FILE_PARAMS {
            let path = config.text(name).trim();
            if !path.is_empty() {
                out.push(PathBuf::from(path));
            }
        }
        for name in TABLE_PARAMS {
            if let Ok(specs) = config.tables(name) {
                out.extend(specs.into_iter().map(|s| PathBuf::from(s.path)));
            }
        }
        // The DKIM key files are named in its tables.
        for table in conf::read_tables(config, crate::dkim::PARAMETER).0 {
            for entry in table.entries() {
                if let Ok(line) = KeyLine::parse(&entry.key, &entry.value) {
                    out.push(PathBuf::from(line.key_file));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One step of a path.
enum Part {
    Up,
    Name(OsString),
}

fn parts(path: &Path) -> Vec<Part> {
    path.components()
        .filter_map(|c| match c {
            Component::ParentDir => Some(Part::Up),
            Component::Normal(n) => Some(Part::Name(n.to_owned())),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// The names whose change changes what `path` is: each symbolic link on the way to it, and
/// the file itself (or the first name missing on the way). Links are read, never the files.
fn chain(path: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let start = if path.is_absolute() {
        path.to_owned()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => return out,
        }
    };
    // Steps still to take, the next one last.
    let mut todo: Vec<Part> = parts(&start).into_iter().rev().collect();
    let mut current = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop() {
        let name = match part {
            Part::Up => {
                current.pop();
                continue;
            }
            Part::Name(n) => n,
        };
        let here = current.join(&name);
        let entry = Entry {
            dir: current.clone(),
            name,
        };
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() && links < MAX_LINKS => {
                links += 1;
                out.push(entry);
                let Ok(target) = std::fs::read_link(&here) else {
                    return out;
                };
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                todo.extend(parts(&target).into_iter().rev());
            }
            Ok(_) if !todo.is_empty() => current = here,
            // The file itself, or the first name missing: its appearance is a change too.
            _ => {
                out.push(entry);
                return out;
            }
        }
    }
    out
}

/// What polling compares: a name's link target, inode, size and times, or why it could not
/// be looked at.
#[derive(Debug, PartialEq, Eq)]
enum Stamp {
    Absent(io::ErrorKind),
    Seen {
        dev: u64,
        ino: u64,
        mode: u32,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
        link: Option<PathBuf>,
    },
}

fn stamp(entry: &Entry) -> Stamp {
    let path = entry.path();
    match std::fs::symlink_metadata(&path) {
        Ok(m) => Stamp::Seen {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            link: if m.file_type().is_symlink() {
                std::fs::read_link(&path).ok()
            } else {
                None
            },
        },
        Err(e) => Stamp::Absent(e.kind()),
    }
}

/// When a burst of changes is over.
#[derive(Debug, Default)]
pub(crate) struct Debounce {
    /// The first and the last change of the burst under way.
    burst: Option<(Instant, Instant)>,
}

impl Debounce {
    /// A change seen at `now`.
    pub(crate) fn change(&mut self, now: Instant) {
        let first = self.burst.map_or(now, |(first, _)| first);
        self.burst = Some((first, now));
    }

    /// When the burst under way is over.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.burst
            .map(|(first, last)| (last + QUIET).min(first + LONGEST))
    }

    /// True (once) when the burst under way is over at `now`.
    pub(crate) fn is_over(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| d <= now) {
            self.burst = None;
            return true;
        }
        false
    }
}

/// The relay's side of the watcher: what changed, once per burst.
pub struct Changes {
    rx: Option<smol::channel::Receiver<String>>,
}

impl Changes {
    /// A configuration that is not watched: [`Changes::next`] never ends.
    pub fn none() -> Changes {
        Changes { rx: None }
    }

    /// The next burst of changes: the first name seen to change.
    pub async fn next(&mut self) -> String {
        if let Some(rx) = &self.rx {
            if let Ok(what) = rx.recv().await {
                return what;
            }
            self.rx = None;
        }
        std::future::pending().await
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod kernel {
    //! inotify: a watch per folder, the names that matter in each.

    use super::Entry;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::ffi::OsString;
    use std::os::fd::AsFd;
    use std::path::PathBuf;
    use std::time::Duration;

    /// What is a change in a watched folder: written and closed, renamed in or out,
    /// created, deleted, or its owner, mode or times changed; and the folder itself going.
    fn mask() -> AddWatchFlags {
        AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
    }

    pub(super) struct Kernel {
        inotify: Inotify,
        /// The watched folders.
        watched: BTreeMap<PathBuf, WatchDescriptor>,
        /// The names that matter in each watched folder.
        names: HashMap<WatchDescriptor, (PathBuf, BTreeSet<OsString>)>,
        /// Folders that could not be watched, said once each.
        refused: BTreeSet<PathBuf>,
    }

    impl Kernel {
        pub(super) fn new() -> nix::Result<Kernel> {
            Ok(Kernel {
                inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
                watched: BTreeMap::new(),
                names: HashMap::new(),
                refused: BTreeSet::new(),
            })
        }

        /// Watches the folders of `entries` (and no others); returns the entries whose
        /// folder could not be watched, to be polled.
        pub(super) fn follow(&mut self, entries: &BTreeSet<Entry>) -> BTreeSet<Entry> {
            let dirs: BTreeSet<&PathBuf> = entries.iter().map(|e| &e.dir).collect();
            let gone: Vec<PathBuf> = self
                .watched
                .keys()
                .filter(|d| !dirs.contains(d))
                .cloned()
                .collect();
            for dir in gone {
                if let Some(wd) = self.watched.remove(&dir) {
                    // Another watched path may be the same folder (same descriptor).
                    if !self.watched.values().any(|w| *w == wd) {
                        let _ = self.inotify.rm_watch(wd);
                    }
                }
            }
            for dir in dirs {
                if self.watched.contains_key(dir) {
                    continue;
                }
                match self.inotify.add_watch(dir.as_path(), mask()) {
                    Ok(wd) => {
                        self.refused.remove(dir);
                        self.watched.insert(dir.clone(), wd);
                    }
                    Err(e) => {
                        if self.refused.insert(dir.clone()) {
                            log::warn!(
                                "{}: cannot watch for configuration changes ({e}); looking \
                                 at it every {} s instead",
                                dir.display(),
                                super::POLL.as_secs()
                            );
                        }
                    }
                }
            }
            self.names.clear();
            let mut unwatched = BTreeSet::new();
            for entry in entries {
                match self.watched.get(&entry.dir) {
                    Some(wd) => {
                        self.names
                            .entry(*wd)
                            .or_insert_with(|| (entry.dir.clone(), BTreeSet::new()))
                            .1
                            .insert(entry.name.clone());
                    }
                    None => {
                        unwatched.insert(entry.clone());
                    }
                }
            }
            unwatched
        }

        /// Waits up to `wait` (forever with `None`) for events; returns the first name that
        /// matters among them, if any.
        pub(super) fn wait(&mut self, wait: Option<Duration>) -> Option<PathBuf> {
            let timeout = wait.map_or(PollTimeout::NONE, |w| {
                // Rounded up, so that a deadline a few microseconds away is not a busy loop.
                let ms = w.as_millis().saturating_add(1);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            });
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(n) if n > 0 => {}
                // Timed out, or interrupted by a signal.
                _ => return None,
            }
            let events = self.inotify.read_events().ok()?;
            let mut changed = None;
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost: anything may have changed.
                    changed.get_or_insert_with(|| PathBuf::from("(events lost)"));
                    continue;
                }
                let Some((dir, names)) = self.names.get(&event.wd) else {
                    // A watch already given up.
                    continue;
                };
                let dir = dir.clone();
                if event.mask.contains(AddWatchFlags::IN_IGNORED)
                    || event.mask.contains(AddWatchFlags::IN_DELETE_SELF)
                    || event.mask.contains(AddWatchFlags::IN_MOVE_SELF)
                {
                    // The folder itself went: watched anew (by its path) after the reload.
                    if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                        self.names.remove(&event.wd);
                        self.watched.retain(|_, wd| *wd != event.wd);
                    }
                    changed.get_or_insert(dir);
                    continue;
                }
                if let Some(name) = event.name.filter(|n| names.contains(n)) {
                    changed.get_or_insert_with(|| dir.join(name));
                }
            }
            changed
        }
    }
}

/// The watcher, set up (as root, before the relay drops privileges) and then run on a
/// thread of its own.
pub struct Watcher {
    dir: PathBuf,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    kernel: Option<kernel::Kernel>,
    /// The names looked at every [`POLL`], with what was seen last.
    polled: BTreeMap<Entry, Stamp>,
    entries: usize,
}

impl Watcher {
    /// Sets up the watcher of the configuration in `dir` as its `certrelay_config_watch`
    /// says; `None` when it says `no`. Folders watched now (as root) stay watched after the
    /// relay drops privileges.
    pub fn prepare(dir: &Path) -> Option<Watcher> {
        let mode = conf::load(dir)
            .ok()
            .map_or(Mode::Inotify, |l| mode(&l.config).unwrap_or(Mode::Inotify));
        if mode == Mode::Off {
            log::info!("{PARAMETER} = no: the configuration is reloaded on SIGHUP only");
            return None;
        }
        let mut watcher = Watcher {
            dir: dir.to_owned(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            kernel: None,
            polled: BTreeMap::new(),
            entries: 0,
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if mode == Mode::Inotify {
            match kernel::Kernel::new() {
                Ok(k) => watcher.kernel = Some(k),
                Err(e) => log::warn!(
                    "cannot watch the configuration with inotify ({e}); looking at its files \
                     every {} s instead",
                    POLL.as_secs()
                ),
            }
        }
        watcher.replan();
        log::info!(
            "watching the configuration for changes: {} name(s), {}",
            watcher.entries,
            if watcher.uses_inotify() {
                "with inotify".to_owned()
            } else {
                format!("looked at every {} s", POLL.as_secs())
            }
        );
        Some(watcher)
    }

    fn uses_inotify(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return self.kernel.is_some();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        false
    }

    /// Works out again what to watch, from the files as they are now, and takes the stamps
    /// that later polls compare with.
    fn replan(&mut self) {
        let entries = plan(&self.dir);
        self.entries = entries.len();
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let entries = match &mut self.kernel {
            Some(k) => k.follow(&entries),
            None => entries,
        };
        self.polled = entries
            .into_iter()
            .map(|e| {
                let s = stamp(&e);
                (e, s)
            })
            .collect();
    }

    /// Starts the watcher's thread; the relay hears of changes through the result.
    pub fn spawn(mut self) -> Changes {
        let (tx, rx) = smol::channel::bounded(1);
        let started = std::thread::Builder::new()
            .name("config-watch".to_owned())
            .spawn(move || {
                // The relay now works in its queue directory: names relative to it are
                // watched from there, as the reload reads them.
                self.replan();
                self.run(&tx);
            });
        match started {
            Ok(_) => Changes { rx: Some(rx) },
            Err(e) => {
                log::warn!("cannot watch the configuration ({e}): reload it with SIGHUP");
                Changes::none()
            }
        }
    }

    /// Until the relay stops listening: waits for changes, and tells of each burst once it
    /// is over, after working out again what to watch.
    fn run(&mut self, tx: &smol::channel::Sender<String>) {
        let mut burst = Debounce::default();
        let mut first: Option<PathBuf> = None;
        let mut next_poll = Instant::now() + POLL;
        loop {
            let now = Instant::now();
            let mut wait = burst.deadline().map(|d| d.saturating_duration_since(now));
            if !self.polled.is_empty() {
                let until_poll = next_poll.saturating_duration_since(now);
                wait = Some(wait.map_or(until_poll, |w| w.min(until_poll)));
            }
            let seen = self.wait(wait);
            let now = Instant::now();
            if let Some(path) = seen {
                burst.change(now);
                first.get_or_insert(path);
            }
            if now >= next_poll {
                next_poll = now + POLL;
                for (entry, last) in &mut self.polled {
                    let seen = stamp(entry);
                    if seen != *last {
                        *last = seen;
                        burst.change(now);
                        first.get_or_insert_with(|| entry.path());
                    }
                }
            }
            if burst.is_over(now) {
                // Watches and stamps first: a change from now on is seen again.
                self.replan();
                let what = first
                    .take()
                    .map_or_else(String::new, |p| p.display().to_string());
                if let Err(smol::channel::TrySendError::Closed(_)) = tx.try_send(what) {
                    return;
                }
            }
        }
    }

    /// Waits up to `wait` (forever with `None`) for an event that matters.
    fn wait(&mut self, wait: Option<Duration>) -> Option<PathBuf> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(k) = &mut self.kernel {
            return k.wait(wait);
        }
        std::thread::sleep(wait.unwrap_or(POLL));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh folder of this test's own under the system's temporary folder.
    fn scratch(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("certrelayd-watch-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(dir: &Path, name: &str) -> Entry {
        Entry {
            dir: dir.to_owned(),
            name: OsString::from(name),
        }
    }

    #[test]
    fn a_burst_of_changes_is_one_reload_after_the_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.deadline(), None);
        let mut fired = Vec::new();
        for ms in 0..1000u64 {
            let now = t0 + Duration::from_millis(ms);
            if ms % 3 == 0 && ms < 200 {
                d.change(now);
            }
            if d.is_over(now) {
                fired.push(ms);
            }
        }
        // The last change at 198 ms, then QUIET without one.
        assert_eq!(fired, vec![198 + 500]);
        assert_eq!(d.deadline(), None);
        // A change after a long quiet waits QUIET, not LONGEST since some earlier one.
        d.change(t0 + Duration::from_secs(10));
        assert!(!d.is_over(t0 + Duration::from_millis(10_499)));
        assert!(d.is_over(t0 + Duration::from_millis(10_500)));
    }

    #[test]
    fn a_file_touched_in_a_loop_reloads_at_most_once_per_quiet_and_is_still_read() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        let mut fired = Vec::new();
        // A change every 5 ms for 60 s.
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if ms % 5 == 0 {
                d.change(now);
            }
            if d.is_over(now) {
                fired.push(ms);
            }
        }
        let quiet = u64::try_from(QUIET.as_millis()).unwrap();
        let longest = u64::try_from(LONGEST.as_millis()).unwrap();
        for pair in fired.windows(2) {
            assert!(pair[1] - pair[0] >= quiet, "{fired:?}");
        }
        // Not starved: one reload per LONGEST at least.
        assert!(fired.len() as u64 >= 60_000 / longest - 1, "{fired:?}");
        assert!(fired.len() as u64 <= 60_000 / quiet, "{fired:?}");
    }

    #[test]
    fn the_mode_is_read_and_an_unknown_one_is_an_error() {
        let parse = |text: &str| {
            let (config, _) = Config::parse_with_defaults("main.cf", text, &[]);
            mode(&config)
        };
        assert_eq!(parse(""), Ok(Mode::Inotify));
        assert_eq!(
            parse("certrelay_config_watch = inotify\n"),
            Ok(Mode::Inotify)
        );
        assert_eq!(parse("certrelay_config_watch = poll\n"), Ok(Mode::Poll));
        assert_eq!(parse("certrelay_config_watch = no\n"), Ok(Mode::Off));
        let err = parse("x = 1\ncertrelay_config_watch = sometimes\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "main.cf:2: error: certrelay_config_watch = sometimes: expected inotify, poll or no"
        );
    }

    #[test]
    fn a_kubernetes_volume_is_watched_at_each_link_and_at_the_file() {
        let dir = scratch("k8s");
        let data = dir.join("..2026_12_04_01_02_03.123");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("main.cf"), "").unwrap();
        symlink("..2026_12_04_01_02_03.123", dir.join("..data")).unwrap();
        symlink("..data/main.cf", dir.join("main.cf")).unwrap();
        let found = chain(&dir.join("main.cf"));
        assert_eq!(
            found,
            vec![
                entry(&dir, "main.cf"),
                entry(&dir, "..data"),
                entry(&data, "main.cf")
            ]
        );
        // The swap: a new folder, a new ..data renamed over the old one.
        let before = stamp(&entry(&dir, "..data"));
        let next = dir.join("..2026_12_04_01_05_00.456");
        std::fs::create_dir(&next).unwrap();
        std::fs::write(next.join("main.cf"), "").unwrap();
        symlink("..2026_12_04_01_05_00.456", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_ne!(stamp(&entry(&dir, "..data")), before);
        assert_eq!(chain(&dir.join("main.cf"))[2], entry(&next, "main.cf"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_in_a_loop_and_missing_names_end_the_chain() {
        let dir = scratch("loop");
        symlink("b", dir.join("a")).unwrap();
        symlink("a", dir.join("b")).unwrap();
        let found = chain(&dir.join("a"));
        assert!(found.len() <= MAX_LINKS + 1, "{found:?}");
        // A name missing on the way: its appearance is what to watch for.
        assert_eq!(
            chain(&dir.join("no-such/relay_clientcerts")),
            vec![entry(&dir, "no-such")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_watcher_reads_links_but_never_opens_what_they_name() {
        // A FIFO would block whoever opens it for reading: the chain and the stamps finish.
        let dir = scratch("fifo");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        symlink(&fifo, dir.join("relay_clientcerts")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let link = dir.join("relay_clientcerts");
        std::thread::spawn(move || {
            let found = chain(&link);
            let stamps: Vec<Stamp> = found.iter().map(stamp).collect();
            let _ = tx.send((found, stamps.len()));
        });
        let (found, stamps) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher blocked on the FIFO");
        assert_eq!(
            found,
            vec![entry(&dir, "relay_clientcerts"), entry(&dir, "fifo")]
        );
        assert_eq!(stamps, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_plan_holds_what_a_reload_reads_in_main_cf_master_cf_and_the_dkim_table() {
        let dir = scratch("plan");
        let d = dir.display();
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "smtpd_tls_cert_file = {d}/tls/relay.pem\n\
                 relay_clientcerts = hash:{d}/maps/clients\n\
                 dkim_signing_keys = hash:{d}/dkim\n\
                 queue_directory = {d}/spool\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("master.cf"),
            format!(
                "127.0.0.1:2525 inet n - n - - smtpd\n  -o smtpd_sender_ccert_maps=hash:{d}/senders\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("dkim"),
            format!("example.org s1 {d}/keys/s1.pem\n"),
        )
        .unwrap();
        for sub in ["tls", "maps", "keys", "spool"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("tls/relay.pem"), "").unwrap();
        std::fs::write(dir.join("maps/clients"), "").unwrap();
        std::fs::write(dir.join("keys/s1.pem"), "").unwrap();
        let found = plan(&dir);
        for (folder, name) in [
            ("", "main.cf"),
            ("", "master.cf"),
            ("", "senders"),
            ("", "dkim"),
            ("tls", "relay.pem"),
            ("tls", "relay.pem"),
            ("maps", "clients"),
            ("keys", "s1.pem"),
        ] {
            let e = entry(&dir.join(folder).components().collect::<PathBuf>(), name);
            assert!(found.contains(&e), "{e:?} not in {found:?}");
        }
        // Not the spool, which changes with every message.
        assert!(found
            .iter()
            .all(|e| !e.path().starts_with(dir.join("spool"))));
        assert!(found.iter().all(|e| e.name != "spool"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
