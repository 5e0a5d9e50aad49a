//! The ATerm text of `.drv` files, as Nix writes and reads it:
//! `Derive([outputs],[inputDrvs],[inputSrcs],"system","builder",[args],[env])`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Derivation, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{IngestionMethod, StoreDir, StorePath};

/// Why a `.drv` text was refused: the field being read, the byte offset, and
/// what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad derivation at byte {offset} (in {field}): {problem}")]
pub struct DrvParseError {
    /// The field being read (`outputs`, `inputDrvs`, `env`, …).
    pub field: &'static str,
    /// The byte offset of the problem.
    pub offset: usize,
    /// What was wrong.
    pub problem: DrvProblem,
}

/// What was wrong in a `.drv` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrvProblem {
    /// Something other than what the grammar needs.
    #[error("expected {expected}, got {got}")]
    Expected {
        /// What the grammar needs.
        expected: String,
        /// What is there (or "the end of the file").
        got: String,
    },
    /// A string with a NUL byte, which no environment can carry.
    #[error("a string contains a NUL byte")]
    NulByte,
    /// A string that is not UTF-8.
    #[error("a string is not valid UTF-8")]
    NotUtf8,
    /// A path that is not a store path.
    #[error("{0}")]
    BadPath(String),
    /// An output's hash algorithm Nix does not know.
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    /// An output's hash that does not parse.
    #[error("{0}")]
    BadHash(String),
    /// A name given twice.
    #[error("duplicate {what} '{name}'")]
    Duplicate {
        /// What kind of name (output, input derivation, …).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Bytes after the closing parenthesis.
    #[error("trailing data after the derivation")]
    Trailing,
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    field: &'static str,
    store: &'a StoreDir,
}

impl<'a> Parser<'a> {
    fn fail(&self, problem: DrvProblem) -> DrvParseError {
        DrvParseError {
            field: self.field,
            offset: self.pos,
            problem,
        }
    }

