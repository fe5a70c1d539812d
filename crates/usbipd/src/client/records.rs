//! Where each attached port came from: `/var/run/vhci_hcd/port<N>` holding `host port busid`,
//! the file Linux's `usbip attach` writes and `usbip port` reads, so either tool shows either's
//! imports. Best effort: the kernel's `status` stays the truth about what is attached.

use std::path::PathBuf;

use serde::Serialize;

const DIR: &str = "/var/run/vhci_hcd";

/// The remote end of an attached port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub host: String,
    pub port: String,
    pub busid: String,
}

fn path(port: u32) -> PathBuf {
    PathBuf::from(DIR).join(format!("port{port}"))
}

/// The file's text for `origin`.
pub fn format(origin: &Origin) -> String {
    format!("{} {} {}\n", origin.host, origin.port, origin.busid)
}

/// Parses the file's text.
pub fn parse(text: &str) -> Option<Origin> {
    let mut words = text.split_whitespace();
    let origin = Origin {
        host: words.next()?.to_string(),
        port: words.next()?.to_string(),
        busid: words.next()?.to_string(),
    };
    words.next().is_none().then_some(origin)
}

/// Records where `port`'s device came from; failure only costs `port` its remote column.
pub fn save(port: u32, origin: &Origin) {
    let result =
        std::fs::create_dir_all(DIR).and_then(|()| std::fs::write(path(port), format(origin)));
    if let Err(e) = result {
        tracing::debug!("cannot record port {port} in {DIR}: {e}");
    }
}

pub fn load(port: u32) -> Option<Origin> {
    parse(&std::fs::read_to_string(path(port)).ok()?)
}

pub fn remove(port: u32) {
    let _ = std::fs::remove_file(path(port));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_usbips_format() {
        let o = Origin {
            host: "10.0.2.2".into(),
            port: "3240".into(),
            busid: "1-1.2".into(),
        };
        assert_eq!(format(&o), "10.0.2.2 3240 1-1.2\n");
        assert_eq!(parse(&format(&o)), Some(o));
        assert_eq!(parse("10.0.2.2 3240\n"), None);
        assert_eq!(parse("a b c d"), None);
    }
}
