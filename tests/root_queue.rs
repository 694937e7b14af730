//! `certrelayd queue` and `delete` run by root on a spool the relay gave to `mail_owner`
//! (`nobody`): what a compromised `mail_owner` plants there (a link to a file outside, a
//! FIFO, a `queue/` that is a link, a name that climbs out) must not make root read, hang
//! on, or remove anything but `mail_owner`'s own plain files in the spool. The real binary,
//! no relay needed: the commands read the spool themselves. Every wait is bounded.

use certrelay_core::queue::{Envelope, QueueId, Recipient};
use certrelay_shell::spool::Spool;
use certrelay_testkit::{binary, TempDir};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// mail_owner `nobody`'s user and group id.
const NOBODY: u32 = 65534;

/// Longest a command may take before the test calls it hung.
const BOUND: Duration = Duration::from_secs(20);

fn assert_root() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(uid, 0, "this test runs certrelayd as root: run it as root");
}

/// Gives `path` itself (never what a link names) to `nobody`.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A configuration in `dir` whose spool, `dir/spool`, is `nobody`'s with one real
/// message in it; returns that message's id.
fn nobodys_relay(dir: &TempDir) -> String {
    let d = dir.path().display();
    dir.write(
        "main.cf",
        &format!("myhostname = relay.test\nmail_owner = nobody\nqueue_directory = {d}/spool\n"),
    );
    let spool = dir.path().join("spool");
    let id = message(&spool, 1, "real@laptop.example");
    for sub in ["", "tmp", "queue", "corrupt"] {
        give_to_nobody(&spool.join(sub));
    }
    for entry in std::fs::read_dir(spool.join("queue")).unwrap() {
        give_to_nobody(&entry.unwrap().path());
    }
    id
}

/// Commits a message from `sender` into the spool at `root` (made if missing).
fn message(root: &Path, unique: u32, sender: &str) -> String {
    let (spool, _) = Spool::open(root).unwrap();
    let id = QueueId::generate(1_700_000_000, unique);
    let envelope = Envelope::new(
        id.clone(),
        sender,
        1_700_000_000,
        vec![Recipient::new("someone@elsewhere.example")],
    );
    let mut incoming = spool.incoming(id.as_str()).unwrap();
    incoming.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
    incoming.commit(envelope.to_text().as_bytes()).unwrap();
    id.to_string()
}

