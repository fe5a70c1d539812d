//! The transport's failures and their recovery: invalid CBWs, length disagreements, I/O errors,
//! cancelled URBs, reset recovery, halts.

use super::*;

#[tokio::test]
async fn invalid_cbw_stalls_until_reset_recovery() {
    let mut d = disk(false);
    let mut bad = cbw(1, 0, false, &[0, 0, 0, 0, 0, 0]);
    bad[0] = b'X';
    d.send(&bad).await;
    assert_eq!(d.receive(13).await.status, errno::EPIPE);
    let out = d.host.urb(EP_OUT, 0, &cbw(2, 0, false, &[0; 6]));
    let seq = d.host.submit(out);
    assert_eq!(d.done(seq).await.status, errno::EPIPE);
    assert!(d.is_halted(EP_IN).await && d.is_halted(EP_OUT).await);
    // CLEAR_FEATURE alone does not end the stall.
    assert_eq!(d.endpoint_request(0x01, EP_IN).await.status, 0);
    assert!(d.is_halted(EP_IN).await);

    d.reset_recovery().await;
    assert!(!d.is_halted(EP_IN).await && !d.is_halted(EP_OUT).await);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));
}

#[tokio::test]
async fn zero_length_packet_ends_data_on_a_packet_boundary() {
    let mut d = disk(false);
    let tag = d.tag();
    // Host expects 1024 bytes, the device has 512 (case 5).
    d.send(&cbw(tag, 1024, true, &read10(0, 1))).await;
    let first = d.receive(512).await;
    assert_eq!(first.data.len(), 512);
    let zlp = d.receive(512).await;
    assert_eq!((zlp.status, zlp.data.len()), (0, 0));
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 512,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn short_data_with_short_not_ok_is_remote_io_error() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 64, true, &[0x12, 0, 0, 0, 64, 0])).await;
    let mut urb = d.host.urb(EP_IN, 64, &[]);
    urb.transfer_flags |= transfer_flags::URB_SHORT_NOT_OK;
    let seq = d.host.submit(urb);
    let c = d.done(seq).await;
    assert_eq!((c.status, c.data.len()), (errno::EREMOTEIO, 36));
    assert_eq!(
        d.csw(tag).await,
        Csw {
            residue: 28,
            status: PASSED
        }
    );
}

#[tokio::test]
async fn length_disagreements() {
    let mut d = disk(false);
    // Host sends more than the command needs (case 11): the extra is ignored.
    let data = pattern(1024, 0x11);
    let csw = d.command_out(&write10(5, 1), &data).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: PASSED
        }
    );
    assert_eq!(
        d.file_bytes(5 * 512, 1024),
        [&data[..512], &[0u8; 512][..]].concat()
    );

    // Host sends less than the command needs (case 13): phase error, nothing written.
    let csw = d.command_out(&write10(20, 2), &data[..512]).await;
    assert_eq!(csw.status, PHASE_ERROR);
    assert_eq!(d.file_bytes(20 * 512, 512), vec![0u8; 512]);

    // Host expects less than a READ returns (case 7): phase error.
    let (got, csw) = d.command_in(&read10(5, 2), 512).await;
    assert!(got.is_empty());
    assert_eq!(csw.status, PHASE_ERROR);

    // Host expects no data for a READ (case 2), or data in for a WRITE (case 8).
    assert_eq!(d.command(&read10(5, 1)).await.status, PHASE_ERROR);
    let (_, csw) = d.command_in(&write10(5, 1), 512).await;
    assert_eq!(csw.status, PHASE_ERROR);

    // Still in step afterwards.
    let (back, csw) = d.command_in(&read10(5, 1), 512).await;
    assert_eq!((csw.status, &back[..]), (PASSED, &data[..512]));
}

