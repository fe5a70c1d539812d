//! Linux leaves: the usbfs privilege self-check, peer credentials of a Unix socket, and the
//! kernel's uevent socket (hotplug).

pub mod device_facts;
pub mod peer;
pub mod privileges;
pub mod uevent;

pub use peer::peer_cred;
pub use privileges::missing_privileges;
