//! `hermetic build` from inside real builds: the sandbox modes and
//! `__noChroot` (B1–B5), the builder's world (B36, B62), outputs (B84–B89)
//! and Nix's exit statuses (B83).

use hermetic_store::{Hash, IngestionMethod};
use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr, text};
use hermetic_tests::root_or_skip;

#[test]
fn a_derivation_builds_and_its_outputs_are_registered_read_only() {
    if !root_or_skip("a_derivation_builds_and_its_outputs_are_registered_read_only") {
        return;
    }
    let host = BuildHost::diverted("build-basic");
    let dep = DrvSpec::new(
        "dep",
        "mkdir -p $out/bin; echo dep > $out/bin/data; echo $out > $dev",
    )
    .attr("outputs", "out dev")
    .add_outputs(&["out", "dev"], &host);
    let top = DrvSpec::new(
        "top",
        "echo \"$(cat $dep/bin/data) $(id -u):$(id -g) $PWD $HOME $NIX_BUILD_TOP $TERM\" > $out",
    )
    .input("dep", &dep, "out", &host)
    .add_to(&host);
    let out = host.run(&["build", &host.print(&top)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let outputs = outputs_of(&host, &top);
    let path = host.print(&outputs["out"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), path);
    assert_eq!(
        text(&host.real(&outputs["out"])),
        "dep 1000:100 /build /homeless-shelter /build xterm-256color\n"
    );
    // The dependency was built first, its log prefixed with its name.
    assert!(stderr(&out).contains("building '"), "{}", stderr(&out));
    let store = host.store();
    let info = store.query_info(&outputs["out"]).unwrap();
    assert_eq!(info.deriver.as_ref(), Some(&top));
    assert!(info.ultimate);
    // It refers to the output of dep it read, found by scanning (B87)? It
    // holds only text from it, so no reference.
    assert!(info.references.is_empty(), "{:?}", info.references);
    let dep_outputs = outputs_of(&host, &dep);
    let dep_info = store.query_info(&dep_outputs["dev"]).unwrap();
    assert!(
        dep_info.references.contains(&dep_outputs["out"]),
        "dev refers to out"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(host.real(&dep_outputs["out"]).join("bin/data")).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.mtime(), meta.uid()),
        (0o444, 1, 0)
    );
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Built outputs are not built again.
    let again = host.run(&["build", &host.print(&top)]);
    assert!(again.status.success());
    assert!(!stderr(&again).contains("building"), "{}", stderr(&again));
}

#[test]
fn no_chroot_under_each_sandbox_mode() {
    if !root_or_skip("no_chroot_under_each_sandbox_mode") {
        return;
    }
    if !hermetic_tests::group_or_skip("no_chroot_under_each_sandbox_mode", "hermetic-solo") {
        return;
    }
    // Unsandboxed builds sweep their build user's processes (B79): a group
    // of their own keeps them from killing other tests' builders.
    let host = BuildHost::undiverted("build-nochroot");
    let users = "build-users-group = hermetic-solo";
    let script = "if [ -d /usr/bin ]; then echo host > $out; else echo sandbox > $out; fi";
    let no_chroot = DrvSpec::new("nochroot", script)
        .attr("__noChroot", "1")
        .add_to(&host);
    let plain = DrvSpec::new("plain", script).add_to(&host);

    host.conf(&format!("{users}\nsandbox = true"));
    let out = host.run(&["build", &host.print(&no_chroot)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "derivation '{}' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'",
            host.print(&no_chroot)
        )),
        "{}",
        stderr(&out)
    );

    host.conf(&format!("{users}\nsandbox = relaxed"));
    for (drv, expected) in [(&no_chroot, "host\n"), (&plain, "sandbox\n")] {
        let out = host.run(&["build", &host.print(drv)]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(text(&host.real(&outputs_of(&host, drv)["out"])), expected);
    }
    let other = DrvSpec::new("plain2", script).add_to(&host);
    host.conf(&format!("{users}\nsandbox = false"));
    let out = host.run(&["build", &host.print(&other)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        text(&host.real(&outputs_of(&host, &other)["out"])),
        "host\n"
    );

    // A diverted store forces the sandbox whatever the setting (B5).
    let diverted = BuildHost::diverted("build-diverted");
    diverted.conf("sandbox = false");
    let drv = DrvSpec::new("plain", script).add_to(&diverted);
    let out = diverted.run(&["build", &diverted.print(&drv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("auto-enabling the sandbox due to using a diverted store"));
    assert_eq!(
        text(&diverted.real(&outputs_of(&diverted, &drv)["out"])),
        "sandbox\n"
    );
}

#[test]
fn fixed_output_builds_check_their_hash() {
    if !root_or_skip("fixed_output_builds_check_their_hash") {
        return;
    }
    let host = BuildHost::diverted("build-fod");
    // A fixed-output build sees Nix's nsswitch.conf (B36) and the network
    // flag (B62); the hash of what it writes is known in advance.
    let expected = "hosts: files dns\nservices: files\n1\n";
    let script = "cat /etc/nsswitch.conf > $out; echo $NIX_OUTPUT_CHECKED >> $out";
    let good = DrvSpec::new("fetched", script)
        .fixed(IngestionMethod::Flat, Hash::sha256(expected.as_bytes()))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&good)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = &outputs_of(&host, &good)["out"];
    assert_eq!(text(&host.real(path)), expected);
    let info = host.store().query_info(path).unwrap();
    assert_eq!(
        info.ca.as_deref(),
        Some(
            format!(
                "fixed:sha256:{}",
                Hash::sha256(expected.as_bytes()).to_base32()
            )
            .as_str()
        )
    );

    let wrong = DrvSpec::new("wrong", "echo hi > $out")
        .fixed(IngestionMethod::Flat, Hash::sha256(b"hello\n"))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&wrong)]);
    assert_eq!(out.status.code(), Some(102), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "hash mismatch in fixed-output derivation '{}':",
            host.print(&wrong)
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "     specified: {}",
            Hash::sha256(b"hello\n").to_sri()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "           got: {}",
            Hash::sha256(b"hi\n").to_sri()
        )),
        "{err}"
    );
    assert!(
        !host
            .store()
            .is_valid(&outputs_of(&host, &wrong)["out"])
            .unwrap()
    );
    // What was built is registered at its own content address (B88).
    let got = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("got path: "))
        .expect("a 'got path' line");
    let got = host.layout().store_dir.parse(got).unwrap();
    let store = host.store();
    assert!(store.is_valid(&got).unwrap(), "{err}");
    assert_eq!(text(&host.real(&got)), "hi\n");
    // It is not the derivation's output, so it is not registered as built
    // by it (Nix names the derivation; a deriver must compute the path).
    assert_eq!(store.query_info(&got).unwrap().deriver, None);
    drop(store);

    // A fixed-output builder's failure is transient: status 1, not 100.
    let failing = DrvSpec::new("failing", "exit 3")
        .fixed(IngestionMethod::Flat, Hash::sha256(b"x"))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&failing)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed with exit code 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn failures_have_nix_statuses_and_messages() {
    if !root_or_skip("failures_have_nix_statuses_and_messages") {
        return;
    }
    let host = BuildHost::diverted("build-fail");
    // A builder's failure is permanent (100); an output rejected after a
    // successful builder is not (1), as in Nix.
    let cases: Vec<(&str, &str, Option<i32>, String)> = vec![
        (
            "fails",
            "echo failing; exit 2",
            Some(100),
            "failed with exit code 2".into(),
        ),
        (
            "nooutput",
            "true",
            Some(1),
            "failed to produce output path for output 'out' at".into(),
        ),
        (
            "writable",
            "mkdir $out; chmod 777 $out",
            Some(1),
            "suspicious ownership or permission on".into(),
        ),
    ];
    for (name, script, code, message) in cases {
        let drv = DrvSpec::new(name, script).add_to(&host);
        let out = host.run(&["build", &host.print(&drv)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), code.or(Some(1)), "{name}: {err}");
        assert!(err.contains(&message), "{name}: {err}");
        assert!(
            !host
                .store()
                .is_valid(&outputs_of(&host, &drv)["out"])
                .unwrap(),
            "{name}"
        );
    }
    // A time limit: 101 (B78).
    host.conf("timeout = 1");
    let slow = DrvSpec::new("slow", "sleep 30; touch $out").add_to(&host);
    let out = host.run(&["build", &host.print(&slow)]);
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timed out after 1 seconds"),
        "{}",
        stderr(&out)
    );
    // A failed input fails its dependents with Nix's text.
    host.conf("");
    let broken = DrvSpec::new("broken", "exit 1").add_to(&host);
    let user = DrvSpec::new("user", "touch $out")
        .input("broken", &broken, "out", &host)
        .add_to(&host);
    let out = host.run(&["build", &host.print(&user)]);
    assert_eq!(out.status.code(), Some(100), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "1 dependencies of derivation '{}' failed to build",
            host.print(&user)
        )),
        "{}",
        stderr(&out)
    );
    // Nothing of the failed builds is left in the store directory.
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let leftovers: Vec<_> = std::fs::read_dir(host.layout().real_store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| hermetic_tests::is_hermetic_scratch(n))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn check_finds_a_nondeterministic_build() {
    if !root_or_skip("check_finds_a_nondeterministic_build") {
        return;
    }
    let host = BuildHost::diverted("build-check");
    let random = DrvSpec::new("random", "cat /proc/sys/kernel/random/uuid > $out").add_to(&host);
    let stable = DrvSpec::new("stable", "echo same > $out").add_to(&host);
    for drv in [&random, &stable] {
        let out = host.run(&["build", &host.print(drv)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = host.run(&["build", "--check", &host.print(&stable)]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = host.run(&["build", "--check", &host.print(&random)]);
    assert_eq!(out.status.code(), Some(104), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("may not be deterministic"), "{err}");
    let path = &outputs_of(&host, &random)["out"];
    let check_path = format!("{}.check", host.real(path).display());
    assert!(!std::path::Path::new(&check_path).exists());

    let out = host.run(&["build", "--check", "-K", &host.print(&random)]);
    assert_eq!(out.status.code(), Some(104), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error: renaming"));
    assert!(std::path::Path::new(&check_path).exists(), "{check_path}");
    assert_ne!(
        text(std::path::Path::new(&check_path)),
        text(&host.real(path))
    );
    // The registered output is untouched.
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));

    // --check of what was never built.
    let never = DrvSpec::new("never", "echo > $out").add_to(&host);
    let out = host.run(&["build", "--check", &host.print(&never)]);
    assert!(
        stderr(&out).contains(&format!(
            "some outputs of '{}' are not valid, so checking is not possible",
            host.print(&never)
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pass_as_file_structured_attrs_and_hooks() {
    if !root_or_skip("pass_as_file_structured_attrs_and_hooks") {
        return;
    }
    let host = BuildHost::diverted("build-attrs");
    let paf = DrvSpec::new("paf", "cat $fooPath > $out")
        .attr("foo", "a \"quoted\" value\n")
        .attr("passAsFile", "foo")
        .add_to(&host);
    let json = r#"{"builder":"/bin/sh","list":[1,"x"],"name":"sa","system":"SYSTEM","flag":true}"#
        .replace("SYSTEM", &hermetic_host::system());
    // Structured attributes: no `out` in the environment, the outputs in
    // .attrs.json and .attrs.sh (which needs bash to source; busybox here
    // only copies the files out).
    let sa = DrvSpec::new(
        "sa",
        "out=$(sed -n 's/.*\"out\":\"\\([^\"]*\\)\".*/\\1/p' $NIX_ATTRS_JSON_FILE); \
         mkdir $out; cp $NIX_ATTRS_JSON_FILE $NIX_ATTRS_SH_FILE $out/; echo \"${out:-unset}\" > $out/seen",
    )
    .attr("__json", json)
    .add_to(&host);
    let hook = host.dir.path.join("post-build-hook");
    let record = host.dir.path.join("hook-record");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$DRV_PATH $OUT_PATHS\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    hermetic_tests::set_mode(&hook, 0o755);
    host.conf(&format!("post-build-hook = {}", hook.display()));
    let out = host.run(&["build", &host.print(&paf)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let paf_out = &outputs_of(&host, &paf)["out"];
    assert_eq!(text(&host.real(paf_out)), "a \"quoted\" value\n");
    assert_eq!(
        text(&record),
        format!("{} {}\n", host.print(&paf), host.print(paf_out))
    );
    let out = host.run(&["build", &host.print(&sa)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sa_out = &outputs_of(&host, &sa)["out"];
    let dir = host.real(sa_out);
    let attrs: serde_json::Value = serde_json::from_str(&text(&dir.join(".attrs.json"))).unwrap();
    assert_eq!(attrs["outputs"]["out"], host.print(sa_out));
    assert_eq!(attrs["list"], serde_json::json!([1, "x"]));
    let sh = text(&dir.join(".attrs.sh"));
    assert!(sh.contains("declare flag=1\n"), "{sh}");
    assert!(sh.contains("declare -a list=(1 'x' )\n"), "{sh}");
    assert!(
        sh.contains(&format!(
            "declare -A outputs=(['out']='{}' )\n",
            host.print(sa_out)
        )),
        "{sh}"
    );
}

#[test]
fn references_are_found_and_checked() {
    if !root_or_skip("references_are_found_and_checked") {
        return;
    }
    let host = BuildHost::diverted("build-refs");
    let dep = DrvSpec::new("dep", "echo dep > $out").add_to(&host);
    let dep_out = host.print(&outputs_of(&host, &dep)["out"]);
    let script = "echo $dep > $out";
    let refers = DrvSpec::new("refers", script)
        .input("dep", &dep, "out", &host)
        .add_to(&host);
    let out = host.run(&["build", &host.print(&refers)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info = host
        .store()
        .query_info(&outputs_of(&host, &refers)["out"])
        .unwrap();
    assert_eq!(
        info.references
            .iter()
            .map(|p| host.print(p))
            .collect::<Vec<_>>(),
        vec![dep_out.clone()],
        "the scan found the path it wrote"
    );

    let forbidden = |name: &str, attr: &str, value: &str| {
        let drv = DrvSpec::new(name, script)
            .input("dep", &dep, "out", &host)
            .attr(attr, value.to_owned())
            .add_to(&host);
        let out = host.run(&["build", &host.print(&drv)]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        (drv, stderr(&out))
    };
    // Printed as Nix prints an error: its second line under its text.
    let expected =
        format!("output 'out' is not allowed to refer to the following paths:\n         {dep_out}");
    let (_, err) = forbidden("disallowed", "disallowedReferences", &dep_out);
    assert!(err.contains(&expected), "{err}");
    let (_, err) = forbidden("allowed-none", "allowedReferences", "");
    assert!(err.contains(&expected), "{err}");
    let (_, err) = forbidden("requisites", "disallowedRequisites", &dep_out);
    assert!(err.contains(&expected), "{err}");
    let (_, err) = forbidden("bad-spec", "allowedReferences", "not-a-path");
    assert!(
        err.contains("derivation contains an illegal reference specifier 'not-a-path'"),
        "{err}"
    );
    // A reference to itself counts as a reference (Nix's check-refs.sh):
    // refused under allowedReferences = [], allowed when it names `out`.
    let own = |name: &str, allowed: &str| {
        let drv = DrvSpec::new(name, "mkdir $out; echo $out > $out/self")
            .attr("allowedReferences", allowed.to_owned())
            .add_to(&host);
        host.run(&["build", &host.print(&drv)])
    };
    let out = own("self-none", "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("output 'out' is not allowed to refer to the following paths:"),
        "{}",
        stderr(&out)
    );
    let out = own("self-out", "out");
    assert!(out.status.success(), "{}", stderr(&out));
    // allowedReferences naming the path (or the output itself) passes.
    let allowed = DrvSpec::new("allowed", script)
        .input("dep", &dep, "out", &host)
        .attr("allowedReferences", format!("{dep_out} out"))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&allowed)]);
    assert!(out.status.success(), "{}", stderr(&out));

    // maxSize, with structured attributes' outputChecks.
    let json = serde_json::json!({
        "builder": "/bin/sh", "name": "big", "system": hermetic_host::system(),
        "outputChecks": { "out": { "maxSize": 100 } }
    });
    let big = DrvSpec::new("big", "out=$(sed -n 's/.*\"out\":\"\\([^\"]*\\)\".*/\\1/p' $NIX_ATTRS_JSON_FILE); head -c 1000 /dev/zero > $out")
        .attr("__json", json.to_string())
        .add_to(&host);
    let out = host.run(&["build", &host.print(&big)]);
    assert!(
        stderr(&out).contains("is too large at 1"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("bytes; limit is 100 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_configured_shell_replaces_the_default_one_as_in_nix() {
    if !root_or_skip("a_configured_shell_replaces_the_default_one_as_in_nix") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let host = BuildHost::diverted("build-sh-twice");
    // The line Debian's Nix needs for a sandbox, with a copy of busybox so
    // that the sandbox tells which /bin/sh it got; and a target given twice
    // in the configuration: Nix keeps the entry that sorts last, not the
    // line that comes last.
    let shell = host.dir.path.join("my-busybox");
    std::fs::copy(hermetic_tests::busybox(), &shell).unwrap();
    hermetic_tests::set_mode(&host.dir.path, 0o755);
    let twice = host.dir.path.join("twice");
    std::fs::create_dir(&twice).unwrap();
    std::fs::write(twice.join("which"), "b").unwrap();
    hermetic_tests::set_mode(&twice, 0o755);
    hermetic_tests::set_mode(&twice.join("which"), 0o644);
    host.conf(&format!(
        "extra-sandbox-paths = /bin/sh={shell} /data={twice}\nextra-sandbox-paths = /data=/nonexistent-a?\n",
        shell = shell.display(),
        twice = twice.display(),
    ));
    let drv = DrvSpec::new(
        "which-sh",
        "echo $(stat -c %i /bin/sh) $(cat /data/which) > $out",
    )
    .add_to(&host);
    let out = host.run(&["build", &host.print(&drv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let inode = std::fs::metadata(&shell).unwrap().ino();
    assert_eq!(
        text(&host.real(&outputs_of(&host, &drv)["out"])).trim(),
        format!("{inode} b")
    );
}

#[test]
fn export_references_graph_hands_the_builder_its_inputs_closure() {
    if !root_or_skip("export_references_graph_hands_the_builder_its_inputs_closure") {
        return;
    }
    let host = BuildHost::diverted("build-export-graph");
    // dep refers to leaf: the closure of dep is both.
    let leaf = DrvSpec::new("leaf", "echo leaf > $out").add_to(&host);
    let out = host.run(&["build", &host.print(&leaf)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dep = DrvSpec::new("dep", "echo $leaf > $out")
        .input("leaf", &leaf, "out", &host)
        .add_to(&host);
    let out = host.run(&["build", &host.print(&dep)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dep_out = outputs_of(&host, &dep)["out"].clone();
    let leaf_out = outputs_of(&host, &leaf)["out"].clone();
    let graph = format!("refs {}", host.print(&dep_out));
    let user = DrvSpec::new("user", "cp refs $out")
        .input("dep", &dep, "out", &host)
        .attr("exportReferencesGraph", graph.as_str())
        .add_to(&host);
    let out = host.run(&["build", &host.print(&user)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user_out = &outputs_of(&host, &user)["out"];
    // `nix-store --register-validity`'s format, derivers empty, in the
    // store's order (by hash part).
    let mut expected: Vec<(String, String)> = vec![
        (
            dep_out.base_name().to_owned(),
            format!("{}\n\n1\n{}\n", host.print(&dep_out), host.print(&leaf_out)),
        ),
        (
            leaf_out.base_name().to_owned(),
            format!("{}\n\n0\n", host.print(&leaf_out)),
        ),
    ];
    expected.sort();
    let expected: String = expected.into_iter().map(|(_, s)| s).collect();
    assert_eq!(text(&host.real(user_out)), expected);
    // A path outside the input closure is refused, with Nix's text.
    let stranger = DrvSpec::new("stranger", "echo > $out")
        .attr("exportReferencesGraph", graph.as_str())
        .add_to(&host);
    let out = host.run(&["build", &host.print(&stranger)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("because it is not in the input closure of the derivation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_sandbox_build_dir_holding_the_store_is_refused_with_nix_text() {
    if !root_or_skip("a_sandbox_build_dir_holding_the_store_is_refused_with_nix_text") {
        return;
    }
    let host = BuildHost::diverted("build-dir-over-store");
    host.conf("sandbox-build-dir = /nix");
    let drv = DrvSpec::new("over-store", "touch $out").add_to(&host);
    let out = host.run(&["build", &host.print(&drv)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The setting's fault, as Nix says it: not the derivation's.
    assert!(
        err.contains("error: `sandbox-build-dir` must not contain the storeDir"),
        "{err}"
    );
    assert!(!err.contains("error: derivation '"), "{err}");
}

#[test]
fn a_closed_stdout_ends_the_list_quietly_and_the_builds_finish() {
    if !root_or_skip("a_closed_stdout_ends_the_list_quietly_and_the_builds_finish") {
        return;
    }
    let host = BuildHost::diverted("build-closed-pipe");
    let drvs: Vec<_> = (0..3)
        .map(|i| DrvSpec::new(&format!("piped-{i}"), "sleep 0.5; echo $out > $out").add_to(&host))
        .collect();
    let printed: Vec<String> = drvs.iter().map(|d| host.print(d)).collect();
    let mut args = vec!["build", "-j", "1"];
    args.extend(printed.iter().map(String::as_str));
    // `hermetic build … | head -0`: the reader is gone before the first
    // output path is printed.
    let mut child = host
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    let store = host.store();
    for drv in &drvs {
        let output = &outputs_of(&host, drv)["out"];
        assert!(store.is_valid(output).unwrap(), "{}", host.print(output));
    }
}

#[test]
fn build_takes_outputs_paths_and_out_links_as_nix_users_type_them() {
    if !root_or_skip("build_takes_outputs_paths_and_out_links_as_nix_users_type_them") {
        return;
    }
    let host = BuildHost::diverted("build-targets");
    let multi = DrvSpec::new("multi", "echo out > $out; echo dev > $dev")
        .attr("outputs", "out dev")
        .add_outputs(&["out", "dev"], &host);
    let single = DrvSpec::new("single", "echo single > $out").add_to(&host);
    let links = hermetic_tests::TempDir::new("build-targets-links");
    let link = links.path.join("result");
    let run = |args: &[&str]| {
        let out = host.run(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };

    // Only the outputs named are printed, and linked as nix-build links.
    let (code, printed, said) = run(&[
        "build",
        "-o",
        link.to_str().unwrap(),
        &format!("{}^dev", host.print(&multi)),
        &host.print(&single),
    ]);
    assert_eq!(code, Some(0), "{said}");
    let outputs = outputs_of(&host, &multi);
    let single_out = &outputs_of(&host, &single)["out"];
    assert_eq!(
        printed,
        format!(
            "{}\n{}\n",
            host.print(&outputs["dev"]),
            host.print(single_out)
        )
    );
    let target = |name: &str| {
        std::fs::read_link(links.path.join(name))
            .map(|t| t.display().to_string())
            .unwrap_or_default()
    };
    assert_eq!(target("result-dev"), host.print(&outputs["dev"]));
    assert_eq!(target("result-2"), host.print(single_out));
    assert!(!links.path.join("result").exists());
    // The links are roots: what they name survives a collection.
    let (code, _, said) = run(&["store", "gc"]);
    assert_eq!(code, Some(0), "{said}");
    let store = host.store();
    assert!(store.is_valid(&outputs["dev"]).unwrap());
    assert!(store.is_valid(single_out).unwrap());
    assert!(
        !store.is_valid(&outputs["out"]).unwrap(),
        "not linked: collected"
    );
    drop(store);

    // `!` as `^`; an output path is made valid (here: it is), a missing
    // output or an unknown path refused in Nix's words.
    let (code, printed, said) = run(&["build", &format!("{}!out", host.print(&multi))]);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(printed, format!("{}\n", host.print(&outputs["out"])));
    let (code, printed, _) = run(&["build", &host.print(single_out)]);
    assert_eq!(
        (code, printed),
        (Some(0), format!("{}\n", host.print(single_out)))
    );
    let (code, _, said) = run(&["build", &format!("{}^lib", host.print(&multi))]);
    assert_eq!(code, Some(1));
    assert!(
        said.contains(&format!(
            "derivation '{}' does not have wanted outputs 'lib'",
            host.print(&multi)
        )),
        "{said}"
    );
    let missing = "/nix/store/00000000000000000000000000000000-missing";
    let (code, _, said) = run(&["build", missing]);
    assert_eq!(code, Some(1));
    assert!(
        said.contains(&format!(
            "path '{missing}' is required, but there is no substituter that can build it"
        )),
        "{said}"
    );
    // A store URI that is not a local store is refused, and no directory
    // is made for it; `daemon` is a daemon's socket, which must be there.
    let no_socket = links.path.join("no-such-socket");
    for (uri, says) in [
        (
            "daemon",
            format!(
                "cannot connect to socket at '{}': No such file or directory",
                no_socket.display()
            ),
        ),
        (
            "ssh://host",
            "don't know how to open Nix store 'ssh://host'".into(),
        ),
        ("weird", "don't know how to open Nix store 'weird'".into()),
    ] {
        let out = std::process::Command::new(hermetic_tests::hermetic())
            .args(["--store", uri, "build", &host.print(&multi)])
            .env("NIX_DAEMON_SOCKET_PATH", &no_socket)
            .current_dir(&links.path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(&says), "{}", stderr(&out));
    }
    let left: Vec<_> = std::fs::read_dir(&links.path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn a_terminal_gets_a_status_line_and_a_quiet_failure_its_last_lines() {
    if !root_or_skip("a_terminal_gets_a_status_line_and_a_quiet_failure_its_last_lines") {
        return;
    }
    let host = BuildHost::diverted("build-terminal");
    let ok = DrvSpec::new("on-a-tty", "echo said-on-a-tty; echo > $out").add_to(&host);
    // Through a terminal (`script` gives the command a pty): the builder's
    // line scrolls above a status line that counts the builds.
    if hermetic_tests::probes::host_tool_or_skip(
        "a_terminal_gets_a_status_line_and_a_quiet_failure_its_last_lines (the terminal)",
        "script",
    ) {
        status_line_on_a_terminal(&host, &ok);
    } else {
        let out = host.run(&["build", &host.print(&ok)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Off a terminal no escape sequence is written.
    let plain = host.run(&["build", "--check", &host.print(&ok)]);
    assert!(!stderr(&plain).contains('\u{1b}'), "{}", stderr(&plain));

    // With -Q the builder's output is not shown: a failure ends with its
    // last lines and the command that shows the whole log, as Nix's does.
    quiet_failure_ends_with_its_last_lines(&host);
}

/// `hermetic build` of `ok` through `script`: the status line and the
/// builder's line above it.
fn status_line_on_a_terminal(host: &BuildHost, ok: &hermetic_store::StorePath) {
    let command = host.command(&["build", &host.print(ok)]);
    let mut line = format!("{}", command.get_program().to_string_lossy());
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    let out = script.output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    for part in [
        "\r\x1b[K[0/1/1 built] building on-a-tty",
        "\r\x1b[Kon-a-tty> said-on-a-tty",
        "\r\x1b[K[1/0/1 built]",
    ] {
        assert!(shown.contains(part), "no {part:?} in {shown:?}");
    }
}

/// `hermetic build -Q` of a failing derivation: its last lines in the
/// error, as Nix prints them.
fn quiet_failure_ends_with_its_last_lines(host: &BuildHost) {
    let failing = DrvSpec::new(
        "quiet-failure",
        "for i in $(seq 1 12); do echo line-$i; done; exit 3",
    )
    .add_to(host);
    let out = host.run(&["build", "-Q", &host.print(&failing)]);
    assert_eq!(out.status.code(), Some(100));
    let said = stderr(&out);
    assert!(!said.contains("quiet-failure> "), "{said}");
    let drv = host.print(&failing);
    let expected = format!(
        "error: builder for '{drv}' failed with exit code 3;\n       last 10 log lines:\n       > line-3\n"
    );
    assert!(said.contains(&expected), "{said}");
    assert!(
        said.contains(&format!(
            "       > line-12\n       For full logs, run 'nix log {drv}'."
        )),
        "{said}"
    );
}

#[test]
fn sandbox_run_enters_the_sandbox_a_derivations_build_gets() {
    if !root_or_skip("sandbox_run_enters_the_sandbox_a_derivations_build_gets") {
        return;
    }
    let host = BuildHost::undiverted("build-enter");
    host.conf("extra-sandbox-paths = /bin/sh=/bin/busybox");
    let dep = DrvSpec::new("dep", "echo dep-contents > $out").add_to(&host);
    let out = host.run(&["build", &host.print(&dep)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // What a build sees, recorded by the build itself.
    let seen = "env | sort; id -u; cat $dep; echo /*";
    let recorder = DrvSpec::new("recorder", &format!("({seen}) > $out"))
        .input("dep", &dep, "out", &host)
        .attr("marker", "from-the-derivation")
        .add_to(&host);
    let out = host.run(&["build", &host.print(&recorder)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = text(&host.real(&outputs_of(&host, &recorder)["out"]));

    let sandbox_run = |args: &[&str]| {
        let out = host.sandbox_run().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let drv = host.print(&recorder);
    // The same command, entered: the same environment, build user, input
    // and root directory, byte for byte (the build user may differ: one
    // of the pool's).
    let (code, entered, said) = sandbox_run(&["--drv", &drv, "--", "/bin/sh", "-c", seen]);
    assert_eq!(code, Some(0), "{said}");
    let without_uid = |text: &str| -> Vec<String> {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let uid_line = lines.iter().position(|l| l.parse::<u32>().is_ok()).unwrap();
        assert!(lines[uid_line].parse::<u32>().unwrap() > 0, "{text}");
        lines
            .into_iter()
            .enumerate()
            .filter(|(n, _)| *n != uid_line)
            .map(|(_, l)| l)
            .collect()
    };
    assert_eq!(without_uid(&entered), without_uid(&recorded));
    assert!(entered.contains("marker=from-the-derivation"), "{entered}");
    assert!(entered.contains("dep-contents"), "{entered}");
    // The command's status is sandbox-run's; without a command the builder
    // runs; nothing is registered or left behind.
    let (code, _, _) = sandbox_run(&["--drv", &drv, "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(code, Some(7));
    let failing = DrvSpec::new("failing", "echo the-builder-ran; exit 3").add_to(&host);
    let (code, entered, said) = sandbox_run(&["--drv", &host.print(&failing)]);
    assert_eq!(code, Some(3), "{said}");
    assert_eq!(entered, "the-builder-ran\n");
    let store = host.store();
    assert!(!store.is_valid(&outputs_of(&host, &failing)["out"]).unwrap());
    drop(store);
    let stray: Vec<String> = std::fs::read_dir(host.dir.path.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".links" || n.ends_with("-hermetic-stage"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // What is not a derivation in the store is refused, clearly.
    let (code, _, said) = sandbox_run(&["--drv", "/nonexistent.drv"]);
    assert_eq!(code, Some(125), "{said}");
    assert!(said.contains("is not a derivation in the store"), "{said}");
}

/// `hermetic build --keep-failed` prints the one command that enters the
/// failed build's sandbox again, and that command gives it the kept
/// `/build`, `/tmp` and partial output as the build left them (issue 19,
/// point 6); what is done there stays kept.
#[test]
fn a_kept_failed_build_is_entered_again_as_it_was_left() {
    if !root_or_skip("a_kept_failed_build_is_entered_again_as_it_was_left") {
        return;
    }
    let host = BuildHost::diverted("build-reenter");
    // The build fails as a member of one group and is entered as one of
    // another: what it left is given to the user who enters.
    host.conf("extra-sandbox-paths = /bin/sh=/bin/busybox\nbuild-users-group = hermetic-pair");
    let failing = DrvSpec::new(
        "half-done",
        "echo in-build > marker; echo in-tmp > /tmp/marker; mkdir $out; \
         echo partial > $out/partial; exit 5",
    )
    .add_to(&host);
    let drv = host.print(&failing);
    let out = host.run(&["build", "--keep-failed", &drv]);
    assert!(!out.status.success());
    let said = stderr(&out);
    let line = said
        .lines()
        .find_map(|l| l.strip_prefix("note: to enter its sandbox as the build left it: "))
        .unwrap_or_else(|| panic!("no command to enter it again: {said}"));
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words[0], "sandbox-run", "{line}");
    assert_eq!(words.last(), Some(&"--shell"), "{line}");
    let root = host.dir.path.join("root").display().to_string();
    assert!(
        line.contains(&format!("--store {root} --drv {drv} --kept ")),
        "{line}"
    );
    let out_path = host.print(&outputs_of(&host, &failing)["out"]);
    let enter = |script: &str| {
        let out = host
            .sandbox_run()
            .args(&words[1..words.len() - 1])
            .args(["--option", "build-users-group", "nixbld"])
            .args(["--", "/bin/sh", "-c", script])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    let (code, seen, said) = enter(&format!(
        "cat /build/marker /tmp/marker {out_path}/partial; pwd; echo again > /build/second; \
         echo more >> /build/marker && echo more >> /tmp/marker && echo more >> {out_path}/partial"
    ));
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(seen, "in-build\nin-tmp\npartial\n/build\n");
    // Kept again: the next entry sees what this one wrote.
    let (code, seen, said) = enter("cat /build/second /build/marker");
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(seen, "again\nin-build\nmore\n");
    // Nothing was registered; a directory that is not a kept one is refused.
    assert!(
        !host
            .store()
            .is_valid(&outputs_of(&host, &failing)["out"])
            .unwrap()
    );
    let kept_at = words[words.len() - 2];
    let out = host
        .sandbox_run()
        .args([
            "--store",
            &root,
            "--drv",
            &drv,
            "--kept",
            &format!("{kept_at}/build"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("is not what a failed build kept"),
        "{}",
        stderr(&out)
    );
}
