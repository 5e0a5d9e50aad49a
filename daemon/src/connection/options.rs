//! `SetOptions`: the fixed fields every client may set, and the
//! overrides judged by the trust model (B94).

use std::io::Read;

use super::{Connection, Step, lock};
use crate::protocol::{minor, send_last};
use crate::trust::{Override, judge_override};
use crate::wire::{read_bool, read_count, read_string, read_u64};

impl Connection {
    pub(super) fn set_options(&mut self, from: &mut impl Read) -> Result<(), Step> {
        let keep_failed = read_bool(from)?;
        let keep_going = read_bool(from)?;
        let _fallback = read_bool(from)?;
        let _verbosity = read_u64(from)?;
        let max_jobs = read_u64(from)?;
        let max_silent_time = read_u64(from)?;
        read_u64(from)?; // obsolete useBuildHook
        let _verbose_build = read_u64(from)?;
        read_u64(from)?; // obsolete logType
        read_u64(from)?; // obsolete printBuildTrace
        let cores = read_u64(from)?;
        let _use_substitutes = read_bool(from)?;
        let mut overrides = Vec::new();
        if minor(self.version) >= 12 {
            let count = read_count(from)?;
            for _ in 0..count {
                overrides.push((read_string(from)?, read_string(from)?));
            }
        }
        // The fixed fields apply to every client (B94).
        self.settings.keep_failed = keep_failed;
        self.settings.keep_going = keep_going;
        self.settings.max_jobs = max_jobs.clamp(1, 1024) as usize;
        self.settings.max_silent_time = max_silent_time;
        self.settings.cores = cores as usize;
        let daemon_is_root = nix::unistd::geteuid().is_root();
        for (name, value) in overrides {
            match judge_override(&self.settings, self.trusted, daemon_is_root, &name, &value) {
                Override::Apply {
                    value,
                    warnings: judged,
                } => {
                    for w in judged {
                        self.log(&format!("warning: {w}"));
                    }
                    let mut warnings = Vec::new();
                    if let Err(e) = hermetic_config::nixconf::apply(
                        &mut self.settings,
                        &name,
                        &value,
                        &mut |w| warnings.push(w),
                    ) {
                        self.log(&format!("warning: {e}"));
                    }
                    for w in warnings {
                        self.log(&format!("warning: {w}"));
                    }
                }
                Override::Ignore => {}
                Override::Warn(text) => self.log(&format!("warning: {text}")),
            }
        }
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }
}
