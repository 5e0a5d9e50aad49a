//! Reading a boot's serial console into test results, and the kernel ×
//! variant table. The guest marks each line it means with `hvt:<nonce>`, a
//! value fresh for every boot, so nothing a test prints can pass for a
//! result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// How one test (or probe) ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed (or timed out, or never ran as asked).
    Fail,
    /// It did not run here, for the reason given.
    Skip(String),
}

/// One test's result in one boot.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// `binary::test`, or `probe::script`.
    pub name: String,
    /// How it ended.
    pub verdict: Verdict,
    /// Its time in the guest, in seconds.
    pub seconds: f64,
    /// The end of its output, kept for failures.
    pub output: Vec<String>,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BootEnd {
    /// The guest ran its tests and said so.
    Finished,
    /// The kernel panicked.
    Panicked,
    /// Nothing ended before the deadline; the machine was killed.
    Hung,
    /// QEMU stopped before the guest finished, for the reason given.
    Died(String),
    /// The boot never happened, for the reason given (no QEMU).
    NotRun(String),
}

/// What a boot's console said, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Console {
    /// The kernel release the guest reported.
    pub release: Option<String>,
    /// Test results in order.
    pub results: Vec<TestResult>,
    /// The guest's notes (modules, cgroup layout).
    pub notes: Vec<String>,
    /// Whether the guest reached its end line.
    pub finished: bool,
    /// How many results the guest said it printed (on its end line).
    pub announced: usize,
    /// Whether the kernel said it panicked.
    pub panicked: bool,
    /// The console's last lines, for a boot that went wrong.
    pub last_lines: Vec<String>,
}

/// How many console lines a failed boot shows.
const LAST_LINES: usize = 15;

