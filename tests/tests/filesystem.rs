//! The sandbox's filesystem (SPEC B33–B49, D11), seen from inside.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use hermetic_runtime::SandboxPath;
use hermetic_tests::{TestStore, probe, probe_spec, root_or_skip, run, run_kept};

#[test]
fn root_holds_only_the_sandbox_directories() {
    if !root_or_skip("root_holds_only_the_sandbox_directories") {
        return;
    }
    // B48: nothing else of the host; B46: no /sys.
    let p = probe("echo root=$(ls -a / | tr '\\n' ' '); echo cwd=$(pwd); echo bin=$(ls /bin)");
    assert_eq!(p.get("root").trim(), ". .. bin build dev etc nix proc tmp");
    assert_eq!(
        p.get("cwd"),
        "/build",
        "B41: the build directory is the cwd"
    );
    assert_eq!(p.get("bin"), "sh", "B47: /bin/sh and nothing else");
}

#[test]
fn modes_of_tmp_etc_and_the_store_directory() {
    if !root_or_skip("modes_of_tmp_etc_and_the_store_directory") {
        return;
    }
    let p = probe(
        "echo tmp=$(stat -c %a /tmp); echo etc=$(stat -c %a /etc); \
         echo store=$(stat -c %a:%U:%G /nix/store); echo root=$(stat -c %a:%G /)",
    );
    assert_eq!(p.get("tmp"), "1777", "B33");
    assert_eq!(p.get("etc"), "555", "B37");
    assert_eq!(
        p.get("store"),
        "1775:nobody:nixbld",
        "B38: root:<build gid>, 1775"
    );
    assert_eq!(
        p.get("root"),
        "750:nixbld",
        "B32: root 0750 root:<build gid>"
    );
}

#[test]
fn tmp_is_on_the_build_directory_s_filesystem_not_a_tmpfs_of_its_own() {
    let test = "tmp_is_on_the_build_directory_s_filesystem_not_a_tmpfs_of_its_own";
    if !root_or_skip(test) {
        return;
    }
    // B33: a directory on the host's filesystem, where /build lives too
    // (a disk here; a tmpfs only where the host's own temporary directory
    // is one, as in vm-tests' guests), not a tmpfs of the sandbox's own.
    let p = probe("echo tmp=$(stat -c %d /tmp); echo build=$(stat -c %d /build)");
    assert_eq!(
        p.get("tmp"),
        p.get("build"),
        "B33: /tmp is not on the build directory's filesystem"
    );
    let host_tmp = std::fs::metadata(std::env::temp_dir()).unwrap();
    assert_eq!(
        p.get("tmp"),
        host_tmp.dev().to_string(),
        "B33: {}",
        p.output
    );
}

#[test]
fn etc_files_are_nix_s_exact_texts() {
    if !root_or_skip("etc_files_are_nix_s_exact_texts") {
        return;
    }
    let p = probe("cat /etc/passwd /etc/group /etc/hosts; echo ls=$(ls /etc | tr '\\n' ' ')");
    let expected = "root:x:0:0:Nix build user:/build:/noshell\n\
                    nixbld:x:1000:100:Nix build user:/build:/noshell\n\
                    nobody:x:65534:65534:Nobody:/:/noshell\n\
                    root:x:0:\n\
                    nixbld:!:100:\n\
                    nogroup:x:65534:\n\
                    127.0.0.1 localhost\n\
                    ::1 localhost\n";
    assert!(p.output.starts_with(expected), "got:\n{}", p.output);
    assert_eq!(p.get("ls").trim(), "group hosts passwd");
}

#[test]
fn passwd_follows_the_sandbox_build_dir() {
    if !root_or_skip("passwd_follows_the_sandbox_build_dir") {
        return;
    }
    let mut spec = probe_spec("grep nixbld /etc/passwd; echo cwd=$(pwd)");
    spec.sandbox_build_dir = PathBuf::from("/var/build");
    let p = run(&spec).unwrap();
    assert!(
        p.output
            .contains("nixbld:x:1000:100:Nix build user:/var/build:/noshell")
    );
    assert_eq!(p.get("cwd"), "/var/build");
}

