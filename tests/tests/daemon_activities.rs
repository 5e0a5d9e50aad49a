//! A build's progress on the daemon's stderr channel as Nix's daemon sends
//! it: structured activities for clients of protocol 1.20 and later (what
//! `nix build`'s progress bar counts), plain lines for older ones, and a
//! failed builder's error ending with its last `log-lines` lines.

use hermetic_tests::daemon::{Daemon, RawClient, output_text as text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::root_or_skip;

/// A derivation printing `line-1` … `line-12` and exiting 3, instantiated
/// in the daemon's store; its printed path.
fn failing_drv(nix: &NixPeer, daemon: &Daemon) -> String {
    let file = daemon.write_expr(
        "chatty",
        r#"derivation { name = "chatty"; system = "x86_64-linux"; builder = "/bin/sh";
             args = ["-c" "i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo line-$i; done; exit 3"]; }"#,
    );
    let out = nix
        .command("nix-instantiate")
        .args(["--store", &daemon.url(), file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// BuildPaths of `drv` (its `out`) from a client of protocol `version`;
/// what the channel said and the error.
fn build(daemon: &Daemon, version: u64, drv: &str) -> (Vec<String>, String) {
    let mut client = RawClient::connect_as(daemon, version, &[]);
    client.said.clear();
    client.u64(9); // BuildPaths
    let target = if version & 0xff >= 30 {
        format!("{drv}!out")
    } else {
        drv.to_owned()
    };
    client.strings(&[&target]);
    client.u64(0); // normal
    let error = client.work().unwrap_err();
    (client.said, error)
}

#[test]
fn a_build_is_an_activity_with_its_lines_and_its_error_ends_with_the_last_ones() {
    if !root_or_skip("a_build_is_an_activity_with_its_lines_and_its_error_ends_with_the_last_ones")
    {
        return;
    }
    let Some(nix) = NixPeer::or_skip("daemon_activities", "substituters =\n") else {
        return;
    };
    let daemon = Daemon::start("daemon-activities", "");
    let drv = failing_drv(&nix, &daemon);

    // Nix 2.8's protocol: the operation's builds, the build under them,
    // each line a result of the build, the progress counted, both stopped.
    let (said, error) = build(&daemon, (1 << 8) | 34, &drv);
    let mut expected = vec![
        "start 104:  []".to_owned(),
        format!("start 105 child: building '{drv}' [\"{drv}\", \"\", \"1\", \"1\"]"),
        r#"result 105: ["0", "1", "1", "0"]"#.to_owned(),
    ];
    expected.extend((1..=12).map(|i| format!("result 101: [\"line-{i}\"]")));
    expected.extend([
        "stop".to_owned(),
        r#"result 105: ["0", "1", "0", "1"]"#.to_owned(),
        "stop".to_owned(),
    ]);
    assert_eq!(said, expected);
    let mut tail = format!("builder for '{drv}' failed with exit code 3;\nlast 10 log lines:\n");
    for i in 3..=12 {
        tail.push_str(&format!("> line-{i}\n"));
    }
    tail.push_str(&format!("For full logs, run 'nix log {drv}'."));
    assert_eq!(error, tail);

    // A client older than activities (1.19) gets lines, the builder's
    // named by its derivation.
    let (said, _) = build(&daemon, (1 << 8) | 19, &drv);
    assert_eq!(said[0], format!("next: building '{drv}'"));
    assert_eq!(said[1], "next: chatty> line-1");
    assert!(said.iter().all(|s| s.starts_with("next: ")), "{said:?}");

    // Nix 2.8's nix-build prints the lines as its own daemon's activities
    // make it, the error once, with the tail.
    let out = nix
        .command("nix-build")
        .args(["--store", &daemon.url(), &drv, "--no-out-link"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains(&format!("building '{drv}'...")), "{said}");
    assert!(said.lines().any(|l| l == "line-1"), "{said}");
    assert_eq!(said.matches("failed with exit code 3").count(), 1, "{said}");
    assert!(said.contains("last 10 log lines:"), "{said}");
    assert!(said.contains("> line-3\n"), "{said}");
}