/// Reads `console` for the lines marked with `nonce`.
pub fn read_console(console: &str, nonce: &str) -> Console {
    let marker = format!("hvt:{nonce} ");
    let mut read = Console {
        release: None,
        results: Vec::new(),
        notes: Vec::new(),
        finished: false,
        announced: 0,
        panicked: console.contains("Kernel panic - not syncing"),
        last_lines: Vec::new(),
    };
    for line in console.lines() {
        let Some(at) = line.find(&marker) else {
            continue;
        };
        let rest = line[at + marker.len()..].trim_end_matches('\r');
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "begin" => read.release = rest.split_whitespace().next().map(String::from),
            "note" => read.notes.push(rest.to_string()),
            "end" => {
                read.finished = true;
                read.announced = rest.trim().parse().unwrap_or(usize::MAX);
            }
            "result" => {
                let mut fields = rest.splitn(4, ' ');
                let (Some(name), Some(verdict), Some(seconds)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let reason = fields.next().unwrap_or("").to_string();
                read.results.push(TestResult {
                    name: name.to_string(),
                    verdict: match verdict {
                        "pass" => Verdict::Pass,
                        "skip" => Verdict::Skip(reason),
                        _ => Verdict::Fail,
                    },
                    seconds: seconds.parse().unwrap_or(0.0),
                    output: Vec::new(),
                });
            }
            "output" => {
                let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Some(result) = read.results.iter_mut().rev().find(|r| r.name == name) {
                    result.output.push(text.to_string());
                }
            }
            _ => {}
        }
    }
    let lines: Vec<&str> = console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    read.last_lines = lines[lines.len().saturating_sub(LAST_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect();
    read
}

/// One kernel × variant cell of the matrix.
pub struct Row {
    /// The kernel's name.
    pub kernel: String,
    /// The cgroup variant.
    pub variant: String,
    /// How the boot ended.
    pub end: BootEnd,
    /// What its console said.
    pub console: Console,
    /// The boot's wall-clock time.
    pub elapsed: Duration,
}

impl Row {
    fn count(&self, wanted: fn(&Verdict) -> bool) -> usize {
        self.console
            .results
            .iter()
            .filter(|r| wanted(&r.verdict))
            .count()
    }

    /// Passed, failed and skipped tests; a boot that went wrong counts as
    /// one failure more, and one never run as one skip.
    pub fn counts(&self) -> (usize, usize, usize) {
        let passed = self.count(|v| *v == Verdict::Pass);
        let mut failed = self.count(|v| *v == Verdict::Fail);
        let mut skipped = self.count(|v| matches!(v, Verdict::Skip(_)));
        match self.end {
            BootEnd::Finished => {}
            BootEnd::NotRun(_) => skipped += 1,
            _ => failed += 1,
        }
        (passed, failed, skipped)
    }

    /// The row's word in the table.
    pub fn status(&self) -> &'static str {
        let (passed, failed, _) = self.counts();
        match &self.end {
            BootEnd::Panicked => "PANIC",
            BootEnd::Hung => "HANG",
            BootEnd::Died(_) => "DIED",
            BootEnd::NotRun(_) => "SKIP",
            BootEnd::Finished if failed > 0 => "FAIL",
            BootEnd::Finished if passed == 0 => "SKIP",
            BootEnd::Finished => "PASS",
        }
    }
}

/// The table, the details of what failed and was skipped, and the summary
/// line; with whether any row failed.
pub fn render(rows: &[Row]) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<6} {:>6} {:>6} {:>7} {:>8}  release",
        "kernel", "variant", "result", "passed", "failed", "skipped", "time"
    );
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for row in rows {
        let (p, f, s) = row.counts();
        passed += p;
        failed += f;
        skipped += s;
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<6} {:>6} {:>6} {:>7} {:>7.1}s  {}",
            row.kernel,
            row.variant,
            row.status(),
            p,
            f,
            s,
            row.elapsed.as_secs_f64(),
            row.console.release.as_deref().unwrap_or("-")
        );
    }
    for row in rows {
        let cell = format!("{}/{}", row.kernel, row.variant);
        let said = |out: &mut String, what: &str| {
            let _ = writeln!(out, "\n{cell}: {what}; the console said last:");
            for line in &row.console.last_lines {
                let _ = writeln!(out, "    {line}");
            }
        };
        match &row.end {
            BootEnd::Panicked => said(&mut out, "the kernel panicked"),
            BootEnd::Hung => said(
                &mut out,
                &format!(
                    "no end after {:.0} s: killed as hung",
                    row.elapsed.as_secs_f64()
                ),
            ),
            BootEnd::Died(why) => said(&mut out, why),
            BootEnd::NotRun(why) => {
                let _ = writeln!(out, "\n{cell}: skipped: {why}");
            }
            BootEnd::Finished => {}
        }
        for result in row
            .console
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
        {
            let _ = writeln!(out, "\nFAIL {cell} {}:", result.name);
            for line in &result.output {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    // Skips, once per test and reason, with the cells they happened in.
    let mut skips: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for row in rows {
        for result in &row.console.results {
            if let Verdict::Skip(reason) = &result.verdict {
                skips
                    .entry((result.name.as_str(), reason.as_str()))
                    .or_default()
                    .push(format!("{}/{}", row.kernel, row.variant));
            }
        }
    }
    if !skips.is_empty() {
        let _ = writeln!(out, "\nskipped:");
        for ((name, reason), cells) in &skips {
            let where_ = if cells.len() == rows.len() {
                "everywhere".to_string()
            } else {
                cells.join(" ")
            };
            let _ = writeln!(out, "    {name} ({where_}): {reason}");
        }
    }
    let _ = writeln!(
        out,
        "\nvm-tests: {passed} passed, {failed} failed, {skipped} skipped"
    );
    (out, failed > 0)
}

/// How a boot ended, from QEMU's view and the console's.
pub fn boot_end(
    console: &Console,
    timed_out: bool,
    status: Option<std::process::ExitStatus>,
) -> BootEnd {
    if console.finished && console.announced != console.results.len() {
        BootEnd::Died(format!(
            "the guest printed {} results but {} reached the harness",
            console.announced,
            console.results.len()
        ))
    } else if console.finished {
        BootEnd::Finished
    } else if console.panicked {
        BootEnd::Panicked
    } else if timed_out {
        BootEnd::Hung
    } else {
        BootEnd::Died(match status {
            Some(status) => format!("QEMU exited ({status}) before the guest finished"),
            None => "QEMU stopped before the guest finished".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "5eed";

    #[test]
    fn only_lines_with_the_boot_s_nonce_count() {
        let console = "\
[    1.0] Linux version 6.1.0\r\n\
hvt:5eed begin 6.1.0-56-amd64 v2\r\n\
hvt:5eed result seccomp::a pass 0.52\n\
hvt:0000 result seccomp::forged pass 0.01\n\
test seccomp::b ... hvt:5eed result seccomp::b fail 1.20\n\
hvt:5eed output seccomp::b assertion failed: x == y\n\
hvt:5eed result cgroups::c skip 0.10 no cgroup v2 here\n\
hvt:5eed end 3\n";
        let read = read_console(console, NONCE);
        assert_eq!(read.release.as_deref(), Some("6.1.0-56-amd64"));
        assert!(read.finished && !read.panicked);
        let names: Vec<_> = read.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["seccomp::a", "seccomp::b", "cgroups::c"]);
        assert_eq!(read.results[1].verdict, Verdict::Fail);
        assert_eq!(read.results[1].output, ["assertion failed: x == y"]);
        assert_eq!(
            read.results[2].verdict,
            Verdict::Skip("no cgroup v2 here".into())
        );
    }

    #[test]
    fn a_boot_without_its_end_line_is_a_panic_a_hang_or_a_death() {
        let panicked = read_console("x\nKernel panic - not syncing: VFS\n", NONCE);
        assert_eq!(boot_end(&panicked, false, None), BootEnd::Panicked);
        assert_eq!(
            panicked.last_lines.last().unwrap(),
            "Kernel panic - not syncing: VFS"
        );
        let quiet = read_console("hvt:5eed begin 6.1 v2\n", NONCE);
        assert_eq!(boot_end(&quiet, true, None), BootEnd::Hung);
        assert!(matches!(boot_end(&quiet, false, None), BootEnd::Died(_)));
        // A result line garbled on its way (a kernel message in its middle)
        // is missing, and the end line's count says so.
        let garbled = read_console(
            "hvt:5eed result a::b pass 1\nhvt:5e[ 3.1] oops\ned result a::c pass 1\nhvt:5eed end 2\n",
            NONCE,
        );
        assert_eq!(
            boot_end(&garbled, false, None),
            BootEnd::Died("the guest printed 2 results but 1 reached the harness".into())
        );
    }

    #[test]
    fn a_failed_test_fails_its_row_and_the_run() {
        let row = |console: &str| Row {
            kernel: "6.1".into(),
            variant: "v2".into(),
            end: BootEnd::Finished,
            console: read_console(console, NONCE),
            elapsed: Duration::from_secs(3),
        };
        let good = row("hvt:5eed result a::b pass 1\nhvt:5eed end 1\n");
        let bad = row("hvt:5eed result a::b fail 1\nhvt:5eed end 1\n");
        assert_eq!(good.status(), "PASS");
        assert_eq!(bad.status(), "FAIL");
        let (text, failed) = render(&[good, bad]);
        assert!(failed);
        assert!(
            text.ends_with("vm-tests: 1 passed, 1 failed, 0 skipped\n"),
            "{text}"
        );
    }
}
