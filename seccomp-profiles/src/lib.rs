//! Seccomp profiles as data, compiled to BPF for every ABI the host runs.
//!
//! Empty until its own issue (issue 3): the sandbox core sets
//! `no_new_privs` but installs no filter yet.
