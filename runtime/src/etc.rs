//! The files of the sandbox's `/etc` (SPEC B34, B35), Nix's texts exactly.

use std::path::Path;

/// `/etc/passwd`: root, the build user and nobody, homes in the build dir.
pub fn passwd(uid: u32, gid: u32, sandbox_build_dir: &Path) -> String {
    let home = sandbox_build_dir.display();
    format!(
        "root:x:0:0:Nix build user:{home}:/noshell\n\
         nixbld:x:{uid}:{gid}:Nix build user:{home}:/noshell\n\
         nobody:x:65534:65534:Nobody:/:/noshell\n"
    )
}

/// `/etc/group`: root, the build group and nogroup.
pub fn group(gid: u32) -> String {
    format!("root:x:0:\nnixbld:!:{gid}:\nnogroup:x:65534:\n")
}

/// `/etc/hosts` of a sandbox with only loopback networking.
pub const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_nix_s() {
        assert_eq!(
            passwd(1000, 100, Path::new("/build")),
            "root:x:0:0:Nix build user:/build:/noshell\n\
             nixbld:x:1000:100:Nix build user:/build:/noshell\n\
             nobody:x:65534:65534:Nobody:/:/noshell\n"
        );
        assert_eq!(group(100), "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n");
    }
}
