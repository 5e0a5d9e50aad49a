//! After a builder succeeded: its outputs checked (B84–B86), fixed outputs
//! copied afresh and hashed (B88), every output made canonical, hashed,
//! scanned (B87) and checked; with `--check`, compared with the registered
//! ones (B89). After a failure: `keep-failed` (B82).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use hermetic_config::settings::Settings;
use hermetic_store::canonical::canonicalise;
use hermetic_store::local::copy_through_nar;
use hermetic_store::pending::{Pending, remove_any};
use hermetic_store::{Derivation, DerivationOutput, LocalStore, PathInfo, StoreLayout, StorePath};

use crate::attrs::Attrs;
use crate::error::{BuildError, HashMismatch, io_err};
use crate::goal::{BuildFailure, FailureKind, fail};
use crate::hooks;
use crate::outputs::{BuilderIds, check_root, check_tree, fixed_output_hash, hash_and_scan};

/// A build whose builder succeeded, and where its outputs are.
pub struct Finishing<'a> {
    /// The derivation's path.
    pub drv_path: &'a StorePath,
    /// The derivation.
    pub drv: &'a Derivation,
    /// Its attributes.
    pub attrs: &'a Attrs<'a>,
    /// Its printed path.
    pub printed: &'a str,
    /// Its outputs' paths.
    pub outputs: &'a BTreeMap<String, StorePath>,
    /// The input closure (what outputs may refer to, with the outputs).
    pub closure: &'a BTreeSet<StorePath>,
    /// The build's staging directory.
    pub staging: &'a Path,
    /// The host ids the builder ran as.
    pub builder: BuilderIds,
    /// Where the builder left each output.
    pub built_at: &'a dyn Fn(&StorePath) -> PathBuf,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Finishing<'_> {
    /// Each output checked, made canonical, hashed and scanned: where it is
    /// now and what is to be registered of it.
    pub fn process_outputs(
        &self,
        store: &mut LocalStore,
        pending: &mut Pending,
    ) -> Result<Vec<(PathBuf, PathInfo)>, BuildFailure> {
        let store_dir = store.layout().store_dir.clone();
        let mut seen = HashSet::new();
        for (name, path) in self.outputs {
            let at = (self.built_at)(path);
            check_root(
                &at,
                name,
                &store_dir.print(path),
                self.printed,
                self.builder,
            )?;
            // Then, before anything walks it by path: nobody holding a
            // descriptor into it (a fixed-output builder may pass one on
            // over the host's network) can swap a directory for a symlink.
            hermetic_store::tree::seal_tree(&at, hermetic_store::nar::MAX_DEPTH + 1)?;
            check_tree(&at, self.builder, &mut seen)?;
        }
        let candidates: Vec<StorePath> = self
            .closure
            .iter()
            .chain(self.outputs.values())
            .cloned()
            .collect();
        let owner = store.owner();
        let mut items = Vec::new();
        for (name, path) in self.outputs {
            let mut at = (self.built_at)(path);
            let mut ca = None;
            if let DerivationOutput::Fixed { method, hash, .. } = &self.drv.outputs[name] {
                // A fresh copy: descriptors the builder passed on reach only
                // the old inode (CVE-2024-27297).
                let fresh = self.staging.join(format!("fresh-{}", path.base_name()));
                copy_through_nar(&at, &fresh)?;
                at = fresh;
                canonicalise(&at, owner.0, owner.1)?;
                let got = fixed_output_hash(&at, &store_dir.print(path), *method, hash.algo())?;
                let got_ca = format!("fixed:{}{}", method.prefix(), got.to_prefixed_base32());
                if got != *hash {
                    return Err(
                        self.hash_mismatch(store, pending, path, &at, *method, hash, &got, got_ca)
                    );
                }
                ca = Some(got_ca);
            } else {
                canonicalise(&at, owner.0, owner.1)?;
            }
            let (nar_hash, nar_size, references) = hash_and_scan(&at, candidates.iter().cloned())?;
            if ca.is_some() && !references.is_empty() {
                let list: String = references
                    .iter()
                    .map(|r| format!("\n  {}", store_dir.print(r)))
                    .collect();
                return Err(BuildError::FixedOutputReferences {
                    drv: self.printed.to_owned(),
                    count: references.len(),
                    list,
                }
                .into());
            }
            items.push((
                at,
                PathInfo {
                    path: path.clone(),
                    nar_hash,
                    nar_size,
                    references,
                    deriver: Some(self.drv_path.clone()),
                    registration_time: now(),
                    ca,
                    sigs: Vec::new(),
                    ultimate: true,
                },
            ));
        }
        self.check_cycles(&items)?;
        let infos: Vec<PathInfo> = items.iter().map(|(_, info)| info.clone()).collect();
        crate::checks::check_outputs(store, self.attrs, self.outputs, &infos)?;
        Ok(items)
    }

    /// B88: what was built is registered at its own content address (the
    /// "got path"), so it can be inspected and used; the build fails.
    #[allow(clippy::too_many_arguments)]
    fn hash_mismatch(
        &self,
        store: &mut LocalStore,
        pending: &mut Pending,
        path: &StorePath,
        at: &Path,
        method: hermetic_store::IngestionMethod,
        specified: &hermetic_store::Hash,
        got: &hermetic_store::Hash,
        got_ca: String,
    ) -> BuildFailure {
        let store_dir = store.layout().store_dir.clone();
        let registered = (|| -> Result<StorePath, BuildError> {
            let got_path = store_dir.make_fixed_output_path(
                method,
                got,
                path.name(),
                &BTreeSet::new(),
                false,
            )?;
            let (nar_hash, nar_size, _) = hash_and_scan(at, [])?;
            let _lock = store.lock_paths(std::slice::from_ref(&got_path))?;
            if !store.is_valid(&got_path)? {
                let info = PathInfo {
                    path: got_path.clone(),
                    nar_hash,
                    nar_size,
                    references: BTreeSet::new(),
                    // Not the derivation's output, so not registered as
                    // built by it (Nix names the derivation here).
                    deriver: None,
                    registration_time: now(),
                    ca: Some(got_ca),
                    sigs: Vec::new(),
                    ultimate: true,
                };
                store.install_staged(pending, &[(at.to_owned(), info)])?;
            }
            Ok(got_path)
        })();
        let got_path = match registered {
            Ok(got_path) => got_path,
            Err(error) => return error.into(),
        };
        let url = self
            .attrs
            .string("urls")
            .or_else(|| self.attrs.string("url"))
            .unwrap_or_else(|| "(unknown)".into());
        fail(
            FailureKind::HashMismatch,
            BuildError::HashMismatch(Box::new(HashMismatch {
                drv: self.printed.to_owned(),
                url,
                specified: specified.to_sri(),
                got: got.to_sri(),
                expected_path: store_dir.print(path),
                got_path: store_dir.print(&got_path),
            })),
        )
    }

    /// B87: outputs that refer to each other in a cycle.
    fn check_cycles(&self, items: &[(PathBuf, PathInfo)]) -> Result<(), BuildError> {
        let name_of = |path: &StorePath| {
            self.outputs
                .iter()
                .find(|(_, p)| *p == path)
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        };
        for (_, a) in items {
            for (_, b) in items {
                if a.path != b.path
                    && a.references.contains(&b.path)
                    && b.references.contains(&a.path)
                {
                    return Err(BuildError::Cycle {
                        drv: self.printed.to_owned(),
                        output: name_of(&b.path),
                        from: name_of(&a.path),
                    });
                }
            }
        }
        Ok(())
    }

    /// `--check` (B89): the new outputs against the registered ones. A
    /// difference is moved to `<out>.check` with `keep-failed` or an active
    /// diff hook (which then runs); returns the lines of Lix's message, empty
    /// when all are the same.
    pub fn compare_with_registered(
        &self,
        store: &LocalStore,
        settings: &Settings,
        items: &[(PathBuf, PathInfo)],
        build_dir: &Path,
        warn: &mut dyn FnMut(String),
    ) -> Result<String, BuildError> {
        let layout = store.layout();
        let mut lines = String::new();
        for (at, info) in items {
            if store.query_info(&info.path)?.nar_hash == info.nar_hash {
                continue;
            }
            let printed = layout.store_dir.print(&info.path);
            lines.push_str(&format!(
                "\n  output differs: output '{printed}' differs from '{printed}.check'"
            ));
            let run_diff = settings.run_diff_hook && !settings.diff_hook.is_empty();
            if settings.keep_failed || run_diff {
                let existing = layout.real_path(&info.path);
                let check_path = PathBuf::from(format!("{}.check", existing.display()));
                remove_any(&check_path)?;
                fs::rename(at, &check_path).map_err(io_err("rename", &check_path))?;
                if run_diff {
                    let said = hooks::diff(
                        &settings.diff_hook,
                        &existing,
                        &check_path,
                        self.printed,
                        build_dir,
                    )?;
                    warn(said.trim_end().to_owned());
                }
            }
        }
        Ok(lines)
    }
}