    fn got(&self) -> String {
        match self.text.get(self.pos) {
            Some(c) => format!("'{}'", c.escape_ascii()),
            None => "the end of the file".to_owned(),
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), DrvParseError> {
        if self.text[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            Ok(())
        } else {
            Err(self.fail(DrvProblem::Expected {
                expected: format!("'{token}'"),
                got: self.got(),
            }))
        }
    }

    fn peek(&self, c: u8) -> bool {
        self.text.get(self.pos) == Some(&c)
    }

    fn string(&mut self) -> Result<String, DrvParseError> {
        self.expect("\"")?;
        let start = self.pos;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.text.get(self.pos) else {
                return Err(self.fail(DrvProblem::Expected {
                    expected: "'\"'".to_owned(),
                    got: self.got(),
                }));
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.text.get(self.pos) else {
                        return Err(self.fail(DrvProblem::Expected {
                            expected: "an escaped character".to_owned(),
                            got: self.got(),
                        }));
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                0 => {
                    self.pos -= 1;
                    return Err(self.fail(DrvProblem::NulByte));
                }
                other => out.push(other),
            }
        }
        String::from_utf8(out).map_err(|_| DrvParseError {
            field: self.field,
            offset: start,
            problem: DrvProblem::NotUtf8,
        })
    }

    fn path(&mut self) -> Result<StorePath, DrvParseError> {
        let start = self.pos;
        let text = self.string()?;
        self.store.parse(&text).map_err(|e| DrvParseError {
            field: self.field,
            offset: start,
            problem: DrvProblem::BadPath(e.to_string()),
        })
    }

    /// `[item,item,…]`
    fn list(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DrvParseError>,
    ) -> Result<(), DrvParseError> {
        self.expect("[")?;
        if self.peek(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            if self.peek(b',') {
                self.pos += 1;
            } else {
                return self.expect("]");
            }
        }
    }

    fn strings(&mut self) -> Result<Vec<String>, DrvParseError> {
        let mut out = Vec::new();
        self.list(|p| {
            out.push(p.string()?);
            Ok(())
        })?;
        Ok(out)
    }

    fn duplicate(&self, at: usize, what: &'static str, name: String) -> DrvParseError {
        DrvParseError {
            field: self.field,
            offset: at,
            problem: DrvProblem::Duplicate { what, name },
        }
    }

    fn output(&mut self) -> Result<(String, DerivationOutput), DrvParseError> {
        self.expect("(")?;
        let name = self.string()?;
        self.expect(",")?;
        let path_at = self.pos;
        let path = self.string()?;
        self.expect(",")?;
        let algo_at = self.pos;
        let algo = self.string()?;
        self.expect(",")?;
        let hash_at = self.pos;
        let hash = self.string()?;
        self.expect(")")?;
        let at = |pos: usize, problem| DrvParseError {
            field: self.field,
            offset: pos,
            problem,
        };
        let store_path = |text: &str| {
            self.store
                .parse(text)
                .map_err(|e| at(path_at, DrvProblem::BadPath(e.to_string())))
        };
        let output = if algo.is_empty() {
            if path.is_empty() {
                DerivationOutput::Deferred
            } else {
                DerivationOutput::InputAddressed(store_path(&path)?)
            }
        } else {
            let (method, algo_name) = match algo.strip_prefix("r:") {
                Some(rest) => (IngestionMethod::Recursive, rest),
                None => (IngestionMethod::Flat, algo.as_str()),
            };
            let algo = HashAlgo::from_name(algo_name)
                .ok_or_else(|| at(algo_at, DrvProblem::UnknownAlgo(algo.clone())))?;
            if hash.is_empty() {
                DerivationOutput::Floating { method, algo }
            } else {
                let hash = Hash::parse_digest(algo, &hash)
                    .map_err(|e| at(hash_at, DrvProblem::BadHash(e.to_string())))?;
                DerivationOutput::Fixed {
                    path: store_path(&path)?,
                    method,
                    hash,
                }
            }
        };
        Ok((name, output))
    }
}

/// Parses a `.drv` file's text. `name` is the derivation's name (the file's
/// name without `.drv`); store paths must lie in `store`.
pub fn parse(text: &[u8], store: &StoreDir, name: &str) -> Result<Derivation, DrvParseError> {
    let mut p = Parser {
        text,
        pos: 0,
        field: "the header",
        store,
    };
    p.expect("Derive(")?;

    p.field = "outputs";
    let mut outputs = BTreeMap::new();
    p.list(|p| {
        let at = p.pos;
        let (name, output) = p.output()?;
        if outputs.insert(name.clone(), output).is_some() {
            return Err(p.duplicate(at, "output", name));
        }
        Ok(())
    })?;
    p.expect(",")?;

    p.field = "inputDrvs";
    let mut input_drvs = BTreeMap::new();
    p.list(|p| {
        let at = p.pos;
        p.expect("(")?;
        let path = p.path()?;
        p.expect(",")?;
        let wanted: BTreeSet<String> = p.strings()?.into_iter().collect();
        p.expect(")")?;
        if input_drvs.insert(path.clone(), wanted).is_some() {
            return Err(p.duplicate(at, "input derivation", path.to_string()));
        }
        Ok(())
    })?;
    p.expect(",")?;

    p.field = "inputSrcs";
    let mut input_srcs = BTreeSet::new();
    p.list(|p| {
        input_srcs.insert(p.path()?);
        Ok(())
    })?;
    p.expect(",")?;

    p.field = "system";
    let system = p.string()?;
    p.expect(",")?;
    p.field = "builder";
    let builder = p.string()?;
    p.expect(",")?;
    p.field = "args";
    let args = p.strings()?;
    p.expect(",")?;

    p.field = "env";
    let mut env = BTreeMap::new();
    p.list(|p| {
        let at = p.pos;
        p.expect("(")?;
        let key = p.string()?;
        p.expect(",")?;
        let value = p.string()?;
        p.expect(")")?;
        if env.insert(key.clone(), value).is_some() {
            return Err(p.duplicate(at, "environment variable", key));
        }
        Ok(())
    })?;
    p.expect(")")?;
    if p.pos != text.len() {
        return Err(p.fail(DrvProblem::Trailing));
    }
    Ok(Derivation {
        name: name.to_owned(),
        outputs,
        input_drvs,
        input_srcs,
        system,
        builder,
        args,
        env,
    })
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('"');
}

fn push_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

/// Writes a derivation's ATerm text. `mask_outputs` blanks output paths
/// (and their environment variables); `inputs` replaces the input
/// derivations' paths with other keys (their hashes), both as
/// `hashDerivationModulo` needs.
pub fn print(
    drv: &Derivation,
    store: &StoreDir,
    mask_outputs: bool,
    inputs: Option<&BTreeMap<String, BTreeSet<String>>>,
) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("Derive(");
    push_list(&mut out, &drv.outputs, |out, (name, output)| {
        let (path, algo, hash) = output.parts(store);
        out.push('(');
        push_string(out, name);
        out.push(',');
        push_string(out, if mask_outputs { "" } else { &path });
        out.push(',');
        push_string(out, &algo);
        out.push(',');
        push_string(out, &hash);
        out.push(')');
    });
    out.push(',');
    let push_input = |out: &mut String, key: &str, wanted: &BTreeSet<String>| {
        out.push('(');
        push_string(out, key);
        out.push(',');
        push_list(out, wanted, |out, o| push_string(out, o));
        out.push(')');
    };
    match inputs {
        Some(inputs) => push_list(&mut out, inputs, |out, (k, v)| push_input(out, k, v)),
        None => push_list(&mut out, &drv.input_drvs, |out, (k, v)| {
            push_input(out, &store.print(k), v)
        }),
    }
    out.push(',');
    push_list(&mut out, &drv.input_srcs, |out, p| {
        push_string(out, &store.print(p))
    });
    out.push(',');
    push_string(&mut out, &drv.system);
    out.push(',');
    push_string(&mut out, &drv.builder);
    out.push(',');
    push_list(&mut out, &drv.args, |out, a| push_string(out, a));
    out.push(',');
    push_list(&mut out, &drv.env, |out, (k, v)| {
        out.push('(');
        push_string(out, k);
        out.push(',');
        let masked = mask_outputs && drv.outputs.contains_key(k);
        push_string(out, if masked { "" } else { v });
        out.push(')');
    });
    out.push(')');
    out
}

impl Derivation {
    /// Parses a `.drv` file's text (see [`parse`]).
    pub fn from_aterm(text: &[u8], store: &StoreDir, name: &str) -> Result<Self, DrvParseError> {
        parse(text, store, name)
    }

    /// The `.drv` file's text, byte for byte as Nix writes it.
    pub fn to_aterm(&self, store: &StoreDir) -> String {
        print(self, store, false, None)
    }
}
