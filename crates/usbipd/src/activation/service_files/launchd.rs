//! The launchd daemon plists (/Library/LaunchDaemons), keys as launchd.plist(5) documents them:
//! the extension (`<exe> extension run`) and the daemon (`<exe> server`, what `sudo brew
//! services start usbipd` installs), both run as root at load, kept alive by launchd
//! (restarted after a crash, at most once per `ThrottleInterval`), `ProcessType` Interactive
//! (USB traffic must not be throttled as background work). Their logs go to the unified log;
//! `StandardErrorPath` catches what is written before that starts (and a panic).
//!
//! It must never emit unescaped text: every string goes through `escape`.

use std::path::Path;

use super::{DAEMON_LABEL, DAEMON_LOG, LAUNCHD_LABEL, LAUNCHD_LOG};

/// One launchd job, as the plist says it.
struct Job<'a> {
    label: &'a str,
    program_arguments: Vec<String>,
    /// Seconds launchd waits before starting it again (launchd.plist(5): default 10).
    throttle_interval: u32,
    stderr_path: &'a str,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn render(job: &Job<'_>) -> String {
    let args: String = job
        .program_arguments
        .iter()
        .map(|a| format!("\t\t<string>{}</string>\n", escape(a)))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{label}</string>
	<key>ProgramArguments</key>
	<array>
{args}	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<true/>
	<key>ThrottleInterval</key>
	<integer>{throttle}</integer>
	<key>ProcessType</key>
	<string>Interactive</string>
	<key>StandardErrorPath</key>
	<string>{log}</string>
</dict>
</plist>
"#,
        label = escape(job.label),
        throttle = job.throttle_interval,
        log = escape(job.stderr_path),
    )
}

/// The extension's plist for the executable `exe`: restarted 2 s after a crash, because its
/// claims are back with the kernel drivers until it runs again.
pub fn plist(exe: &Path) -> String {
    render(&Job {
        label: LAUNCHD_LABEL,
        program_arguments: vec![
            exe.to_string_lossy().into_owned(),
            "extension".into(),
            "run".into(),
        ],
        throttle_interval: 2,
        stderr_path: LAUNCHD_LOG,
    })
}

/// The daemon's plist for the executable `exe` (`usbipd server` with its configuration file),
/// equal in its keys to the one the Homebrew formula's `service` block makes.
pub fn daemon_plist(exe: &Path) -> String {
    render(&Job {
        label: DAEMON_LABEL,
        program_arguments: vec![exe.to_string_lossy().into_owned(), "server".into()],
        throttle_interval: 10,
        stderr_path: DAEMON_LOG,
    })
}
