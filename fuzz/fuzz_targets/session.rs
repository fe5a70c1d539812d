//! A whole connection against an in-process server with virtual devices (gadget zero, keyboard,
//! disk). Input: a mode byte (bits 0-1: 0, the bytes are the handshake; 1..3, import device
//! 0-1..0-3 first, the bytes are URB traffic with devids 1..3; bit 2: the server with tight
//! limits), then the bytes. Checks: no panic in any
//! server task or device, every connection ends after the client's FIN, and the server still
//! answers a device list listing every device.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    usbipd_fuzz::server::run(input);
});
