//! A binary cache made by stock Nix 2.8 (`nix copy --to file://…`,
//! signed with a key from `nix-store --generate-binary-cache-key`), for
//! the tests of copying and substitution.

use std::path::Path;

use crate::TempDir;
use crate::http_server::HttpServer;
use crate::nix_peer::NixPeer;

/// A cache made by stock Nix: a content-addressed source and an
/// input-addressed output that refers to it, both signed by `test-1`.
pub struct NixCache {
    /// Where the cache (`cache/`), Nix's store (`nix-root/`), the keys
    /// (`sk`, `pk`) and the expression (`d.nix`) are.
    pub dir: TempDir,
    /// The Nix that made it.
    pub nix: NixPeer,
    /// The content-addressed source.
    pub source: String,
    /// The built path that refers to `source`.
    pub built: String,
    /// The derivation that built it (in the cache too, with its sources).
    pub drv: String,
}

impl NixCache {
    /// Makes the cache with the Nix 2.8 on this host; `None` (the test
    /// skipped) without one.
    pub fn make() -> Option<NixCache> {
        Self::of(
            r#"let t = builtins.toFile "t" "ref ${./f1}"; in
               derivation { name = "ia"; system = "x86_64-linux"; builder = "/bin/sh";
                 args = ["-c" "echo built > $out; read x < ${t}; echo $x >> $out"]; }"#,
        )
    }

    /// A cache whose `built` refers to `n` text files (`builtins.toFile`),
    /// a closure of `n + 1` paths; `source` is one of the files.
    pub fn wide(n: usize) -> Option<NixCache> {
        Self::of(&format!(
            r#"let files = builtins.genList (i: builtins.toFile "w${{toString i}}" "file ${{toString i}}\n") {n}; in
               derivation {{ name = "wide"; system = "x86_64-linux"; builder = "/bin/sh";
                 args = ["-c" "echo ${{toString files}} > $out"]; }}"#
        ))
    }

    /// A cache of what `expr` (a derivation; `./f1` is a file beside it)
    /// builds.
    fn of(expr: &str) -> Option<NixCache> {
        let dir = TempDir::new("nix-cache");
        let nix = NixPeer::or_skip(
            "binary_cache",
            "experimental-features = nix-command\nsubstituters =\nbuild-users-group =\n\
             sandbox = true\nsandbox-fallback = false\nextra-sandbox-paths = /bin/sh=/bin/busybox\n",
        )?;
        let store = dir.path.join("nix-root");
        let store = store.to_str().unwrap();
        std::fs::write(dir.path.join("f1"), "hello\n").unwrap();
        std::fs::write(dir.path.join("d.nix"), expr).unwrap();
        let d_nix = dir.path.join("d.nix");
        let built = nix.run(
            "nix-build",
            &["--store", store, d_nix.to_str().unwrap(), "--no-out-link"],
        );
        let built = built.trim().to_owned();
        let refs = nix.run("nix-store", &["--store", store, "-qR", &built]);
        let source = refs
            .lines()
            .find(|l| l.ends_with("-f1"))
            .or_else(|| refs.lines().find(|l| *l != built))
            .expect("the output refers to a source")
            .to_owned();
        let key = |name: &str| dir.path.join(name).display().to_string();
        nix.run(
            "nix-store",
            &[
                "--generate-binary-cache-key",
                "test-1",
                &key("sk"),
                &key("pk"),
            ],
        );
        nix.run(
            "nix",
            &[
                "store",
                "sign",
                "--store",
                store,
                "-k",
                &key("sk"),
                "-r",
                &built,
            ],
        );
        let url = format!("file://{}", dir.path.join("cache").display());
        nix.run("nix", &["copy", "--store", store, "--to", &url, &built]);
        let drv = nix.run("nix-store", &["--store", store, "-qd", &built]);
        let drv = drv.trim().to_owned();
        nix.run(
            "nix",
            &["copy", "--derivation", "--store", store, "--to", &url, &drv],
        );
        Some(NixCache {
            dir,
            nix,
            source,
            built,
            drv,
        })
    }

    /// The cache's `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path.join("cache").display())
    }

    /// The public key its paths are signed with (`test-1:…`).
    pub fn public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("pk"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The narinfo file of `path`.
    pub fn narinfo(&self, path: &str) -> std::path::PathBuf {
        let base = Path::new(path).file_name().unwrap().to_str().unwrap();
        let hash = &base[..32];
        self.dir.path.join(format!("cache/{hash}.narinfo"))
    }

    /// The NAR file of `path`, relative to the cache (its narinfo's URL).
    pub fn nar_url(&self, path: &str) -> String {
        let text = std::fs::read_to_string(self.narinfo(path)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .expect("a narinfo has a URL")
            .to_owned()
    }

    /// The cache, served over HTTP on loopback.
    pub fn serve_http(&self) -> HttpServer {
        HttpServer::serve(&self.dir.path.join("cache"))
    }
}
