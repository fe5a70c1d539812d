//! The unlink races of the in-flight table, one transition at a time.

use bytes::Bytes;
use usbip_proto::{errno, Direction, Reply};

use super::{InFlight, Pending, Refused, Submit, Unlink, MAX_EARLY_UNLINKS};
use crate::device::UrbCompletion;

fn bulk_in(length: u32) -> Pending {
    Pending {
        direction: Direction::In,
        length,
        held: 0,
    }
}

fn bulk_out(held: usize) -> Pending {
    Pending {
        direction: Direction::Out,
        length: held as u32,
        held,
    }
}

fn ret(completed: super::Completed) -> (usbip_proto::RetSubmit, Bytes) {
    match completed.reply {
        Reply::Submit { ret, data, .. } => (ret, data),
        other => panic!("expected a RET_SUBMIT, got {other:?}"),
    }
}

#[test]
fn completion_before_unlink_is_reported_and_the_unlink_answers_zero() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(1, bulk_in(4)), Ok(Submit::Start));
    let done = t.complete(UrbCompletion::data_in(1, Bytes::from_static(b"abcd")));
    let (ret, data) = ret(done.expect("an in-flight URB completes"));
    assert_eq!((ret.seqnum, ret.status, ret.actual_length), (1, 0, 4));
    assert_eq!(&data[..], b"abcd");
    let unlink = t.unlink(1);
    assert_eq!(unlink, Unlink::Done);
    assert_eq!(unlink.status(), 0);
    assert_eq!(t.len(), 0);
}

#[test]
fn unlink_before_completion_cancels_and_the_late_completion_is_dropped() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(7, bulk_out(512)), Ok(Submit::Start));
    assert_eq!(t.held_out(), 512);
    let unlink = t.unlink(7);
    assert_eq!(unlink, Unlink::Cancel { held: 512 });
    assert_eq!(unlink.status(), errno::ECONNRESET);
    assert_eq!(
        t.held_out(),
        0,
        "the OUT bytes are released with the unlink"
    );
    // The device completes it anyway: the client must not see a RET_SUBMIT after -ECONNRESET.
    assert!(t.complete(UrbCompletion::done_out(7, 512)).is_none());
    assert_eq!(t.len(), 0);
}

#[test]
fn unlink_of_a_seqnum_not_yet_submitted_drops_its_submit_once() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(1, bulk_in(8)), Ok(Submit::Start));
    // vhci-hcd put the unlink of 2 ahead of its submit.
    let unlink = t.unlink(2);
    assert_eq!(unlink, Unlink::Early);
    assert_eq!(unlink.status(), errno::ECONNRESET);
    assert_eq!(t.submit(2, bulk_in(8)), Ok(Submit::Drop));
    assert_eq!(t.len(), 1, "the dropped submit is not in flight");
    // Remembered once only: the same seqnum submitted again (after wrapping) runs.
    assert_eq!(t.submit(2, bulk_in(8)), Ok(Submit::Start));
}

#[test]
fn unlink_of_an_old_unknown_seqnum_answers_zero_and_remembers_nothing() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(10, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(t.unlink(3), Unlink::Done);
    // Not taken as an early unlink: a later submit of 3 is not dropped.
    assert_eq!(t.submit(3, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(t.len(), 2);
}

#[test]
fn seqnums_compare_in_wrapping_order() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(u32::MAX, bulk_in(8)), Ok(Submit::Start));
    // 0 comes after u32::MAX: its unlink is early, not "completed already".
    assert_eq!(t.unlink(0), Unlink::Early);
    assert_eq!(t.unlink(u32::MAX - 1), Unlink::Done);
}

#[test]
fn duplicate_seqnum_in_flight_is_refused() {
    let mut t = InFlight::new(16);
    assert_eq!(t.submit(5, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(t.submit(5, bulk_in(8)), Err(Refused::Duplicate(5)));
    // Once completed the seqnum may come again.
    assert!(t
        .complete(UrbCompletion::data_in(5, Bytes::new()))
        .is_some());
    assert_eq!(t.submit(5, bulk_in(8)), Ok(Submit::Start));
}

#[test]
fn more_than_max_in_flight_is_refused() {
    let mut t = InFlight::new(2);
    assert_eq!(t.submit(1, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(t.submit(2, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(t.submit(3, bulk_in(8)), Err(Refused::TooMany(2)));
}

#[test]
fn completion_of_an_unknown_seqnum_is_dropped() {
    let mut t = InFlight::new(4);
    assert!(t
        .complete(UrbCompletion::data_in(9, Bytes::new()))
        .is_none());
}

#[test]
fn early_unlinks_are_bounded_oldest_forgotten_first() {
    let mut t = InFlight::new(4);
    for s in 1..=MAX_EARLY_UNLINKS as u32 + 1 {
        assert_eq!(t.unlink(s), Unlink::Early);
    }
    // The oldest (1) was forgotten: its submit runs; the newest is still dropped.
    assert_eq!(t.submit(1, bulk_in(8)), Ok(Submit::Start));
    assert_eq!(
        t.submit(MAX_EARLY_UNLINKS as u32 + 1, bulk_in(8)),
        Ok(Submit::Drop)
    );
}

#[test]
fn in_data_beyond_the_request_is_cut_and_reported_as_overflow() {
    let mut t = InFlight::new(4);
    assert_eq!(t.submit(1, bulk_in(2)), Ok(Submit::Start));
    let done = t
        .complete(UrbCompletion::data_in(1, Bytes::from_static(b"abcd")))
        .expect("in flight");
    assert!(done.overflowed);
    let (ret, data) = ret(done);
    assert_eq!((ret.status, ret.actual_length), (errno::EOVERFLOW, 2));
    assert_eq!(&data[..], b"ab");
}

#[test]
fn out_completion_carries_no_data_and_at_most_the_length_sent() {
    let mut t = InFlight::new(4);
    assert_eq!(t.submit(1, bulk_out(4)), Ok(Submit::Start));
    let mut done = UrbCompletion::done_out(1, 99);
    done.data = Bytes::from_static(b"junk");
    let done = t.complete(done).expect("in flight");
    assert_eq!(done.held, 4);
    assert_eq!(t.held_out(), 0);
    let (ret, data) = ret(done);
    assert_eq!(ret.actual_length, 4);
    assert!(data.is_empty());
}
