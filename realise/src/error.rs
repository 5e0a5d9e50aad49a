//! Why a build failed, with Lix's texts (D1) where the SPEC quotes them.

use hermetic_config::settings::SettingsError;
use hermetic_runtime::SandboxError;
use hermetic_store::StoreError;
use hermetic_store::derivation::DrvCheckError;

/// What went wrong in a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// B2.
    #[error(
        "derivation '{0}' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'"
    )]
    NoChrootRefused(String),
    /// B11 (Lix's text).
    #[error("{0}")]
    WrongPlatform(Box<WrongPlatform>),
    /// B5 (Lix's text).
    #[error(
        "Sandboxing is enabled due to using a diverted store, but this system does not support the kernel namespaces that are required. Pass --debug for diagnostics on what is broken."
    )]
    DivertedNeedsNamespaces,
    /// B7 without fallback (Lix's text).
    #[error(
        "this system does not support the kernel namespaces that are required for sandboxing; use '--no-sandbox' to disable sandboxing. Pass --debug for diagnostics on what is broken."
    )]
    NoNamespaces,
    /// B56.
    #[error(
        "derivation '{drv}' requested impure path '{path}', but it was not in allowed-impure-host-deps"
    )]
    ImpureHostDep {
        /// The derivation.
        drv: String,
        /// The path it asked for.
        path: String,
    },
    /// B84.
    #[error("builder for '{drv}' failed to produce output path for output '{output}' at '{path}'")]
    MissingOutput {
        /// The derivation.
        drv: String,
        /// The output's name.
        output: String,
        /// Its path.
        path: String,
    },
    /// B85.
    #[error(
        "suspicious ownership or permission on '{path}' for output '{output}'; rejecting this build output"
    )]
    SuspiciousOutput {
        /// The output's path.
        path: String,
        /// The output's name.
        output: String,
    },
    /// B86: a device, socket or fifo in an output.
    #[error("file '{0}' has an unsupported type")]
    UnsupportedType(String),
    /// Directories nested deeper than a NAR allows.
    #[error(
        "output path '{path}' has directories nested deeper than {limit}, the most a store path may have"
    )]
    TooDeep {
        /// Where the limit was passed.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// B86: a file not owned by the build user (a hard link to a foreign file).
    #[error("invalid ownership on file '{0}'")]
    InvalidOwnership(String),
    /// B88: a flat fixed output that is not a plain file.
    #[error(
        "output path '{0}' should be a non-executable regular file since recursive hashing is not enabled (one of outputHashMode={{flat,text}} is true)"
    )]
    FlatOutputNotAFile(String),
    /// B88 (Lix's text).
    #[error("{0}")]
    HashMismatch(Box<HashMismatch>),
    /// B88 (Lix's text).
    #[error(
        "the fixed-output derivation '{drv}' must not reference store paths but {count} such references were found:{list}"
    )]
    FixedOutputReferences {
        /// The derivation.
        drv: String,
        /// How many.
        count: usize,
        /// `\n  <path>` for each.
        list: String,
    },
    /// B87.
    #[error(
        "cycle detected in build of '{drv}' in the references of output '{output}' from output '{from}'"
    )]
    Cycle {
        /// The derivation.
        drv: String,
        /// The output in the cycle.
        output: String,
        /// The output it was reached from.
        from: String,
    },
    /// B87: a reference the derivation forbids (Nix's text).
    #[error("output '{output}' is not allowed to refer to the following paths:{list}")]
    ForbiddenReferences {
        /// The output's name.
        output: String,
        /// `\n  <path>` for each.
        list: String,
    },
    /// B87: an entry of a reference check that is neither a store path nor an output.
    #[error("derivation contains an illegal reference specifier '{0}'")]
    IllegalReferenceSpecifier(String),
    /// B87: `maxSize` (Nix's text).
    #[error("path '{path}' is too large at {size} bytes; limit is {limit} bytes")]
    TooLarge {
        /// The output.
        path: String,
        /// Its NAR size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// B87: `maxClosureSize` (Nix's text).
    #[error("closure of path '{path}' is too large at {size} bytes; limit is {limit} bytes")]
    ClosureTooLarge {
        /// The output.
        path: String,
        /// Its closure's NAR size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// B89 (Lix's text; the lines name each differing output).
    #[error("derivation '{drv}' may not be deterministic: outputs differ{lines}")]
    NotDeterministic {
        /// The derivation.
        drv: String,
        /// `\n  output differs: output '…' differs from '…'` for each.
        lines: String,
    },
    /// `--check` of outputs that are not there yet.
    #[error("some outputs of '{0}' are not valid, so checking is not possible")]
    CheckWithoutOutputs(String),
    /// The builder exited non-zero.
    #[error("builder for '{drv}' failed with exit code {code}")]
    BuilderFailed {
        /// The derivation.
        drv: String,
        /// Its exit code.
        code: i32,
    },
    /// The builder was killed by a signal.
    #[error("builder for '{drv}' failed due to signal {signal}")]
    BuilderKilled {
        /// The derivation.
        drv: String,
        /// The signal.
        signal: i32,
    },
    /// A time limit ended the build (B78).
    #[error("building '{drv}' {timed_out}")]
    TimedOut {
        /// The derivation.
        drv: String,
        /// `timed out after N seconds[ of silence]`.
        timed_out: String,
    },
    /// The build was interrupted.
    #[error("build of '{0}' was interrupted")]
    Interrupted(String),
    /// The substitution of some outputs failed and `fallback` is off (Nix's
    /// text, its trailing space included).
    #[error(
        "some substitutes for the outputs of derivation '{0}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source "
    )]
    SubstitutesFailed(String),
    /// A path that is not a derivation, not valid, and offered by no cache
    /// (Nix's text).
    #[error("path '{0}' is required, but there is no substituter that can build it")]
    NoSubstituter(String),
    /// A path's fetch failed at every cache that offers it.
    #[error("{0}")]
    SubstitutionFailed(String),
    /// Inputs that failed (Nix's text).
    #[error("{count} dependencies of derivation '{drv}' failed to build")]
    DependenciesFailed {
        /// How many.
        count: usize,
        /// The derivation.
        drv: String,
    },
    /// A pre-build hook said something it should not (B55).
    #[error("unknown pre-build hook command '{0}'")]
    UnknownHookCommand(String),
    /// A hook failed to run or failed.
    #[error("{hook} '{command}' failed: {reason}")]
    Hook {
        /// Which hook.
        hook: &'static str,
        /// Its command.
        command: String,
        /// Why.
        reason: String,
    },
    /// An unsandboxed build of a derivation some of whose outputs are
    /// valid: its builder would write over them.
    #[error(
        "cannot build the missing outputs of '{drv}' without the sandbox: its output '{path}' is already valid, and a builder outside the sandbox would write over it; build it with 'sandbox = true'"
    )]
    OutputAlreadyValid {
        /// The derivation.
        drv: String,
        /// The valid output.
        path: String,
    },
    /// A key of `secret-key-files` that cannot be read or is not a key.
    #[error(transparent)]
    SecretKey(#[from] hermetic_store::signature::SecretKeyError),
    /// `--kept DIR` names no directory a failed build kept.
    #[error(
        "'{0}' is not what a failed build kept: it holds no 'build' directory and no one \
         '.hermetic-*' scratch directory beside it (a build with keep-failed says \
         'note: keeping build directory '<kept>/build'')"
    )]
    NotKept(String),
    /// The derivation's attributes do not parse.
    #[error("derivation '{drv}': {reason}")]
    BadAttrs {
        /// The derivation.
        drv: String,
        /// Why.
        reason: String,
    },
    /// No build can start: `max-jobs` is 0 and no machine takes it.
    #[error(
        "unable to start any build; {0}\nhttps://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html"
    )]
    CannotStart(&'static str),
    /// `builders` is not Nix's machine format.
    #[error(transparent)]
    Machines(#[from] hermetic_remote::machines::MachineError),
    /// A build on another machine failed, or its paths could not be
    /// copied.
    #[error("{0}")]
    Remote(String),
    /// A file operation on the build's files.
    #[error("cannot {op} '{path}'")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store refused something.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A derivation does not hold together.
    #[error(transparent)]
    Drv(#[from] DrvCheckError),
    /// The sandbox refused or failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A setting is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A computed path is not a store path.
    #[error(transparent)]
    BadPath(#[from] hermetic_store::path::BadStorePath),
}

/// Wraps an `io::Error` with its operation and path.
pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.display().to_string();
    move |source| BuildError::Io { op, path, source }
}

/// B11: what a derivation needs and what this machine is.
#[derive(Debug, thiserror::Error)]
#[error(
    "a '{system}' with features {{{features}}} is required to build '{drv}', but I am a '{host}' with features {{{host_features}}}"
)]
pub struct WrongPlatform {
    /// The derivation's system.
    pub system: String,
    /// The features it requires.
    pub features: String,
    /// The derivation.
    pub drv: String,
    /// This machine's system.
    pub host: String,
    /// This machine's features.
    pub host_features: String,
}

/// B88: a fixed output whose hash is not the one specified.
#[derive(Debug, thiserror::Error)]
#[error(
    "hash mismatch in fixed-output derivation '{drv}':\n    likely URL: {url}\n     specified: {specified}\n           got: {got}\n expected path: {expected_path}\n      got path: {got_path}"
)]
pub struct HashMismatch {
    /// The derivation.
    pub drv: String,
    /// Its `urls` or `url` attribute, or `(unknown)`.
    pub url: String,
    /// The hash it specified.
    pub specified: String,
    /// The hash of what was built.
    pub got: String,
    /// The path the derivation names.
    pub expected_path: String,
    /// The path of what was built.
    pub got_path: String,
}
