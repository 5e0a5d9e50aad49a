//! A kernel ready to boot: its uncompressed `vmlinux` (which QEMU starts
//! directly, skipping the bzImage's own decompression under emulation) and
//! the modules the guest loads, unpacked from Debian's packages into the
//! cache and kept there between runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::apt::ScratchApt;
use crate::catalog::KernelSource;

/// The modules the tests need, with whatever they depend on: overlay (the
/// store's overlay tests), veth (network tests), tun (pasta).
pub const GUEST_MODULES: [&str; 3] = ["overlay", "veth", "tun"];

/// A kernel in the cache.
pub struct Kernel {
    /// Its name in `vm-tests/kernels`.
    pub name: String,
    /// The uncompressed kernel image.
    pub vmlinux: PathBuf,
    /// The directory of its modules: `<name>.ko` files and `order`, the
    /// load order.
    pub modules: PathBuf,
    /// The packages it came from (`name=version`, one per line).
    pub packages: String,
}

impl Kernel {
    fn at(name: &str, dir: &Path) -> Option<Kernel> {
        let kernel = Kernel {
            name: name.to_string(),
            vmlinux: dir.join("vmlinux"),
            modules: dir.join("modules"),
            packages: std::fs::read_to_string(dir.join("packages")).ok()?,
        };
        (kernel.vmlinux.exists() && kernel.modules.join("order").exists()).then_some(kernel)
    }
}

/// The kernel `source` from the cache, fetched and unpacked if missing (or
/// if `refresh` asks for the newest again).
pub fn fetch(source: &KernelSource, cache: &Path, refresh: bool) -> Result<Kernel> {
    let dir = cache.join("kernels").join(&source.name);
    if !refresh && let Some(kernel) = Kernel::at(&source.name, &dir) {
        return Ok(kernel);
    }
    let apt = ScratchApt::new(cache, &source.suite)?;
    eprintln!(
        "vm-tests: fetching kernel {} from {}",
        source.name, source.suite
    );
    apt.update()?;
    let picked = apt.newest(&source.package, &source.version)?;
    let mut packages = vec![format!("{}={}", picked.package, picked.version)];
    for companion in &source.companions {
        packages.push(format!(
            "{}={}",
            companion.replace('*', &picked.star),
            picked.version
        ));
    }
    let work = cache
        .join("kernels")
        .join(format!(".{}-unpack", source.name));
    let _ = std::fs::remove_dir_all(&work);
    let debs = apt.download(&packages, &work.join("debs"))?;
    let tree = work.join("tree");
    for deb in &debs {
        let status = Command::new("dpkg")
            .arg("-x")
            .arg(deb)
            .arg(&tree)
            .status()
            .context("running dpkg -x")?;
        if !status.success() {
            bail!("dpkg -x {} failed: {status}", deb.display());
        }
    }
    let staged = cache.join("kernels").join(format!(".{}-new", source.name));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(staged.join("modules"))?;
    let (vmlinuz, modules_dir) = locate(&tree)?;
    extract_vmlinux(&vmlinuz, &staged.join("vmlinux"))?;
    collect_modules(&modules_dir, &staged.join("modules"))?;
    std::fs::write(staged.join("packages"), packages.join("\n") + "\n")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staged, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    std::fs::remove_dir_all(&work)?;
    Kernel::at(&source.name, &dir).context("the unpacked kernel is incomplete")
}