/// After a failure: with `keep-failed`, the staging directory (build
/// directory, scratch space, outputs) moves to the store's kept directory
/// (outside the store directory, so that no collector deletes it) and is
/// reported (B82); otherwise everything goes.
pub fn keep_failed(
    settings: &Settings,
    layout: &StoreLayout,
    pending: Pending,
    drv_path: &StorePath,
    name: &str,
    warn: &mut dyn FnMut(String),
) {
    if !settings.keep_failed {
        if let Err(e) = pending.finish() {
            warn(format!("warning: {}", crate::error_chain(&e)));
        }
        return;
    }
    let (kept, error) = pending.keep_aside(&layout.state_dir, name);
    if let Some(e) = error {
        warn(format!(
            "warning: {}; a garbage collection may delete it",
            crate::error_chain(&e)
        ));
    }
    if kept.is_dir() {
        // As Nix does: the kept build directory is open to everyone (its
        // files as the builder left them), so that the user who asked for
        // it can look, through the daemon too.
        let _ = open_to_everyone(&kept, "build");
        warn(format!(
            "note: keeping build directory '{}'",
            kept.join("build").display()
        ));
        if KeptSandbox::find(&kept).is_ok() {
            let store = match layout.store_arg() {
                Some(root) => format!(" --store {}", shell_word(&root.to_string_lossy())),
                None => String::new(),
            };
            warn(format!(
                "note: to enter its sandbox as the build left it: sandbox-run{store} --drv {} --kept {} --shell",
                shell_word(&layout.store_dir.print(drv_path)),
                shell_word(&kept.to_string_lossy()),
            ));
        }
    }
}

