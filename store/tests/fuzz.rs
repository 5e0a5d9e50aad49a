//! A bounded mutation fuzzer for the parsers that read untrusted bytes: the
//! `.drv` ATerm parser, the derivation JSON parser and the NAR parser. Real
//! inputs (Nix's derivations, NARs of a varied tree) are mutated at random
//! for `HERMETIC_FUZZ_SECONDS` (default 3; CI sets more). The verdict: no
//! panic, and no unbounded allocation: the address space is capped at
//! 256 MiB above its size at the start, so one aborts the test process.

use std::path::Path;
use std::time::{Duration, Instant};

use hermetic_store::derivation::json;
use hermetic_store::nar::{self, DiscardSink};
use hermetic_store::{Derivation, StoreDir};

/// How much address space the parsers may take beyond what the process
/// has when fuzzing starts.
const HEADROOM: u64 = 256 << 20;

/// Caps the process's address space a little above its current size, so an
/// unbounded allocation fails (and aborts the test) instead of succeeding.
fn bound_address_space() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let limit = kib * 1024 + HEADROOM;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
        .expect("setrlimit RLIMIT_AS");
}

/// xorshift64: reproducible from the seed printed at the start.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len());
        match rng.below(7) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = rng.next() as u8,
            2 => out.truncate(at),
            3 => {
                let bytes: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if !out.is_empty() => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            5 if out.len() >= at + 8 => {
                // A length field (NAR strings, file sizes) made huge or odd.
                let value = [u64::MAX, 1 << 40, 4097, rng.next()][rng.below(4)];
                out[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                // Interesting bytes for the ATerm and JSON grammars.
                let token: &[u8] = [
                    &b"\""[..],
                    b"\\",
                    b"(",
                    b")",
                    b"[",
                    b"]",
                    b",",
                    b"\0",
                    b"{",
                    b"}",
                ][rng.below(10)];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// Real inputs of each parser.
struct Corpus {
    drvs: Vec<Vec<u8>>,
    jsons: Vec<Vec<u8>>,
    nars: Vec<Vec<u8>>,
}

fn corpus() -> Corpus {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let store = StoreDir::default();
    let mut drvs = Vec::new();
    let mut parsed = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "drv") {
            let text = std::fs::read(&path).unwrap();
            let base = path.file_name().unwrap().to_str().unwrap();
            let sp = hermetic_store::StorePath::from_base_name(base).unwrap();
            let name = sp.name().strip_suffix(".drv").unwrap().to_owned();
            parsed.push((sp, Derivation::from_aterm(&text, &store, &name).unwrap()));
            drvs.push(text);
        }
    }
    let jsons = vec![json::print(&store, &parsed).into_bytes()];
    // NARs of a file, a symlink and a small tree, made here.
    let tree = std::env::temp_dir().join(format!("hermetic-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("d/e")).unwrap();
    std::fs::write(tree.join("d/e/f"), b"contents\n").unwrap();
    std::fs::write(tree.join("a"), b"").unwrap();
    std::os::unix::fs::symlink("d/e/f", tree.join("l")).unwrap();
    let mut nars = Vec::new();
    for path in [tree.clone(), tree.join("d/e/f"), tree.join("l")] {
        let mut nar = Vec::new();
        nar::dump(&path, &mut nar).unwrap();
        nars.push(nar);
    }
    std::fs::remove_dir_all(&tree).unwrap();
    Corpus { drvs, jsons, nars }
}

#[test]
fn parsers_survive_mutated_input() {
    let seconds: u64 = std::env::var("HERMETIC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::env::var("HERMETIC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fuzzing for {seconds} s with HERMETIC_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let Corpus { drvs, jsons, nars } = corpus();
    bound_address_space();
    let store = StoreDir::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..100 {
            let pick = rng.below(drvs.len());
            let drv = mutate(&mut rng, &drvs[pick]);
            accepted += u64::from(Derivation::from_aterm(&drv, &store, "x").is_ok());
            let text = mutate(&mut rng, &jsons[0]);
            accepted += u64::from(json::parse(&text, &store).is_ok());
            let pick = rng.below(nars.len());
            let archive = mutate(&mut rng, &nars[pick]);
            accepted += u64::from(nar::parse(&archive[..], &mut DiscardSink).is_ok());
            runs += 3;
        }
    }
    eprintln!("{runs} inputs, {accepted} accepted");
    // The unmutated corpus still parses: the fuzzer fed real inputs.
    for drv in &drvs {
        assert!(Derivation::from_aterm(drv, &store, "x").is_ok());
    }
    for archive in &nars {
        nar::parse(&archive[..], &mut DiscardSink).unwrap();
    }
}