#[tokio::test]
async fn io_errors_become_medium_errors() {
    // Writable as far as the device knows, but the descriptor only reads: writes fail (EBADF).
    let file = temporary_image(SIZE).unwrap();
    let ro = OpenOptions::new().read(true).open(file.path()).unwrap();
    let device = MassStorage::from_file(ro, false)
        .unwrap()
        .into_device(BusPosition::virtual_port(2));
    let mut d = attach(&device, file);
    let csw = d.command_out(&write10(0, 1), &[1; 512]).await;
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x03, 0x0c, 0x00));

    // The image shrinks under the device: reading past the new end fails.
    d.file.as_file().set_len(512).unwrap();
    let (data, csw) = d.command_in(&read10(8, 1), 512).await;
    assert!(data.is_empty());
    assert_eq!(
        csw,
        Csw {
            residue: 512,
            status: FAILED
        }
    );
    assert_eq!(d.sense().await, (0x03, 0x11, 0x00));
}

#[tokio::test]
async fn cancelled_urbs_never_complete_and_reset_recovers() {
    let mut d = disk(false);
    // A parked IN URB cancelled before any command: the next one gets the data.
    let parked = d.host.urb(EP_IN, 36, &[]);
    let parked = d.host.submit(parked);
    d.host.session.cancel(parked);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));

    // Cancel the data URB of a large read while the read may be in flight, then recover.
    let tag = d.tag();
    d.send(&cbw(tag, 65536, true, &read10(0, 128))).await;
    let urb = d.host.urb(EP_IN, 65536, &[]);
    let seq = d.host.submit(urb);
    d.host.session.cancel(seq);
    // The read may have beaten the cancel (then its data was already on the way, which the
    // server discards); nothing else may complete.
    while let Ok(Some(c)) = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        d.host.completions.recv(),
    )
    .await
    {
        assert_eq!(c.seqnum, seq);
    }
    d.reset_recovery().await;
    let data = pattern(512, 0x77);
    assert_eq!(d.command_out(&write10(1, 1), &data).await.status, PASSED);
    let (back, csw) = d.command_in(&read10(1, 1), 512).await;
    assert_eq!((csw.status, back), (PASSED, data));
}

#[tokio::test]
async fn short_csw_urb_overflows() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    assert_eq!(d.receive(12).await.status, errno::EOVERFLOW);
}

#[tokio::test]
async fn reset_abandons_a_pending_csw() {
    let mut d = disk(false);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    d.reset_recovery().await;
    // The abandoned CSW is gone: the next IN URB waits for a new command.
    let urb = d.host.urb(EP_IN, 13, &[]);
    let seq = d.host.submit(urb);
    assert!(d.host.idle_for(100).await);
    let tag = d.tag();
    d.send(&cbw(tag, 0, false, &[0, 0, 0, 0, 0, 0])).await;
    let c = d.done(seq).await;
    assert_eq!(u32::from_le_bytes(c.data[4..8].try_into().unwrap()), tag);
}

#[tokio::test]
async fn set_feature_halt_stalls_parked_urbs_until_cleared() {
    let mut d = disk(false);
    let parked = d.host.urb(EP_IN, 13, &[]);
    let parked = d.host.submit(parked);
    let set_halt = SetupPacket {
        request_type: 0x02,
        request: 0x03,
        value: 0,
        index: u16::from(EP_IN),
        length: 0,
    };
    // The parked URB sees the stall before the control transfer completes.
    let mut urb = d.host.urb(0, 0, &[]);
    urb.setup = set_halt.to_bytes();
    let control = d.host.submit(urb);
    let first = d.host.next().await.unwrap();
    assert_eq!((first.seqnum, first.status), (parked, errno::EPIPE));
    let second = d.host.next().await.unwrap();
    assert_eq!((second.seqnum, second.status), (control, 0));
    assert!(d.is_halted(EP_IN).await);
    assert_eq!(d.receive(13).await.status, errno::EPIPE);
    assert_eq!(d.endpoint_request(0x01, EP_IN).await.status, 0);
    let (inq, csw) = d.command_in(&[0x12, 0, 0, 0, 36, 0], 36).await;
    assert_eq!((inq.len(), csw.status), (36, PASSED));
}
