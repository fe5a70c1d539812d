//! The systemd unit that runs `usbipd client attach ... --auto` as a service in the VM
//! (`usbipd client service-file`). Pure: the text from the executable and the arguments.

use std::path::Path;

use super::remote::Selector;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{0:?}: only letters, digits and . : - _ [ ] may go into the unit")]
    Unsafe(String),
    #[error("the executable must be an absolute path without spaces: {0}")]
    Exe(String),
}

/// Refuses what could change the meaning of the unit's ExecStart= line.
fn plain(word: &str) -> Result<&str, UnitError> {
    let ok = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-_[]".contains(c));
    if ok {
        Ok(word)
    } else {
        Err(UnitError::Unsafe(word.to_string()))
    }
}

/// The unit's name for a selection: `usbipd-client-<busid or vid-pid>.service`.
pub fn unit_name(selector: &Selector) -> String {
    match selector {
        Selector::Busid(b) => format!("usbipd-client-{b}.service"),
        Selector::HardwareId { vid, pid } => format!("usbipd-client-{vid:04x}-{pid:04x}.service"),
    }
}

pub fn unit(exe: &Path, remote: &str, selector: &Selector) -> Result<String, UnitError> {
    let exe_text = exe.to_string_lossy();
    if !exe.is_absolute() || exe_text.chars().any(|c| c.is_whitespace() || c == '%') {
        return Err(UnitError::Exe(exe_text.into_owned()));
    }
    let which = match selector {
        Selector::Busid(b) => format!("--busid {}", plain(b)?),
        Selector::HardwareId { vid, pid } => format!("--hardware-id {vid:04x}:{pid:04x}"),
    };
    let remote = plain(remote)?;
    Ok(format!(
        "[Unit]\n\
         Description=usbipd client: keep {selector} from {remote} attached\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         ExecStartPre=-/sbin/modprobe vhci-hcd\n\
         ExecStart={exe_text} client attach --remote {remote} {which} --auto\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_auto_attach() {
        let sel = Selector::HardwareId {
            vid: 0x1209,
            pid: 1,
        };
        let text = unit(
            Path::new("/usr/local/bin/usbipd"),
            "host.lima.internal",
            &sel,
        )
        .unwrap();
        assert!(text.contains(
            "\nExecStart=/usr/local/bin/usbipd client attach --remote host.lima.internal --hardware-id 1209:0001 --auto\n"
        ));
        assert!(text.contains("\nWantedBy=multi-user.target\n"));
        assert_eq!(unit_name(&sel), "usbipd-client-1209-0001.service");
        let by_busid = Selector::Busid("1-1.2".into());
        assert!(unit(Path::new("/bin/usbipd"), "[fe80::1]:3240", &by_busid)
            .unwrap()
            .contains("--remote [fe80::1]:3240 --busid 1-1.2 --auto"));
    }

    #[test]
    fn nothing_can_smuggle_lines_or_words_into_the_unit() {
        let exe = Path::new("/bin/usbipd");
        let evil = Selector::Busid("1-1\nExecStartPost=/bin/sh".into());
        assert!(matches!(unit(exe, "h", &evil), Err(UnitError::Unsafe(_))));
        let b = Selector::Busid("1-1".into());
        assert!(unit(exe, "h --busid 2-2", &b).is_err());
        assert!(unit(Path::new("usbipd"), "h", &b).is_err());
        assert!(unit(Path::new("/opt/my bin/usbipd"), "h", &b).is_err());
    }
}
