//! Golden tests of the derivation code against derivations Nix 2.8 wrote
//! (tests/fixtures), and its errors for malformed ones.

use std::collections::HashMap;
use std::path::Path;

use hermetic_store::derivation::{DrvCheckError, DrvHashes, json};
use hermetic_store::{Derivation, StoreDir, StorePath};

fn fixtures() -> Vec<(StorePath, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "drv"))
        .map(|p| {
            let base = p.file_name().unwrap().to_str().unwrap().to_owned();
            (
                StorePath::from_base_name(&base).unwrap(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn parse(path: &StorePath, text: &[u8]) -> Derivation {
    let name = path.name().strip_suffix(".drv").unwrap();
    Derivation::from_aterm(text, &StoreDir::default(), name).unwrap()
}

/// Hashes input derivations from the fixtures, memoised, as a store would.
fn resolver(
    all: &[(StorePath, Vec<u8>)],
) -> impl FnMut(&StorePath) -> Result<DrvHashes, DrvCheckError> + '_ {
    let mut memo: HashMap<StorePath, DrvHashes> = HashMap::new();
    fn hashes(
        all: &[(StorePath, Vec<u8>)],
        memo: &mut HashMap<StorePath, DrvHashes>,
        path: &StorePath,
    ) -> Result<DrvHashes, DrvCheckError> {
        if let Some(h) = memo.get(path) {
            return Ok(h.clone());
        }
        let (_, text) = all.iter().find(|(p, _)| p == path).expect("input fixture");
        let drv = parse(path, text);
        let h = drv.hash_modulo(&StoreDir::default(), false, &mut |p| hashes(all, memo, p))?;
        memo.insert(path.clone(), h.clone());
        Ok(h)
    }
    move |p| hashes(all, &mut memo, p)
}

#[test]
fn nix_derivations_round_trip_byte_for_byte() {
    let all = fixtures();
    assert!(all.len() >= 7);
    for (path, text) in &all {
        let drv = parse(path, text);
        assert_eq!(
            drv.to_aterm(&StoreDir::default()).as_bytes(),
            &text[..],
            "{path}"
        );
        assert_eq!(&drv.drv_path(&StoreDir::default()).unwrap(), path);
    }
}

#[test]
fn output_paths_are_the_ones_nix_computed() {
    let all = fixtures();
    let store = StoreDir::default();
    let mut resolve = resolver(&all);
    for (path, text) in &all {
        let drv = parse(path, text);
        drv.check_outputs(&store, &store.print(path), &mut resolve)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn json_round_trips_and_matches_aterm() {
    let store = StoreDir::default();
    let all: Vec<_> = fixtures()
        .iter()
        .map(|(p, t)| (p.clone(), parse(p, t)))
        .collect();
    let text = json::print(&store, &all);
    let back = json::parse(text.as_bytes(), &store).unwrap();
    assert_eq!(back, all);
}

#[test]
fn a_tampered_output_path_is_caught() {
    let all = fixtures();
    let store = StoreDir::default();
    let (path, text) = all.iter().find(|(p, _)| p.name() == "a.drv").unwrap();
    let text = String::from_utf8(text.clone()).unwrap();
    // Change the output path in both places, keeping it a valid store path.
    let forged = text.replace(
        "wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm",
        "wd0ys9snp82b5v5j4pgp5wfhnfjhl2vn",
    );
    let drv = parse(path, forged.as_bytes());
    let err = drv
        .check_outputs(&store, &store.print(path), &mut resolver(&all))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "derivation '{}' has incorrect output '/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vn-a', \
             should be '/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a'",
            store.print(path)
        )
    );
}

#[test]
fn malformed_derivations_name_the_field_and_position() {
    let store = StoreDir::default();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pmfhlvnvd4ymdr310p39wwzgy3akkikr-fodflat.drv"),
    )
    .unwrap();
    let err = |text: &str| {
        Derivation::from_aterm(text.as_bytes(), &store, "x")
            .unwrap_err()
            .to_string()
    };

    // Truncated.
    let cut = &good[..good.len() / 2];
    let e = err(cut);
    assert!(e.contains("the end of the file"), "{e}");

    // Bad quoting: a quote left open runs to the end.
    let e = err(&good.replacen("\"x86_64-linux\"", "\"x86_64-linux", 1));
    assert!(e.starts_with("bad derivation at byte"), "{e}");

    // Unknown hash algorithm, with the field and the offset of the algorithm.
    let e = err(&good.replace("\"sha256\",\"9869", "\"sha257\",\"9869"));
    let at = good.find("\"sha256\",\"9869").unwrap();
    assert_eq!(
        e,
        format!("bad derivation at byte {at} (in outputs): unknown hash algorithm 'sha257'")
    );

    // A NUL byte in a string.
    let e = err(&good.replace("echo hi", "echo\0hi"));
    assert!(e.contains("(in args): a string contains a NUL byte"), "{e}");

    // A hash of the wrong length.
    let e = err(&good.replace("98691562fb", "98691562f"));
    assert!(e.contains("has wrong length for hash type 'sha256'"), "{e}");

    // A path outside the store.
    let e = err(&good.replace("/nix/store/y3hz", "/nix/stor/y3hz"));
    assert!(e.contains("is not in the Nix store"), "{e}");

    // Trailing bytes.
    let e = err(&format!("{good}x"));
    assert!(e.ends_with("trailing data after the derivation"), "{e}");
}
