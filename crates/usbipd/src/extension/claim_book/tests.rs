//! The claim book's transitions, without a bus, a file or a runtime: the handle is a string
//! and a session a number.

use super::*;

type Book = ClaimBook<&'static str, u32>;

fn dev(busid: &str, serial: Option<&str>) -> BusDevice {
    BusDevice {
        busid: busid.into(),
        vid: 0x1234,
        pid: 0x5678,
        serial: serial.map(Into::into),
        driver: Some("usbhid".into()),
    }
}

use crate::extension::claims::sample_record as record;

/// A book with 1-2 and 1-3 bound, both claiming.
fn two_claiming() -> Book {
    let mut book = Book::new();
    let present = [dev("1-2", None), dev("1-3", None)];
    book.bind("1-2", &present).unwrap();
    book.bind("1-3", &present).unwrap();
    book
}

fn state(book: &Book, busid: &str) -> Option<SlotState> {
    book.get(busid).map(|s| s.state)
}

#[test]
fn bind_takes_a_present_unbound_device_only() {
    let mut book = Book::new();
    let present = [dev("1-2", Some("A")), dev("1-3", None)];
    let r = book.bind("1-2", &present).unwrap();
    assert_eq!(r, record("1-2", Some("A"), Phase::Bound));
    assert_eq!(state(&book, "1-2"), Some(SlotState::Claiming));
    assert_eq!(
        book.bind("1-2", &present),
        Err(BookError::AlreadyBound("1-2".into()))
    );
    assert_eq!(
        book.bind("9-9", &present),
        Err(BookError::NoSuchDevice("9-9".into()))
    );
    assert_eq!(book.busids(), ["1-2"]);
}

#[test]
fn a_claim_succeeds_or_leaves_the_slot_waiting() {
    let mut book = two_claiming();
    // A claim that detached no driver keeps the one seen at bind.
    let r = book.claimed("1-2", "h12", None).unwrap();
    assert_eq!(r.detached_driver.as_deref(), Some("usbhid"));
    let r = book.claimed("1-2", "h12", Some("cdc_acm".into())).unwrap();
    assert_eq!(r.detached_driver.as_deref(), Some("cdc_acm"));
    assert_eq!(state(&book, "1-2"), Some(SlotState::Claimed));
    assert_eq!(book.handle("1-2"), Some(&"h12"));

    book.claim_failed("1-3").unwrap();
    assert_eq!(state(&book, "1-3"), Some(SlotState::Absent));
    assert_eq!(book.handle("1-3"), None);

    // A slot that vanished meanwhile gives the handle back.
    let (e, h) = book.claimed("7-7", "h77", None).unwrap_err();
    assert_eq!((e, h), (BookError::Vanished("7-7".into()), "h77"));
    assert!(book.claim_failed("7-7").is_err());
}

#[test]
fn unbind_marks_the_record_releasing_and_hands_over_claim_and_sessions() {
    let mut book = Book::new();
    book.bind("1-2", &[dev("1-2", None)]).unwrap();
    book.claimed("1-2", "h", None).unwrap();
    assert_eq!(book.add_session("1-2", 1, |_| true), None);
    assert_eq!(book.add_session("1-2", 2, |_| true), None);
    let taken = book.begin_unbind("1-2").unwrap();
    assert_eq!(taken.handle, Some("h"));
    assert_eq!(taken.sessions, [1, 2]);
    assert_eq!(taken.record.phase, Phase::Releasing);
    // Saved as releasing until the device is given back.
    assert_eq!(book.records()[0].phase, Phase::Releasing);
    assert_eq!(state(&book, "1-2"), Some(SlotState::Releasing));
    assert!(book.forget("1-2").is_some());
    assert!(book.records().is_empty());
    assert_eq!(
        book.begin_unbind("1-2").unwrap_err(),
        BookError::NotBound("1-2".into())
    );
}

