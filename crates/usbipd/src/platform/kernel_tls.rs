//! Kernel TLS where the kernel has it (Linux, `linux/kernel_tls.rs`); elsewhere a refusal that
//! says why, so the client relays through user space instead.

#[cfg(target_os = "linux")]
pub use super::linux::kernel_tls::{set_keys, start_ulp};

#[cfg(not(target_os = "linux"))]
mod unavailable {
    use std::os::fd::AsFd;

    use rustls::ConnectionTrafficSecrets;

    pub fn start_ulp(_socket: &impl AsFd) -> Result<(), String> {
        Err("kernel TLS is a Linux feature".into())
    }

    pub fn set_keys(
        _socket: &impl AsFd,
        _tx: (u64, ConnectionTrafficSecrets),
        _rx: (u64, ConnectionTrafficSecrets),
    ) -> anyhow::Result<()> {
        anyhow::bail!("kernel TLS is a Linux feature")
    }
}
#[cfg(not(target_os = "linux"))]
pub use unavailable::{set_keys, start_ulp};
