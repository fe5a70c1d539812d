//! The crate's dependency rule, checked: every module imports only from the modules below it.
//!
//! `LAYERS` lists the top-level modules of `src/` from the top (the command line) to the
//! bottom (the platform leaves); a file may name `crate::m` only for an `m` further down the
//! list than its own module. The order is the one ARCHITECTURE.md draws: cli, then the daemon
//! and the extension, then the server and IPC, then the device model, with the platform leaves
//! at the bottom. A module missing from the list fails the test, so a new one gets a place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. Each may use only the ones after it.
const LAYERS: &[&str] = &[
    // The command line.
    "cli",
    // The Mac side of `usbipd attach --lima/--docker` (commands run in a VM); the VM-side client.
    "vm",
    "client",
    // The daemon, its control socket and activation.
    "control",
    "listing",
    "activation",
    // The extension, and the daemon's own exports (fallback mode, virtual devices).
    "extension",
    "devices",
    "host_exports",
    "bindings",
    "config",
    // The IPC protocol and the TCP server.
    "ipc",
    "server",
    // USB/IP in TLS: keys, trust, pairing, rustls configuration, relay and kernel TLS.
    "tls",
    // Packet capture of the server's URBs (pcapng).
    "capture",
    // The device model (virtual and host devices).
    "device",
    // Leaves: files on disk, and the OS calls.
    "persist",
    "platform",
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names through `crate::`, outside comments.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
            rest = tail;
        }
    }
    used
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);

    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no place in LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&text) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(r) if r > own => {}
                Some(_) => wrong.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is not below it",
                    relative.display()
                )),
                None => wrong.push(format!(
                    "{}: uses `crate::{used}`, which has no place in LAYERS",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::device::Device;\n// crate::cli in a comment\nlet x = crate::server::f(); // crate::ipc\n";
    let used: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(used, ["device", "server"]);
}
