//! Linux leaves: the usbfs privilege self-check, peer credentials of a Unix socket, the
//! kernel's uevent socket (hotplug) and kernel TLS on a TCP socket.

pub mod device_facts;
pub mod kernel_tls;
pub mod peer;
pub mod privileges;
pub mod uevent;

pub use peer::peer_cred;
pub use privileges::missing_privileges;
