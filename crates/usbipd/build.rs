//! The one compile-time platform fact the code above `src/platform/` needs: whether this OS has
//! a host USB backend (nusb on Linux usbfs and macOS IOKit). It sets `cfg(host_usb)`, so the
//! host-device code is gated by what it needs rather than by OS names; every other OS switch
//! is in `src/platform/mod.rs` (checked by `tests/layering.rs`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(host_usb)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "macos" {
        println!("cargo::rustc-cfg=host_usb");
    }
}
