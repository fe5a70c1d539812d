//! The crate's dependency rule, checked: every module imports only from the modules below it.
//!
//! `LAYERS` lists the top-level modules of `src/` from the top (the command line) to the
//! bottom (the platform leaves); a file may name `crate::m` only for an `m` further down the
//! list than its own module. The order is the one ARCHITECTURE.md draws: cli, then the daemon
//! and the extension, then the server and IPC, then the device model, with the platform leaves
//! at the bottom. A module missing from the list fails the test, so a new one gets a place.
//!
//! And the platform rule: `target_os` is named only under `src/platform/` (and in `build.rs`,
//! which sets `cfg(host_usb)`); everything above asks `platform` instead. Test modules at the
//! end of a file (`#[cfg(test)] mod tests {`) may name it for tests only one OS can run.

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

/// `src/` and its Rust files, sorted.
fn crate_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    (src, files)
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
    let (src, files) = crate_sources();
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

/// Files above `platform/` that still switch on `target_os`, each with why; the list only
/// shrinks. A file that no longer names it must leave the list (the test says so).
const TARGET_OS_NOT_YET_MOVED: &[(&str, &str)] = &[];

/// The product code of a Rust file: up to a trailing `#[cfg(test)] mod tests {` block.
fn product_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests {"))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn target_os_is_named_only_under_platform() {
    let (src, files) = crate_sources();
    let mut wrong = Vec::new();
    let mut moved = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative.starts_with("platform") {
            continue;
        }
        let name = relative.to_string_lossy().replace('\\', "/");
        let names_it = product_code(&std::fs::read_to_string(file).unwrap()).contains("target_os");
        let allowed = TARGET_OS_NOT_YET_MOVED.iter().any(|(f, _)| *f == name);
        match (names_it, allowed) {
            (true, false) => wrong.push(name),
            (false, true) => moved.push(name),
            _ => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "`target_os` outside src/platform/ (ask crate::platform instead):\n{}",
        wrong.join("\n")
    );
    assert!(
        moved.is_empty(),
        "no longer name `target_os`; take them off TARGET_OS_NOT_YET_MOVED:\n{}",
        moved.join("\n")
    );
}

#[test]
fn the_product_code_ends_at_the_trailing_test_module() {
    let text = "#[cfg(target_os = \"linux\")]\nfn a() {}\n// target_os in a comment\n#[cfg(test)]\nmod tests {\n    #[cfg(target_os = \"linux\")]\n}\n";
    let code = product_code(text);
    assert_eq!(code.matches("target_os").count(), 1, "{code}");
    // A `#[cfg(test)]` item that is not the test module does not end the product code.
    let text = "#[cfg(test)]\nmod double;\n#[cfg(target_os = \"macos\")]\nfn b() {}\n";
    assert!(product_code(text).contains("target_os"));
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::device::Device;\n// crate::cli in a comment\nlet x = crate::server::f(); // crate::ipc\n";
    let used: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(used, ["device", "server"]);
}
