//! What the command line tells about itself, through the real binary: shell completions and man
//! pages cover every command, and the logging flags steer the log.

use std::io::BufRead;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use usbipd::cli::Cli;

const BIN: &str = env!("CARGO_BIN_EXE_usbipd");

/// Every visible command, as its path of names: ["bind"], ["extension", "run"], ...
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

#[test]
fn completions_name_every_command_in_each_shell() {
    let paths = command_paths();
    assert!(
        paths.iter().any(|p| p == &["extension", "run"]),
        "{paths:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        for path in &paths {
            let name = path.last().unwrap();
            assert!(
                script.contains(name.as_str()),
                "{shell} completion lacks {path:?}"
            );
        }
        // Options too, global ones included.
        assert!(
            script.contains("busid") && script.contains("log-level"),
            "{shell}"
        );
    }
    let bad = Command::new(BIN)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn a_man_page_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("manpages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<String> = command_paths()
        .iter()
        .map(|p| format!("usbipd-{}.1", p.join("-")))
        .collect();
    expected.push("usbipd.1".into());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    let bind = std::fs::read_to_string(dir.path().join("usbipd-bind.1")).unwrap();
    assert!(
        bind.starts_with(".ie") || bind.contains(".TH usbipd-bind 1"),
        "{bind}"
    );
    assert!(bind.contains("busid"), "{bind}");
}

/// `--log-format json --log-level warn`: the server's first log line is the JSON object of its
/// warning about listening beyond loopback, none of its info lines before it; without the
/// flags, text at info.
#[test]
fn log_flags_steer_level_and_format() {
    let dir = tempfile::tempdir().unwrap();
    // Devices without a fixed TCP port (the demo serial port's 3250 may be taken here).
    let config = dir.path().join("usbipd.toml");
    std::fs::write(
        &config,
        "[[device]]\nkind = \"keyboard\"\n[[device]]\nkind = \"loopback\"\n",
    )
    .unwrap();
    let first_lines = |flags: &[&str], listen: &str, n: usize| -> Vec<String> {
        let mut child = Command::new(BIN)
            .args(flags)
            .args([
                "server",
                "--listen",
                listen,
                "--extension",
                "off",
                "--no-host",
            ])
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .arg("--state-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Read on a thread, so that a server printing fewer lines fails the test, not hangs it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        while lines.len() < n {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(lines.len(), n, "the server printed fewer lines: {lines:?}");
        lines
    };
    let json = first_lines(
        &["--log-format", "json", "--log-level", "warn"],
        "0.0.0.0:0",
        1,
    );
    let v: serde_json::Value =
        serde_json::from_str(&json[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", json[0]));
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(
        v["fields"]["message"].as_str().unwrap().contains("--allow"),
        "{v}"
    );
    let text = first_lines(&[], "127.0.0.1:0", 3);
    assert!(
        text.iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{text:?}"
    );
    assert!(text.iter().all(|l| l.contains("INFO")), "{text:?}");
}
