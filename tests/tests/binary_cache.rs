//! Binary caches (issue 17, first part): a cache written by stock Nix 2.8
//! (`nix copy --to file://…`, signed with a key from
//! `nix-store --generate-binary-cache-key`) is read by
//! `hermetic store copy --from`: closures arrive, references first, and
//! verify; what lacks a trusted signature, or whose NAR is not its
//! narinfo's, is refused with Nix's text and leaves nothing behind.

use std::path::Path;

use hermetic_tests::builds::{BuildHost, stderr};
use hermetic_tests::nix_cache::NixCache;
use hermetic_tests::root_or_skip;

/// The names in a store directory that are not the store's own entries.
fn store_entries(host: &BuildHost) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(host.layout().real_store_dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_closure_signed_by_a_trusted_key_is_copied_from_a_nix_cache() {
    if !root_or_skip("a_closure_signed_by_a_trusted_key_is_copied_from_a_nix_cache") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let host = BuildHost::diverted("cache-copy");
    host.conf(&format!("trusted-public-keys = {}", cache.public_key()));
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    // References first, each announced as Nix announces it.
    let source_at = said
        .find(&format!(
            "copying path '{}' from '{}'...",
            cache.source,
            cache.url()
        ))
        .expect(&said);
    let built_at = said
        .find(&format!(
            "copying path '{}' from '{}'...",
            cache.built,
            cache.url()
        ))
        .expect(&said);
    assert!(source_at < built_at, "{said}");
    let real = host
        .dir
        .path
        .join("root")
        .join(cache.built.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(real).unwrap(),
        format!("built\nref {}\n", cache.source)
    );
    // The registration is the narinfo's: references and deriver.
    let info = host.run(&["store", "info", "--json", &cache.built]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let info = &info[0];
    assert_eq!(
        info["references"],
        serde_json::json!([cache.source]),
        "{info}"
    );
    assert!(
        info["deriver"]
            .as_str()
            .is_some_and(|d| d.ends_with("-ia.drv")),
        "{info}"
    );
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let verify = cache.nix.verify_store(host.dir.path.join("root"));
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Copying again fetches nothing.
    let again = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("copying path"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn an_untrusted_signature_or_a_wrong_nar_is_refused_and_leaves_nothing() {
    if !root_or_skip("an_untrusted_signature_or_a_wrong_nar_is_refused_and_leaves_nothing") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    // Signed, but not by a key this store trusts: the content-addressed
    // source proves itself and is taken; the built path is refused.
    let host = BuildHost::diverted("cache-untrusted");
    host.conf("trusted-public-keys = other-1:ZXhhbXBsZWV4YW1wbGVleGFtcGxlZXhhbXBsZWV4YW0=");
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot add path '{}' because it lacks a signature by a trusted key",
            cache.built
        )),
        "{}",
        stderr(&out)
    );
    let built_base = Path::new(&cache.built)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let source_base = Path::new(&cache.source)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(store_entries(&host), [source_base.to_owned()]);
    // With require-sigs off, the same cache is taken.
    host.conf("require-sigs = false");
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(store_entries(&host).contains(&built_base.to_owned()));

    // A narinfo whose NAR hash is not its NAR's: refused with Nix's text,
    // nothing registered, no staging left.
    let host = BuildHost::diverted("cache-wrong-nar");
    host.conf("require-sigs = false");
    let narinfo = cache.narinfo(&cache.built);
    let text = std::fs::read_to_string(&narinfo).unwrap();
    let line = text.lines().find(|l| l.starts_with("NarHash: ")).unwrap();
    let forged = "NarHash: sha256:0000000000000000000000000000000000000000000000000000";
    std::fs::write(&narinfo, text.replace(line, forged)).unwrap();
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("hash mismatch importing path '{}'", cache.built)),
        "{}",
        stderr(&out)
    );
    assert_eq!(store_entries(&host), [source_base.to_owned()]);
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));

    // A cache for another store directory is refused before anything.
    std::fs::write(&narinfo, text).unwrap();
    let info_file = cache.dir.path.join("cache/nix-cache-info");
    std::fs::write(&info_file, "StoreDir: /gnu/store\n").unwrap();
    let host = BuildHost::diverted("cache-wrong-dir");
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "binary cache '{}' is for Nix stores with prefix '/gnu/store', not '/nix/store'",
            cache.url()
        )),
        "{}",
        stderr(&out)
    );
    assert!(store_entries(&host).is_empty());
}

