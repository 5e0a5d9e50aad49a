//! `builtin:fetchurl` through the daemon, driven by Debian's Nix 2.8 with
//! `<nix/fetchurl.nix>` as nixpkgs' bootstrap uses it: downloads over
//! HTTP from a real server on loopback (busybox's httpd) inside the
//! build's sandbox, flat, executable and unpacked from an xz-compressed
//! NAR; hashed mirrors; and the failures in Nix's words.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::daemon::{Daemon, as_user, output_text as text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TempDir, busybox, root_or_skip};

/// busybox's httpd serving a directory on a free loopback port.
struct Server {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Server {
    fn start(label: &str) -> Server {
        let dir = TempDir::new(label);
        hermetic_tests::set_mode(&dir.path, 0o755);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(busybox())
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(&dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "httpd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port, dir }
    }

    /// Serves `contents` at `/<name>`; its URL.
    fn serve(&self, name: &str, contents: &[u8]) -> String {
        let file = self.dir.path.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, contents).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        self.url(name)
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Option<NixPeer> {
    NixPeer::or_skip("builtin_fetchurl", "substituters =\n")
}

/// `nix-build` of `import <nix/fetchurl.nix> { ARGS }` through the daemon.
fn fetch(nix: &NixPeer, daemon: &Daemon, label: &str, args: &str) -> Output {
    let file = daemon.write_expr(label, &format!("import <nix/fetchurl.nix> {{ {args} }}"));
    as_user(
        nix,
        "root",
        "nix-build",
        &[
            "--store",
            &daemon.url(),
            file.to_str().unwrap(),
            "--no-out-link",
        ],
    )
}

/// As [`fetch`], which must succeed: the output's real path.
fn fetched(nix: &NixPeer, daemon: &Daemon, label: &str, args: &str) -> std::path::PathBuf {
    let out = fetch(nix, daemon, label, args);
    assert!(out.status.success(), "{}", text(&out));
    daemon.real(String::from_utf8(out.stdout).unwrap().trim())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sha256_hex(nix: &NixPeer, file: &Path) -> String {
    nix.run(
        "nix-hash",
        &["--type", "sha256", "--flat", file.to_str().unwrap()],
    )
    .trim()
    .to_owned()
}

#[test]
fn fetchurl_downloads_over_http_in_the_sandbox_flat_executable_and_unpacked() {
    if !root_or_skip("fetchurl_downloads_over_http_in_the_sandbox_flat_executable_and_unpacked") {
        return;
    }
    let Some(nix) = client() else { return };
    let server = Server::start("fetchurl-server");
    let daemon = Daemon::start("daemon-fetchurl", "");
    let body = b"#!/bin/sh\necho fetched\n".repeat(1000);
    let url = server.serve("tool.sh", &body);
    let hash = sha256_hex(&nix, &server.dir.path.join("tool.sh"));

    let real = fetched(
        &nix,
        &daemon,
        "flat",
        &format!(r#"url = "{url}"; sha256 = "{hash}";"#),
    );
    assert_eq!(std::fs::read(&real).unwrap(), body);
    assert_eq!(mode(&real) & 0o111, 0);

    // executable: the same bytes, recursive hashing, mode 0555.
    // Its hash is the NAR hash of an executable file of those bytes.
    let exe = server.dir.path.join("exe/tool.sh");
    server.serve("exe/tool.sh", &body);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe_hash = nix
        .run("nix-hash", &["--type", "sha256", exe.to_str().unwrap()])
        .trim()
        .to_owned();
    let real = fetched(
        &nix,
        &daemon,
        "executable",
        &format!(r#"url = "{url}"; sha256 = "{exe_hash}"; executable = true;"#),
    );
    assert_eq!(std::fs::read(&real).unwrap(), body);
    assert_eq!(mode(&real), 0o555);

    // unpack: a NAR of a directory, xz-compressed, restored at the output.
    let tree = server.dir.path.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run", tree.join("link")).unwrap();
    let nar = nix
        .command("nix-store")
        .arg("--dump")
        .arg(&tree)
        .output()
        .unwrap();
    assert!(nar.status.success(), "{}", text(&nar));
    let tree_hash = nix
        .run("nix-hash", &["--type", "sha256", tree.to_str().unwrap()])
        .trim()
        .to_owned();
    server.serve("tree.nar", &nar.stdout);
    let xz = Command::new("xz")
        .arg("--keep")
        .arg(server.dir.path.join("tree.nar"))
        .status()
        .unwrap();
    assert!(xz.success());
    let real = fetched(
        &nix,
        &daemon,
        "unpack",
        &format!(
            r#"url = "{}"; sha256 = "{tree_hash}"; unpack = true; name = "xyzzy";"#,
            server.url("tree.nar.xz")
        ),
    );
    assert!(real.display().to_string().ends_with("-xyzzy"), "{real:?}");
    assert_eq!(
        std::fs::read_link(real.join("link")).unwrap(),
        Path::new("run")
    );
    assert_eq!(mode(&real.join("run")), 0o555);
}

#[test]
fn fetchurl_tries_hashed_mirrors_first_and_says_why_a_download_failed() {
    if !root_or_skip("fetchurl_tries_hashed_mirrors_first_and_says_why_a_download_failed") {
        return;
    }
    let Some(nix) = client() else { return };
    let server = Server::start("fetchurl-mirror");
    let daemon = Daemon::start(
        "daemon-fetchurl-mirror",
        &format!("hashed-mirrors = {}", server.url("mirror")),
    );
    let body = b"found by its hash\n";
    server.serve("original", body);
    let hash = sha256_hex(&nix, &server.dir.path.join("original"));
    std::fs::remove_file(server.dir.path.join("original")).unwrap();
    server.serve(&format!("mirror/sha256/{hash}"), body);

    // The URL is gone; the mirror has the file under its hash.
    let gone = server.url("original");
    let real = fetched(
        &nix,
        &daemon,
        "mirrored",
        &format!(r#"url = "{gone}"; sha256 = "{hash}";"#),
    );
    assert_eq!(std::fs::read(real).unwrap(), body);

    // No mirror has this one and its URL is gone: the status in Nix's
    // sentence, and nothing left in the store.
    let other = "0".repeat(64);
    let out = fetch(
        &nix,
        &daemon,
        "missing",
        &format!(r#"url = "{gone}"; sha256 = "{other}";"#),
    );
    assert!(!out.status.success());
    let said = text(&out);
    // The builder's line, and again in the last lines the error ends
    // with, as through Nix's daemon; the failure itself once.
    let expected = format!("error: unable to download '{gone}': HTTP error 404 ('Not Found')");
    assert!(said.lines().any(|l| l == expected), "{said}");
    assert_eq!(said.matches("failed with exit code 1").count(), 1, "{said}");

    // Served, but not what the hash says: Nix's hash mismatch.
    let url = server.serve("wrong", b"not the expected bytes\n");
    let out = fetch(
        &nix,
        &daemon,
        "mismatch",
        &format!(r#"url = "{url}"; sha256 = "{other}";"#),
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("hash mismatch in fixed-output derivation"),
        "{said}"
    );
    let store = daemon.root().join("nix/store");
    let names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The failed download left nothing; the mismatched one is kept at
    // the path of what it holds, as Nix keeps it.
    let originals = names.iter().filter(|n| n.ends_with("-original")).count();
    assert_eq!(originals, 1, "{names:?}");
    let wrong: Vec<&String> = names.iter().filter(|n| n.ends_with("-wrong")).collect();
    assert_eq!(wrong.len(), 1, "{names:?}");
    assert_eq!(
        std::fs::read(store.join(wrong[0])).unwrap(),
        b"not the expected bytes\n"
    );
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn fetchurl_logs_in_with_the_netrc_file() {
    use hermetic_tests::http_server::HttpServer;
    if !root_or_skip("fetchurl_logs_in_with_the_netrc_file") {
        return;
    }
    let Some(nix) = client() else { return };
    let files = TempDir::new("fetchurl-netrc-files");
    let body = b"behind a login\n";
    std::fs::write(files.path.join("secret"), body).unwrap();
    let hash = sha256_hex(&nix, &files.path.join("secret"));
    let server = HttpServer::serve(&files.path);
    server.require_login("alice", "s3cret");
    let url = server.url("secret");
    let args = format!(r#"url = "{url}"; sha256 = "{hash}";"#);

    // Without credentials: the server's refusal, in Nix's sentence.
    let daemon = Daemon::start("daemon-fetchurl-no-netrc", "");
    let out = fetch(&nix, &daemon, "refused", &args);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains(&format!(
            "unable to download '{url}': HTTP error 401 ('Unauthorized')"
        )),
        "{said}"
    );
    // The daemon's netrc-file, readable only by root, reaches the builtin
    // that runs as a build user.
    let conf = TempDir::new("fetchurl-netrc-conf");
    let netrc = conf.path.join("netrc");
    std::fs::write(
        &netrc,
        "machine 127.0.0.1\n  login alice\n  password s3cret\n",
    )
    .unwrap();
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = Daemon::start(
        "daemon-fetchurl-netrc",
        &format!("netrc-file = {}", netrc.display()),
    );
    let real = fetched(&nix, &daemon, "logged-in", &args);
    assert_eq!(std::fs::read(real).unwrap(), body);
}
