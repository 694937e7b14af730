//! The `relayhost` entry that last took mail, remembered in the queue directory, so that
//! the next delivery (of a long-running runner or of a one-shot `certrelay sendmail`) tries
//! it first: a laptop on a network that blocks port 25 does not wait on the dead entry
//! before every message.
//!
//! The file holds the entry as written in `relayhost`, nothing else. It only ever reorders
//! the configured entries: a file naming anything else (edited, corrupt, hostile, from an
//! older configuration) is ignored, so it can never send mail to a host the configuration
//! does not name. Not here: which entry worked (the runner tells), the entries themselves.

use crate::delivery::route::NextHop;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The file's name in the queue directory.
pub const FILE: &str = "relayhost.last";

/// Longest content read: an entry is a host name and a port.
const MAX_LEN: u64 = 1024;

/// The remembered entry's index in `hops`, if the file names one of them exactly.
pub fn remembered(dir: &Path, hops: &[NextHop]) -> Option<usize> {
    // Not followed if a link, not waited on if a FIFO, bounded, a regular file only.
    let text = crate::status::read_claim(&dir.join(FILE), &[], MAX_LEN).ok()?;
    let entry = text.trim();
    hops.iter().position(|h| h.written == entry)
}

/// `hops` with entry `first` moved to the front, the others in their configured order.
pub fn reordered(hops: &[NextHop], first: Option<usize>) -> Vec<NextHop> {
    let mut out = hops.to_vec();
    if let Some(i) = first.filter(|&i| i < out.len()) {
        let hop = out.remove(i);
        out.insert(0, hop);
    }
    out
}

/// Remembers `entry` (a `relayhost` entry as written): written beside and renamed over the
/// old file, so that a reader sees the old entry or the new one, never a mix.
pub fn remember(dir: &Path, entry: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(entry.as_bytes())?;
        f.write_all(b"\n")?;
        fs::rename(&tmp, dir.join(FILE))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::nexthop::parse_relayhost;

    fn dir(label: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("last-relay-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn written(hops: &[NextHop]) -> Vec<&str> {
        hops.iter().map(|h| h.written.as_str()).collect()
    }

    #[test]
    fn the_entry_that_worked_goes_first_and_the_rest_keep_their_order() {
        let d = dir("order");
        let hops = parse_relayhost("[r.example]:465, [r.example]:587, [r.example]:25").unwrap();
        assert_eq!(remembered(&d, &hops), None);
        remember(&d, "[r.example]:25").unwrap();
        let first = remembered(&d, &hops);
        assert_eq!(first, Some(2));
        assert_eq!(
            written(&reordered(&hops, first)),
            ["[r.example]:25", "[r.example]:465", "[r.example]:587"]
        );
        remember(&d, "[r.example]:587").unwrap();
        assert_eq!(remembered(&d, &hops), Some(1));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_naming_anything_else_is_ignored() {
        let d = dir("hostile");
        let hops = parse_relayhost("[r.example]:465, [r.example]:587").unwrap();
        for junk in [
            &b"[evil.example]:25\n"[..],
            b"[r.example]:465 [evil.example]:25",
            b"\xff\xfe[r.example]:587",
            b"",
            &[b'x'; 5000],
        ] {
            fs::write(d.join(FILE), junk).unwrap();
            assert_eq!(remembered(&d, &hops), None, "{junk:?}");
        }
        // A file too long to be an entry is not read on, even if it starts with one.
        let mut long = b"[r.example]:587".to_vec();
        long.extend(std::iter::repeat_n(b' ', 2000));
        long.extend(b"[evil.example]:25");
        fs::write(d.join(FILE), &long).unwrap();
        assert_eq!(remembered(&d, &hops), None);
        assert_eq!(written(&reordered(&hops, Some(9))), written(&hops));
        // A link to a file that names an entry is not followed; a FIFO is not waited on.
        fs::remove_file(d.join(FILE)).unwrap();
        fs::write(d.join("elsewhere"), "[r.example]:587\n").unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join(FILE)).unwrap();
        assert_eq!(remembered(&d, &hops), None);
        fs::remove_file(d.join(FILE)).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(d.join(FILE))
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(remembered(&d, &hops), None);
        let _ = fs::remove_dir_all(&d);
    }
}