/// The packed kernel image and the modules directory of an unpacked tree
/// (`boot/vmlinuz-*` and `lib/modules/<release>`, or both under
/// `usr/lib/modules/<release>` as trixie's packages have them).
fn locate(tree: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut modules = None;
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(entries) = std::fs::read_dir(tree.join(base)) {
            modules = entries.filter_map(|e| e.ok()).map(|e| e.path()).next();
        }
        if modules.is_some() {
            break;
        }
    }
    let modules = modules.context("the packages hold no lib/modules/<release>")?;
    let release = modules.file_name().unwrap().to_string_lossy().into_owned();
    let vmlinuz = [
        tree.join("boot").join(format!("vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("the packages hold no vmlinuz for {release}"))?;
    Ok((vmlinuz, modules))
}

/// The compressed payloads a bzImage may carry: magic and decompressor.
const PAYLOADS: [(&[u8], &str); 3] = [
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b\x08", "gzip"),
];

/// Writes the ELF kernel inside bzImage `vmlinuz` to `out`: the first
/// compressed payload whose decompression starts with an ELF header.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    for (magic, tool) in PAYLOADS {
        for offset in find_all(&image, magic) {
            let Ok(elf) = decompress(tool, &image[offset..]) else {
                continue;
            };
            if elf.starts_with(b"\x7fELF") {
                std::fs::write(out, elf)?;
                return Ok(());
            }
        }
    }
    bail!(
        "found no xz, zstd or gzip payload holding an ELF kernel in {}",
        vmlinuz.display()
    )
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Decompresses `data` with `tool -dc`, ignoring trailing garbage (the
/// bzImage goes on after its payload): whatever came out counts.
fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {tool} (apt-get install {tool})"))?;
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(output.stdout)
}

/// Copies [`GUEST_MODULES`] and the modules they depend on, decompressed,
/// into `out`, with `order` listing them dependencies first. Packages ship
/// no `modules.dep` (depmod makes it on install), so each module's
/// dependencies come from its own `.modinfo` (`depends=`). A module built
/// into the kernel is not there and needs nothing.
fn collect_modules(modules_dir: &Path, out: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    index_modules(modules_dir, &mut files)?;
    let mut order = Vec::new();
    let mut loaded = BTreeMap::new();
    let mut wanted: Vec<(String, bool)> = GUEST_MODULES
        .iter()
        .rev()
        .map(|m| (m.to_string(), false))
        .collect();
    // Depth first: a module is written once all it depends on is.
    while let Some((name, expanded)) = wanted.pop() {
        if loaded.contains_key(&name) {
            continue;
        }
        let Some(path) = files.get(&name) else {
            continue; // built in
        };
        if expanded {
            loaded.insert(name.clone(), ());
            order.push(name);
            continue;
        }
        let bytes = read_module(path)?;
        std::fs::write(out.join(format!("{name}.ko")), &bytes)?;
        wanted.push((name, true));
        for dep in dependencies(&bytes).into_iter().rev() {
            wanted.push((dep, false));
        }
    }
    std::fs::write(out.join("order"), order.join("\n") + "\n")?;
    Ok(())
}

/// Module name (`-` read as `_`, as the kernel does) to file, for every
/// `*.ko*` under `dir`.
fn index_modules(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index_modules(&path, files)?;
        } else if let Some(name) = module_name(&path.file_name().unwrap().to_string_lossy()) {
            files.insert(name, path);
        }
    }
    Ok(())
}

fn module_name(file: &str) -> Option<String> {
    let (name, _) = file.split_once(".ko")?;
    Some(name.replace('-', "_"))
}

/// A module file's bytes, decompressed as its name says.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => decompress("xz", &raw)?,
        Some("zst") => decompress("zstd", &raw)?,
        Some("gz") => decompress("gzip", &raw)?,
        _ => raw,
    };
    if !bytes.starts_with(b"\x7fELF") {
        bail!("{} is not a module (or did not decompress)", path.display());
    }
    Ok(bytes)
}

/// The `depends=` of a module's `.modinfo`.
fn dependencies(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = find_all(module, key).next() else {
        return Vec::new();
    };
    let value = &module[at + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_named_as_the_kernel_names_them() {
        assert_eq!(module_name("overlay.ko.xz").unwrap(), "overlay");
        assert_eq!(module_name("nf-nat.ko").unwrap(), "nf_nat");
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn dependencies_come_from_modinfo() {
        let module = b"\x7fELF...\0license=GPL\0depends=nf_conntrack,libcrc32c\0name=x\0";
        assert_eq!(dependencies(module), ["nf_conntrack", "libcrc32c"]);
        assert!(dependencies(b"\0depends=\0name=veth\0").is_empty());
    }
}