/// Runs `certrelayd -c DIR ARGS`, killing it (and failing) if it takes past [`BOUND`].
fn certrelayd(dir: &TempDir, args: &[&str]) -> Output {
    let mut child = Command::new(binary("certrelayd"))
        .arg("-c")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("certrelayd {args:?} still running after {BOUND:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
#[ignore = "needs root: a spool of nobody's (run by .ci/run)"]
fn as_root_queue_skips_a_planted_link_and_a_fifo_and_lists_the_rest() {
    assert_root();
    let dir = TempDir::new("rootq-list");
    let real = nobodys_relay(&dir);
    let queue = dir.path().join("spool/queue");
    // A message file of root's outside the spool, which mail_owner links to.
    let secret = message(&dir.path().join("outside"), 2, "secret@outside.example");
    let link = queue.join(format!("{secret}.msg"));
    symlink(
        dir.path().join(format!("outside/queue/{secret}.msg")),
        &link,
    )
    .unwrap();
    give_to_nobody(&link);
    // A FIFO: opening it for reading would wait for a writer forever.
    let fifo_id = QueueId::generate(1_700_000_000, 3).to_string();
    let fifo = queue.join(format!("{fifo_id}.msg"));
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    give_to_nobody(&fifo);
    // A plain file, but root's: not mail_owner's to have written.
    let foreign_id = QueueId::generate(1_700_000_000, 4).to_string();
    std::fs::copy(
        dir.path().join(format!("outside/queue/{secret}.msg")),
        queue.join(format!("{foreign_id}.msg")),
    )
    .unwrap();

    let out = certrelayd(&dir, &["queue"]);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("secret@outside.example"), "{text}");
    assert!(
        text.contains(&format!(
            "{secret}: skipped: a symbolic link (not followed)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{fifo_id}: skipped: not a plain file")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{foreign_id}: skipped: owned by uid 0")),
        "{text}"
    );
    // The listing carries on past them.
    assert!(
        text.contains(&real) && text.contains("real@laptop.example"),
        "{text}"
    );
    assert!(text.contains("in 1 Request"), "{text}");
}

#[test]
#[ignore = "needs root: a spool of nobody's (run by .ci/run)"]
fn as_root_queue_refuses_a_queue_directory_or_queue_folder_that_is_a_link() {
    assert_root();
    let dir = TempDir::new("rootq-dirlink");
    nobodys_relay(&dir);
    // mail_owner swaps its queue/ for a link to a folder of root's messages.
    let secret = message(&dir.path().join("outside"), 2, "secret@outside.example");
    let queue = dir.path().join("spool/queue");
    std::fs::rename(&queue, dir.path().join("spool/old-queue")).unwrap();
    symlink(dir.path().join("outside/queue"), &queue).unwrap();
    give_to_nobody(&queue);
    let out = certrelayd(&dir, &["queue"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("secret@outside.example"), "{text}");
    assert!(!text.contains(&secret), "{text}");
    assert!(
        text.contains("queue/: a symbolic link (not followed)"),
        "{text}"
    );

    // queue_directory itself a link: refused too.
    let d = dir.path().display();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nqueue_directory = {d}/spool-link\n"
        ),
    );
    symlink(dir.path().join("outside"), dir.path().join("spool-link")).unwrap();
    let out = certrelayd(&dir, &["queue"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("secret@outside.example"), "{text}");
}

#[test]
#[ignore = "needs root: a spool of nobody's (run by .ci/run)"]
fn as_root_delete_removes_nothing_through_a_planted_link() {
    assert_root();
    let dir = TempDir::new("rootq-delete");
    let real = nobodys_relay(&dir);
    let spool = dir.path().join("spool");
    // A message id whose file is a link to a file of root's outside the spool.
    let outside = dir.write("precious", "root's file\n");
    let linked = QueueId::generate(1_700_000_000, 5).to_string();
    let link = spool.join(format!("queue/{linked}.msg"));
    symlink(&outside, &link).unwrap();
    give_to_nobody(&link);
    let out = certrelayd(&dir, &["delete", &linked]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("a symbolic link (not followed)"), "{text}");
    assert!(outside.exists(), "{text}");
    assert!(std::fs::symlink_metadata(&link).is_ok(), "{text}");

    // queue/ swapped for a link to a folder of root's: the message there stays.
    let secret = message(&dir.path().join("outside"), 2, "secret@outside.example");
    let root_msg = dir.path().join(format!("outside/queue/{secret}.msg"));
    let queue = spool.join("queue");
    std::fs::rename(&queue, spool.join("old-queue")).unwrap();
    symlink(dir.path().join("outside/queue"), &queue).unwrap();
    give_to_nobody(&queue);
    let out = certrelayd(&dir, &["delete", &secret]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(root_msg.exists(), "{text}");
    std::fs::remove_file(&queue).unwrap();
    std::fs::rename(spool.join("old-queue"), &queue).unwrap();

    // A name that climbs out of the queue is no queue id.
    let out = certrelayd(&dir, &["delete", "../precious"]);
    let text = said(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is not a queue id"), "{text}");
    assert!(outside.exists(), "{text}");

    // mail_owner's own message is removed, both files of it.
    let out = certrelayd(&dir, &["delete", &real]);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{real}: removed")), "{text}");
    assert!(!queue.join(format!("{real}.msg")).exists(), "{text}");
    let out = certrelayd(&dir, &["delete", &real]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
}