#[test]
fn inputs_appear_at_their_own_paths() {
    if !root_or_skip("inputs_appear_at_their_own_paths") {
        return;
    }
    // B39: directories bound, regular files bound onto an empty file,
    // symlinks recreated (target copied, not followed).
    let store = TestStore::new("inputs");
    let dir = store.add_dir("aaaa-dir", "data", "in a directory");
    store.add_file("bbbb-file", "a regular file");
    let link = store.add_symlink("cccc-link", "/nix/store/aaaa-dir/data");
    store.add_dir("dddd-not-an-input", "x", "hidden");
    // Inputs may be named under the logical or the real store directory.
    let inputs = vec![dir, PathBuf::from("/nix/store/bbbb-file"), link];
    let spec = store.spec(
        "echo dir=$(cat /nix/store/aaaa-dir/data); echo file=$(cat /nix/store/bbbb-file); \
         echo link=$(readlink /nix/store/cccc-link); echo via=$(cat /nix/store/cccc-link); \
         echo ls=$(ls /nix/store | tr '\\n' ' ')",
        inputs,
    );
    let p = run(&spec).unwrap();
    assert_eq!(p.get("dir"), "in a directory");
    assert_eq!(p.get("file"), "a regular file");
    assert_eq!(p.get("link"), "/nix/store/aaaa-dir/data");
    assert_eq!(p.get("via"), "in a directory");
    assert_eq!(
        p.get("ls").trim(),
        "aaaa-dir bbbb-file cccc-link",
        "only the inputs"
    );
}