/// A word as a POSIX shell reads it back: as it is when it is plain,
/// single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a failed build kept (`keep-failed`), to run in again: its build
/// directory and its sandbox's scratch directory (store writes, that is
/// the partial outputs, and `/tmp`).
#[derive(Debug, Clone)]
pub struct KeptSandbox {
    /// The build directory, `<kept>/build`.
    pub build_dir: PathBuf,
    /// The sandbox's scratch directory, `<kept>/.hermetic-*`.
    pub scratch: PathBuf,
}

impl KeptSandbox {
    /// Finds them in `kept`, the directory `keep_failed` named.
    pub fn find(kept: &Path) -> Result<KeptSandbox, BuildError> {
        let not_kept = || BuildError::NotKept(kept.display().to_string());
        let build_dir = kept.join("build");
        if !fs::symlink_metadata(&build_dir).is_ok_and(|m| m.is_dir()) {
            return Err(not_kept());
        }
        let mut scratches = fs::read_dir(kept)
            .map_err(|_| not_kept())?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".hermetic-"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        match (scratches.next(), scratches.next()) {
            (Some(scratch), None) => Ok(KeptSandbox {
                build_dir,
                scratch: scratch.path(),
            }),
            _ => Err(not_kept()),
        }
    }
}

/// Makes the directory `dir` and its directory `name` mode 0755, through
/// descriptors: a symlink put in the place of either is not followed.
fn open_to_everyone(dir: &Path, name: &str) -> nix::Result<()> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, fchmod};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let everyone = Mode::from_bits_truncate(0o755);
    let parent = open(dir, flags, Mode::empty())?;
    fchmod(&parent, everyone)?;
    let sub = openat(&parent, name, flags, Mode::empty())?;
    fchmod(&sub, everyone)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn shell_words_read_back_as_they_were() {
        assert_eq!(shell_word("/nix/store/abc-x.drv"), "/nix/store/abc-x.drv");
        assert_eq!(shell_word("/a b"), "'/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
