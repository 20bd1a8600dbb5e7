//! What ships beside the binary: man pages (current with the CLI), shell completions, the
//! systemd unit.

use std::path::Path;

use crate::support::{run, stderr, stdout, Env};

/// The verbs of the command line, as `pcsaga --help` lists them.
fn verbs() -> Vec<String> {
    let env = Env::new();
    let help = stdout(&run(env.pcsaga(None).arg("--help")));
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .expect("--help lists the commands");
    commands
        .lines()
        // A verb's line is indented two spaces; its wrapped description, more.
        .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|verb| *verb != "help" && verb.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_man_pages_in_the_repository_are_current() {
    let env = Env::new();
    let out = env.dir.path().join("man");
    let output = run(env.pcsaga(None).args(["man", "--out-dir"]).arg(&out));
    assert!(output.status.success(), "{}", stderr(&output));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let fix = "regenerate them: `cargo run -- man --out-dir man`, and commit man/";
    assert_eq!(
        names(&out),
        names(&committed),
        "the man pages' set changed; {fix}"
    );
    for name in names(&out) {
        let fresh = std::fs::read_to_string(out.join(&name)).expect("generated");
        let kept = std::fs::read_to_string(committed.join(&name)).expect("committed");
        assert!(fresh == kept, "man/{name} is stale; {fix}");
    }
    // One page per verb, and the verbs' pages carry the global options.
    for verb in verbs() {
        assert!(
            committed.join(format!("pcsaga-{verb}.1")).exists(),
            "no man page for `pcsaga {verb}`"
        );
    }
    let daemon = std::fs::read_to_string(committed.join("pcsaga-daemon.1")).expect("page");
    assert!(
        daemon.contains(r"\-\-listen") && daemon.contains(r"\-\-db"),
        "{daemon}"
    );
}

#[test]
fn completions_cover_every_verb_and_bash_accepts_its_script() {
    let env = Env::new();
    let verbs = verbs();
    assert!(
        verbs.len() >= 20 && verbs.iter().any(|v| v == "console"),
        "{verbs:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let output = run(env.pcsaga(None).args(["completions", shell]));
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for verb in &verbs {
            assert!(
                script.contains(verb.as_str()),
                "{shell} completion lacks `{verb}`"
            );
        }
        if shell == "bash" {
            let path = env.write("pcsaga.bash", &script);
            let checked = run(std::process::Command::new("bash").arg("-n").arg(&path));
            assert!(checked.status.success(), "bash -n: {}", stderr(&checked));
        }
    }
    let refused = run(env.pcsaga(None).args(["completions", "powershell"]));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `systemd-analyze verify` on the unit, where the machine has systemd-analyze (Debian's
/// systemd package; the CI machines do). The unit names /usr/local/bin/pcsaga; the check runs
/// on a copy that names the binary under test, which must exist and be executable.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pcsaga.service"),
    )
    .expect("contrib/pcsaga.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/pcsaga "), "{unit}");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let Ok(found) = which("systemd-analyze") else {
        eprintln!(
            "systemd-analyze is not on this machine: the unit's text was checked, not verified"
        );
        return;
    };
    let env = Env::new();
    let copy = env.write(
        "pcsaga.service",
        &unit.replace("/usr/local/bin/pcsaga", env!("CARGO_BIN_EXE_pcsaga")),
    );
    let output = run(std::process::Command::new(found)
        .args(["verify", "--man=no"])
        .arg(&copy));
    assert!(
        output.status.success() && stderr(&output).trim().is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&output),
        stderr(&output)
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