#[test]
fn sessions_of_an_unbound_device_are_handed_back_and_ended_ones_dropped() {
    let mut book = Book::new();
    assert_eq!(book.add_session("1-2", 5, |_| true), Some(5));
    book.bind("1-2", &[dev("1-2", None)]).unwrap();
    book.add_session("1-2", 1, |_| true);
    book.add_session("1-2", 2, |_| true);
    // Session 1 has ended by the time 3 starts.
    book.add_session("1-2", 3, |s| *s != 1);
    assert_eq!(book.take_all()[0].sessions, [2, 3]);
}

#[test]
fn a_device_that_leaves_waits_and_comes_back_on_any_port_by_serial() {
    let mut book = Book::new();
    book.bind("1-2", &[dev("1-2", Some("A"))]).unwrap();
    // Not claimed yet: leaving takes nothing.
    assert!(book.left("1-2").is_none());
    book.claimed("1-2", "h", None).unwrap();
    book.add_session("1-2", 9, |_| true);
    let taken = book.left("1-2").unwrap();
    assert_eq!((taken.handle, taken.sessions), (Some("h"), vec![9]));
    assert_eq!(state(&book, "1-2"), Some(SlotState::Absent));
    assert!(book.left("1-2").is_none(), "a second unplug takes nothing");

    // Another device does not take the slot; the same one on another port does.
    assert_eq!(book.returned(&dev("4-1", Some("B"))), None);
    let back = book.returned(&dev("4-1", Some("A"))).unwrap();
    assert_eq!(back.moved_from.as_deref(), Some("1-2"));
    assert_eq!(back.record.busid, "4-1");
    assert_eq!(book.busids(), ["4-1"]);
    assert_eq!(state(&book, "4-1"), Some(SlotState::Claiming));
    // Claiming, not waiting: a second arrival does not match.
    assert_eq!(book.returned(&dev("4-1", Some("A"))), None);
}

#[test]
fn a_device_without_serial_comes_back_on_its_port_only() {
    let mut book = Book::new();
    book.bind("1-2", &[dev("1-2", None)]).unwrap();
    book.claim_failed("1-2").unwrap();
    assert_eq!(book.returned(&dev("1-3", None)), None);
    let back = book.returned(&dev("1-2", None)).unwrap();
    assert_eq!(back.moved_from, None);
}

#[test]
fn a_releasing_slot_is_not_claimed_again_when_its_device_returns() {
    let mut book = Book::new();
    book.bind("1-2", &[dev("1-2", None)]).unwrap();
    book.claim_failed("1-2").unwrap();
    book.begin_unbind("1-2").unwrap();
    assert_eq!(book.returned(&dev("1-2", None)), None);
}

#[test]
fn restore_claims_present_devices_waits_for_others_and_finishes_unbinds() {
    let mut book = Book::new();
    let records = vec![
        record("1-2", Some("A"), Phase::Bound),
        record("1-3", None, Phase::Bound),
        record("1-4", None, Phase::Releasing),
        record("1-5", None, Phase::Releasing),
    ];
    // A moved to 2-1; 1-4 is here; 1-3 and 1-5 are not.
    let present = [dev("2-1", Some("A")), dev("1-4", None)];
    let steps = book.restore(records, &present);
    assert_eq!(
        steps,
        [
            RestoreStep::Claim(record("2-1", Some("A"), Phase::Bound)),
            RestoreStep::Wait(record("1-3", None, Phase::Bound)),
            RestoreStep::Reattach {
                record: record("1-4", None, Phase::Releasing),
                busid: "1-4".into()
            },
            RestoreStep::Forget(record("1-5", None, Phase::Releasing)),
        ]
    );
    assert_eq!(book.busids(), ["1-3", "2-1"]);
    assert_eq!(state(&book, "2-1"), Some(SlotState::Claiming));
    assert_eq!(state(&book, "1-3"), Some(SlotState::Absent));
}

#[test]
fn shutdown_takes_every_claim_but_keeps_the_slots() {
    let mut book = two_claiming();
    book.claimed("1-2", "h", None).unwrap();
    let taken = book.take_all();
    let handles: Vec<_> = taken.iter().map(|t| t.handle).collect();
    assert_eq!(handles, [Some("h"), None]);
    assert_eq!(book.records().len(), 2);
    assert_eq!(book.handle("1-2"), None);
}