#[test]
fn a_zstd_compressed_cache_written_by_nix_is_read() {
    if !root_or_skip("a_zstd_compressed_cache_written_by_nix_is_read") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let dir = cache.dir.path.join("zstd-cache");
    let url = format!("file://{}", dir.display());
    let store = cache.dir.path.join("nix-root");
    cache.nix.run(
        "nix",
        &[
            "copy",
            "--store",
            store.to_str().unwrap(),
            "--to",
            &format!("{url}?compression=zstd"),
            &cache.built,
        ],
    );
    let narinfo = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .unwrap();
    assert!(
        std::fs::read_to_string(&narinfo)
            .unwrap()
            .contains("Compression: zstd\n")
    );
    let host = BuildHost::diverted("cache-zstd");
    host.conf(&format!("trusted-public-keys = {}", cache.public_key()));
    let out = host.run(&["store", "copy", "--from", &url, &cache.built]);
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = cache.nix.verify_store(host.dir.path.join("root"));
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_cache_hermetic_writes_and_signs_is_accepted_by_stock_nix() {
    if !root_or_skip("a_cache_hermetic_writes_and_signs_is_accepted_by_stock_nix") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    // hermetic's store gets the closure from Nix's cache…
    let host = BuildHost::diverted("cache-write");
    host.conf(&format!("trusted-public-keys = {}", cache.public_key()));
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.built]);
    assert!(out.status.success(), "{}", stderr(&out));
    // …and writes it to a cache of its own, signed with a key of its own.
    let key = |name: &str| cache.dir.path.join(name).display().to_string();
    cache.nix.run(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "hermetic-1",
            &key("sk2"),
            &key("pk2"),
        ],
    );
    let own_key = std::fs::read_to_string(key("pk2")).unwrap();
    let written = cache.dir.path.join("written");
    let written_url = format!("file://{}", written.display());
    let nix_copy_from = |label: &str| {
        let root = cache.dir.path.join(label);
        cache
            .nix
            .command("nix")
            .args(["copy", "--from", &written_url, "--to"])
            .arg(&root)
            .args([
                "--option",
                "trusted-public-keys",
                own_key.trim(),
                &cache.built,
            ])
            .output()
            .unwrap()
    };
    // Unsigned by the key Nix trusts: Nix refuses the built path.
    let out = host.run(&["store", "copy", "--to", &written_url, &cache.built]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = nix_copy_from("nix-refuses");
    assert!(!refused.status.success());
    // (Nix 2.8's words; later versions say "a signature by a trusted key".)
    assert!(
        stderr(&refused).contains("because it lacks a valid signature"),
        "{}",
        stderr(&refused)
    );
    // Signed with secret-key-files: Nix takes the closure and it verifies.
    std::fs::remove_dir_all(&written).unwrap();
    host.conf(&format!(
        "trusted-public-keys = {}\nsecret-key-files = {}",
        cache.public_key(),
        key("sk2")
    ));
    let out = host.run(&["store", "copy", "--to", &written_url, &cache.built]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let source_at = said
        .find(&format!(
            "copying path '{}' to '{written_url}'...",
            cache.source
        ))
        .expect(&said);
    let built_at = said
        .find(&format!(
            "copying path '{}' to '{written_url}'...",
            cache.built
        ))
        .expect(&said);
    assert!(source_at < built_at, "references first: {said}");
    let taken = nix_copy_from("nix-takes");
    assert!(taken.status.success(), "{}", stderr(&taken));
    let verify = cache.nix.verify_store(cache.dir.path.join("nix-takes"));
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Written again: nothing to do.
    let again = host.run(&["store", "copy", "--to", &written_url, &cache.built]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("copying path"),
        "{}",
        stderr(&again)
    );
}
