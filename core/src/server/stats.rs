//! Per-session command counts for the `disconnect from` log line
//! (`ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`).

use super::command::Verb;
use alloc::string::String;
use core::fmt::Write;

/// (succeeded, total) per verb, and for unknown commands.
#[derive(Clone, Debug, Default)]
pub struct CommandStats {
    counts: [(u32, u32); Verb::ALL.len()],
    unknown: u32,
}

impl CommandStats {
    /// Counts one command and whether it succeeded.
    pub fn record(&mut self, verb: Verb, ok: bool) {
        let i = Verb::ALL.iter().position(|v| *v == verb).unwrap_or(0);
        let slot = &mut self.counts[i];
        slot.1 = slot.1.saturating_add(1);
        if ok {
            slot.0 = slot.0.saturating_add(1);
        }
    }

    /// Counts one line that was not a known command.
    pub fn record_unknown(&mut self) {
        self.unknown = self.unknown.saturating_add(1);
    }

    /// ` ehlo=1 rcpt=0/1 commands=1/2`, or empty when nothing was sent.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let (mut ok, mut total) = (0u32, 0u32);
        let unknown = ("unknown", (0, self.unknown));
        let named = Verb::ALL.iter().map(|v| v.name()).zip(self.counts);
        for (name, (good, all)) in named.chain(core::iter::once(unknown)) {
            if all > 0 {
                push_count(&mut out, name, good, all);
            }
            ok = ok.saturating_add(good);
            total = total.saturating_add(all);
        }
        push_count(&mut out, "commands", ok, total);
        out
    }
}

fn push_count(out: &mut String, name: &str, ok: u32, total: u32) {
    let _ = if ok == total {
        write!(out, " {name}={total}")
    } else {
        write!(out, " {name}={ok}/{total}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shapes() {
        let mut s = CommandStats::default();
        assert_eq!(s.summary(), " commands=0");
        s.record(Verb::Ehlo, true);
        s.record(Verb::Mail, true);
        s.record(Verb::Rcpt, false);
        s.record_unknown();
        s.record(Verb::Quit, true);
        assert_eq!(
            s.summary(),
            " ehlo=1 mail=1 rcpt=0/1 quit=1 unknown=0/1 commands=3/5"
        );
    }
}