#[test]
fn dev_holds_nix_s_nodes_and_links() {
    if !root_or_skip("dev_holds_nix_s_nodes_and_links") {
        return;
    }
    let p = probe(
        "echo ls=$(ls /dev | tr '\\n' ' '); for l in fd stdin stdout stderr ptmx; do echo $l=$(readlink /dev/$l); done; \
         echo null=$(stat -c %t,%T /dev/null); echo zero=$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' '); \
         echo pts=$(grep ' /dev/pts ' /proc/mounts | cut -d' ' -f4); echo ptmx_mode=$(stat -c %a /dev/pts/ptmx)",
    );
    // B42 (kvm only when asked), B44.
    assert_eq!(
        p.get("ls").trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    assert_eq!(p.get("fd"), "/proc/self/fd");
    assert_eq!(p.get("stdin"), "/proc/self/fd/0");
    assert_eq!(p.get("stdout"), "/proc/self/fd/1");
    assert_eq!(p.get("stderr"), "/proc/self/fd/2");
    assert_eq!(p.get("ptmx"), "pts/ptmx");
    assert_eq!(p.get("ptmx_mode"), "666");
    assert_eq!(p.get("null"), "1,3");
    assert_eq!(p.get("zero"), "00000000");
    let pts = p.get("pts");
    assert!(
        pts.contains("mode=620") && pts.contains("ptmxmode=666"),
        "{pts}"
    );
}

#[test]
fn ptys_open_inside_the_new_devpts() {
    if !root_or_skip("ptys_open_inside_the_new_devpts") {
        return;
    }
    // A devpts with newinstance: a pty opened inside is numbered in the
    // sandbox's own instance, starting at 0.
    let p = probe("exec 3<>/dev/ptmx && echo opened=yes; echo pts=$(ls /dev/pts | tr '\\n' ' ')");
    assert_eq!(p.get("opened"), "yes");
    assert_eq!(p.get("pts").trim(), "0 ptmx");
}

#[test]
fn dev_shm_is_a_tmpfs_of_the_given_size() {
    if !root_or_skip("dev_shm_is_a_tmpfs_of_the_given_size") {
        return;
    }
    let mut spec = probe_spec("echo shm=$(grep ' /dev/shm ' /proc/mounts)");
    spec.sandbox_dev_shm_size = "8M".into();
    let p = run(&spec).unwrap();
    let shm = p.get("shm");
    assert!(
        shm.starts_with("tmpfs /dev/shm tmpfs") && shm.contains("size=8192k"),
        "B43: {shm}"
    );
}

#[test]
fn kvm_appears_only_when_asked_and_present() {
    if !root_or_skip("kvm_appears_only_when_asked_and_present") {
        return;
    }
    let script = "[ -c /dev/kvm ] && echo kvm=yes || echo kvm=no";
    assert_eq!(probe(script).get("kvm"), "no");
    let mut spec = probe_spec(script);
    spec.kvm = true;
    let expected = if std::path::Path::new("/dev/kvm").exists() {
        "yes"
    } else {
        "no"
    };
    assert_eq!(run(&spec).unwrap().get("kvm"), expected, "B42");
}

#[test]
fn proc_is_fresh_and_shows_only_the_sandbox() {
    if !root_or_skip("proc_is_fresh_and_shows_only_the_sandbox") {
        return;
    }
    let p = probe(
        "echo pids=$(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); echo cmd=$(tr '\\0' ' ' < /proc/1/cmdline)",
    );
    // PID 1 is the shell; the others are the subshell and pipeline that list
    // them. The host's hundreds of processes are not there.
    let pids: Vec<u32> = p
        .get("pids")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(pids[0], 1);
    assert!(
        pids.len() <= 6 && pids.iter().all(|&pid| pid < 10),
        "only the sandbox's processes: {pids:?}"
    );
    assert!(
        p.get("cmd").starts_with("sh -c "),
        "B17: PID 1 is the builder"
    );
}

#[test]
fn sandbox_paths_bind_host_paths_in_nix_syntax() {
    if !root_or_skip("sandbox_paths_bind_host_paths_in_nix_syntax") {
        return;
    }
    let host = hermetic_tests::TempDir::new("sandbox-paths");
    std::fs::write(host.path.join("f"), "host file").unwrap();
    std::fs::create_dir(host.path.join("d")).unwrap();
    std::fs::write(host.path.join("d/inner"), "in dir").unwrap();
    let mut spec = probe_spec(
        "echo same=$(cat $HOSTDIR/f); echo renamed=$(cat /opt/file); echo dir=$(cat /data/inner); \
         [ -e /missing ] && echo optional=present || echo optional=absent",
    );
    spec.env
        .insert("HOSTDIR".into(), host.path.display().to_string());
    for token in [
        format!("{}", host.path.join("f").display()),
        format!("/opt/file={}", host.path.join("f").display()),
        format!("/data={}", host.path.join("d").display()),
        "/missing=/does/not/exist?".to_string(),
    ] {
        spec.sandbox_paths
            .push(token.parse::<SandboxPath>().unwrap());
    }
    let p = run(&spec).unwrap();
    assert_eq!(p.get("same"), "host file");
    assert_eq!(p.get("renamed"), "host file");
    assert_eq!(p.get("dir"), "in dir");
    assert_eq!(
        p.get("optional"),
        "absent",
        "B50: a trailing ? skips a missing source"
    );
}

#[test]
fn store_writes_land_on_the_real_store_filesystem() {
    if !root_or_skip("store_writes_land_on_the_real_store_filesystem") {
        return;
    }
    // D11: what the builder writes to the store directory is on the real
    // store's filesystem (to be renamed into the store, never copied).
    let store = TestStore::new("outputs");
    let input = store.add_dir("aaaa-input", "f", "x");
    let spec = store.spec(
        "mkdir /nix/store/zzzz-out && echo built > /nix/store/zzzz-out/result && echo done=yes",
        vec![input],
    );
    let (_, kept) = run_kept(&spec);
    let result = kept.store.as_ref().unwrap().join("zzzz-out/result");
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "built\n");
    assert_eq!(std::fs::metadata(&result).unwrap().dev(), store.device());
    assert!(
        kept.dir.starts_with(&store.dir),
        "the scratch directory is in the store directory"
    );
    kept.remove().unwrap();
}
