//! Debian's packages through a scratch apt configuration: one directory per
//! suite under the cache, holding its own sources, lists and empty status,
//! so that the host's apt state is never read or changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::catalog::{glob_matches, package_capture};

/// One suite's scratch apt state.
pub struct ScratchApt {
    root: PathBuf,
}

/// A package picked for download.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The package's name.
    pub package: String,
    /// Its version.
    pub version: String,
    /// What the `*` of the pattern stood for.
    pub star: String,
}

/// The archive that serves `suite`: security updates live apart.
fn archive_of(suite: &str) -> &'static str {
    if suite.ends_with("-security") {
        "http://deb.debian.org/debian-security"
    } else {
        "http://deb.debian.org/debian"
    }
}

impl ScratchApt {
    /// The scratch state for `suite` under `cache`, created if missing.
    pub fn new(cache: &Path, suite: &str) -> Result<ScratchApt> {
        let root = cache.join("apt").join(suite);
        for dir in ["lists/partial", "archives/partial", "parts"] {
            std::fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let sources = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {suite} main\n",
            archive_of(suite)
        );
        std::fs::write(root.join("sources.list"), sources)?;
        std::fs::write(root.join("status"), "")?;
        Ok(ScratchApt { root })
    }

    fn command(&self, program: &str) -> Command {
        let root = &self.root;
        let mut command = Command::new(program);
        for (option, value) in [
            ("Dir::Etc::SourceList", root.join("sources.list")),
            ("Dir::Etc::SourceParts", root.join("parts")),
            ("Dir::Etc::Preferences", root.join("preferences")),
            ("Dir::Etc::PreferencesParts", root.join("parts")),
            ("Dir::State", root.clone()),
            ("Dir::State::Lists", root.join("lists")),
            ("Dir::State::status", root.join("status")),
            ("Dir::Cache", root.clone()),
            ("Dir::Cache::Archives", root.join("archives")),
        ] {
            command
                .arg("-o")
                .arg(format!("{option}={}", value.display()));
        }
        command.args([
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Architectures=amd64",
        ]);
        // Downloads land in directories _apt cannot write; root fetches them.
        command.args(["-o", "APT::Sandbox::User=root", "-q"]);
        command
    }

    fn run(&self, mut command: Command, what: &str) -> Result<String> {
        let output = command
            .output()
            .with_context(|| format!("{what}: cannot run apt (is this Debian?)"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Fetches the suite's package lists.
    pub fn update(&self) -> Result<()> {
        let mut command = self.command("apt-get");
        command.arg("update");
        self.run(command, "apt-get update").map(drop)
    }

    /// The newest package whose name matches `package` and whose version
    /// matches `version`.
    pub fn newest(&self, package: &str, version: &str) -> Result<Picked> {
        let mut names = self.command("apt-cache");
        names.arg("pkgnames");
        let names = self.run(names, "apt-cache pkgnames")?;
        let matching: Vec<&str> = names
            .lines()
            .filter(|n| package_capture(package, n).is_some())
            .collect();
        if matching.is_empty() {
            bail!("no package matches {package}");
        }
        let mut show = self.command("apt-cache");
        show.arg("show").args(&matching);
        let stanzas = self.run(show, "apt-cache show")?;
        let mut best: Option<Picked> = None;
        for stanza in stanzas.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim).map(String::from))
            };
            let (Some(name), Some(found)) = (field("Package:"), field("Version:")) else {
                continue;
            };
            if !glob_matches(version, &found) {
                continue;
            }
            if best.as_ref().is_none_or(|b| newer(&found, &b.version)) {
                let star = package_capture(package, &name).unwrap_or_default();
                best = Some(Picked {
                    package: name,
                    version: found,
                    star,
                });
            }
        }
        best.with_context(|| format!("no version of {package} matches {version}"))
    }

    /// Downloads `packages` (`name=version`) into `into`; returns the files.
    pub fn download(&self, packages: &[String], into: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(into)?;
        let before = debs(into)?;
        let mut command = self.command("apt-get");
        command.arg("download").args(packages).current_dir(into);
        self.run(command, &format!("apt-get download {}", packages.join(" ")))?;
        let mut fetched: Vec<PathBuf> = debs(into)?
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect();
        fetched.sort();
        Ok(fetched)
    }
}

fn debs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect())
}

/// Whether Debian version `a` is newer than `b` (`dpkg --compare-versions`).
fn newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}
