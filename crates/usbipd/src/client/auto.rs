//! `--auto` as a pure state machine: what to do after each event (attached, attach failed, port
//! freed, terminate), with capped exponential backoff between failed attaches. The loop that
//! performs the actions is `supervise.rs`.

use std::time::Duration;

use super::status::{Port, PortState};

/// The first retry after a device was lost is immediate; then 250 ms doubling up to the cap.
pub const BACKOFF_STEP: Duration = Duration::from_millis(250);
pub const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// How long to wait before attach attempt number `failures + 1`.
pub fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => BACKOFF_STEP
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(BACKOFF_CAP),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not attached; `failures` attaches failed in a row.
    Detached {
        failures: u32,
    },
    Attached {
        port: u32,
        devid: u32,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    AttachOk {
        port: u32,
        devid: u32,
    },
    AttachFailed,
    /// The kernel no longer has our device on the port (device gone, connection lost).
    PortFree,
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AttachAfter(Duration),
    /// Watch the port until it is free.
    Watch {
        port: u32,
        devid: u32,
    },
    Detach {
        port: u32,
    },
    Exit,
}

/// The start: attach at once.
pub fn start() -> (Phase, Action) {
    (
        Phase::Detached { failures: 0 },
        Action::AttachAfter(backoff(0)),
    )
}

/// The next phase and what to do, after `event` in `phase`.
pub fn next(phase: Phase, event: Event) -> (Phase, Action) {
    match (phase, event) {
        (Phase::Done, _) => (Phase::Done, Action::Exit),
        (Phase::Attached { port, .. }, Event::Terminate) => (Phase::Done, Action::Detach { port }),
        (_, Event::Terminate) => (Phase::Done, Action::Exit),
        (Phase::Detached { .. }, Event::AttachOk { port, devid }) => (
            Phase::Attached { port, devid },
            Action::Watch { port, devid },
        ),
        (Phase::Detached { failures }, Event::AttachFailed) => {
            let failures = failures.saturating_add(1);
            (
                Phase::Detached { failures },
                Action::AttachAfter(backoff(failures)),
            )
        }
        (Phase::Attached { .. }, Event::PortFree) => start(),
        // Events that cannot happen in the phase change nothing.
        (Phase::Attached { port, devid }, _) => (
            Phase::Attached { port, devid },
            Action::Watch { port, devid },
        ),
        (Phase::Detached { failures }, Event::PortFree) => (
            Phase::Detached { failures },
            Action::AttachAfter(backoff(failures)),
        ),
    }
}

/// Whether `port` still carries the device with `devid`: in use with that devid, or still
/// being attached (the kernel shows devid 0 until the device has its address). A port that is
/// free, failing, or holds another device (someone attached there after ours went) is not
/// ours any more.
pub fn still_ours(ports: &[Port], port: u32, devid: u32) -> bool {
    ports.iter().any(|p| {
        p.port == port
            && match p.state {
                PortState::NotAssigned => true,
                PortState::Used => p.devid == devid,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::status::parse_status;

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, vec![0, 250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn a_lost_device_is_attached_again_and_failures_back_off() {
        let (p, a) = start();
        assert_eq!(a, Action::AttachAfter(Duration::ZERO));
        let (p, a) = next(p, Event::AttachOk { port: 2, devid: 7 });
        assert_eq!(a, Action::Watch { port: 2, devid: 7 });
        // the server went away: the kernel freed the port
        let (p, a) = next(p, Event::PortFree);
        assert_eq!(p, Phase::Detached { failures: 0 });
        assert_eq!(a, Action::AttachAfter(Duration::ZERO));
        // it is not back yet
        let (p, a) = next(p, Event::AttachFailed);
        assert_eq!(a, Action::AttachAfter(Duration::from_millis(250)));
        let (p, a) = next(p, Event::AttachFailed);
        assert_eq!(a, Action::AttachAfter(Duration::from_millis(500)));
        // back: attached on another port; a later loss starts the backoff from zero again
        let (p, a) = next(p, Event::AttachOk { port: 0, devid: 9 });
        assert_eq!(a, Action::Watch { port: 0, devid: 9 });
        let (p, _) = next(p, Event::PortFree);
        let (_, a) = next(p, Event::AttachFailed);
        assert_eq!(a, Action::AttachAfter(Duration::from_millis(250)));
    }

    #[test]
    fn terminate_detaches_what_is_attached_then_exits() {
        let (p, _) = next(start().0, Event::AttachOk { port: 3, devid: 1 });
        let (p, a) = next(p, Event::Terminate);
        assert_eq!((p, a), (Phase::Done, Action::Detach { port: 3 }));
        assert_eq!(
            next(p, Event::AttachOk { port: 1, devid: 1 }).1,
            Action::Exit
        );
        let detached = Phase::Detached { failures: 4 };
        assert_eq!(
            next(detached, Event::Terminate),
            (Phase::Done, Action::Exit)
        );
    }

    #[test]
    fn the_port_is_ours_while_it_holds_our_devid() {
        let status = "hub port sta spd dev      sockfd local_busid\n\
                      hs  0000 006 003 00000007 000003 3-1\n\
                      hs  0001 004 000 00000000 000000 0-0\n\
                      hs  0002 007 003 00000009 000004 3-2\n\
                      hs  0003 005 000 00000000 000000 0-0\n";
        let ports = parse_status(status).unwrap();
        assert!(still_ours(&ports, 0, 7));
        assert!(!still_ours(&ports, 0, 8), "another device took the port");
        assert!(!still_ours(&ports, 1, 7), "free");
        assert!(
            !still_ours(&ports, 2, 9),
            "error state: the kernel is tearing it down"
        );
        assert!(
            still_ours(&ports, 3, 7),
            "being attached: the kernel prints devid 0 until the device is addressed (6.1)"
        );
        assert!(!still_ours(&[], 0, 7));
    }
}
