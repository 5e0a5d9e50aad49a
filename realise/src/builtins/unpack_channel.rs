//! `builtin:unpack-channel`: a channel's tarball (`src`, compressed or
//! not) unpacked into `out`, its one top directory renamed to
//! `channelName`, as `nix-channel --update` has Nix build it.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

/// Why the channel could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackChannelError {
    /// An attribute the builder needs is missing (Nix's text).
    #[error("attribute '{0}' missing")]
    MissingAttr(&'static str),
    /// The tarball holds more than its one directory (Nix's text).
    #[error("channel tarball '{0}' contains more than one file")]
    NotOneFile(String),
    /// Reading or unpacking failed.
    #[error("{0} '{1}': {2}")]
    Io(&'static str, PathBuf, std::io::Error),
}

/// Unpacks what the environment (`get`) describes.
pub fn run(get: &dyn Fn(&'static str) -> Option<String>) -> Result<(), UnpackChannelError> {
    let attr = |name: &'static str| get(name).ok_or(UnpackChannelError::MissingAttr(name));
    let out = PathBuf::from(attr("out")?);
    let channel_name = attr("channelName")?;
    let src = attr("src")?;
    let io = |op: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |e| UnpackChannelError::Io(op, path, e)
    };
    fs::create_dir_all(&out).map_err(io("creating directory", &out))?;
    let src_path = PathBuf::from(&src);
    let file = fs::File::open(&src_path).map_err(io("opening", &src_path))?;
    let mut file = BufReader::new(file);
    let method =
        hermetic_store::compression::sniff(file.fill_buf().map_err(io("reading", &src_path))?);
    let tarball = hermetic_store::compression::decompressor(method, file).map_err(|e| {
        UnpackChannelError::Io("reading", src_path.clone(), std::io::Error::other(e))
    })?;
    let mut archive = tar::Archive::new(tarball);
    archive.set_preserve_mtime(false);
    archive
        .unpack(&out)
        .map_err(io("unpacking the channel tarball", &src_path))?;
    let entries: Vec<_> = fs::read_dir(&out)
        .map_err(io("reading directory", &out))?
        .collect::<Result<_, _>>()
        .map_err(io("reading directory", &out))?;
    let [entry] = entries.as_slice() else {
        return Err(UnpackChannelError::NotOneFile(src));
    };
    let renamed = out.join(&channel_name);
    fs::rename(entry.path(), &renamed).map_err(io("renaming channel directory", &renamed))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;

    /// A bzip2-compressed tarball of `entries` (name, contents) in `dir`.
    fn tarball(dir: &std::path::Path, entries: &[(&str, &str)]) -> PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, contents) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, contents.as_bytes())
                .unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        let path = dir.join("nixexprs.tar.bz2");
        fs::write(&path, bz.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn the_one_top_directory_is_renamed_and_two_are_refused() {
        let dir = std::env::temp_dir().join(format!("unpack-channel-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = tarball(&dir, &[("nixexprs/default.nix", "{ }")]);
        let out = dir.join("out");
        let env: BTreeMap<&str, String> = [
            ("out", out.display().to_string()),
            ("src", src.display().to_string()),
            ("channelName", "nixpkgs".to_owned()),
        ]
        .into();
        run(&|name| env.get(name).cloned()).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("nixpkgs/default.nix")).unwrap(),
            "{ }"
        );

        let src = tarball(&dir, &[("a/x", "1"), ("b/y", "2")]);
        let out = dir.join("out2");
        let env: BTreeMap<&str, String> = [
            ("out", out.display().to_string()),
            ("src", src.display().to_string()),
            ("channelName", "nixpkgs".to_owned()),
        ]
        .into();
        let error = run(&|name| env.get(name).cloned()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "channel tarball '{}' contains more than one file",
                src.display()
            )
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
