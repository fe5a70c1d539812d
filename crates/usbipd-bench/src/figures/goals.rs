//! Throughput goals of issue 14, in windows: control URBs at 32 in flight and bulk 64 KiB x16
//! IN and OUT (usbip-client, then the lean client, then raw TCP), the server's allocations per
//! URB in the same windows (counting allocator of the bench server), and the client library
//! alone (usbip-client against a prebuilt-reply USB/IP server, then raw TCP).

use usbip_client::{Connection, OwnedPipeline, Submit};
use usbip_proto::Direction;

use super::{
    bulk_submit, client_window, cpu, get_descriptor, lean_window, owned_window, raw_window, Plan,
};
use crate::child::ServerProcess;
use crate::lean::Shape;
use crate::load::{self, Window};
use crate::raw::Op;
use crate::report::{median, Row};

struct Case {
    name: &'static str,
    submit: Submit,
    shape: Shape,
    raw: (Op, usize),
    depth: usize,
    goal: &'static str,
    /// First bus id for the lean client's imports (one per window).
    lean_port: usize,
}

/// URB/s for small URBs, MiB/s for bulk.
fn value(w: &Window, rate: bool) -> f64 {
    if rate {
        w.ops_per_sec()
    } else {
        w.mib_per_sec()
    }
}

async fn case(
    server: &mut ServerProcess,
    mut pipe: OwnedPipeline,
    plan: &Plan,
    c: Case,
) -> anyhow::Result<(Vec<Row>, OwnedPipeline)> {
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let rate = c.shape.len < 1024;
    let (mut u, mut l, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.windows {
        let (uw, p) = owned_window(server, pipe, c.submit.clone(), c.depth, plan).await?;
        pipe = p;
        let busid = format!("0-{}", c.lean_port + i);
        let lw = lean_window(server, &busid, c.shape, c.depth, plan).await?;
        let rw = raw_window(server, raw_addr, c.raw.0, c.raw.1, c.depth, plan).await?;
        anyhow::ensure!(uw.errors == 0 && lw.errors == 0, "{}: URBs failed", c.name);
        eprintln!(
            "  {} window {i}: usbip-client {:.0}, lean {:.0}, raw {:.0} {}",
            c.name,
            value(&uw, rate),
            value(&lw, rate),
            value(&rw, rate),
            if rate { "URB/s" } else { "MiB/s" }
        );
        u.push(uw);
        l.push(lw);
        r.push(rw);
    }
    let unit = if rate { "URB/s" } else { "MiB/s" };
    let vals = |ws: &[Window]| ws.iter().map(|w| value(w, rate)).collect::<Vec<f64>>();
    let raw_name = "raw TCP, same sizes and depth";
    let lean_ratio = median(
        &vals(&l)
            .iter()
            .zip(vals(&r))
            .map(|(a, b)| a / b)
            .collect::<Vec<_>>(),
    );
    let mut rows = vec![
        Row::windows("throughput", format!("{}, usbip-client OwnedPipeline", c.name), unit, vals(&u), true)
            .against(raw_name, vals(&r))
            .goal(c.goal)
            .note(format!(
                "OwnedPipeline windows: {}; raw windows: {}; the lean client (server only) reached {lean_ratio:.2} of raw{}",
                cpu(&u),
                cpu(&r),
                match crate::report::meets(c.goal, lean_ratio) {
                    Some(false) => ", so the server alone misses the goal too",
                    Some(true) => ", so with the lean client the server meets the goal: the shortfall is on the client side, or noise (see the spread)",
                    None => "",
                }
            )),
        Row::windows("throughput", format!("{}, lean client (server only)", c.name), unit, vals(&l), true)
            .against(raw_name, vals(&r))
            .note(format!("lean windows: {}", cpu(&l))),
    ];
    let allocs: Vec<f64> = u.iter().filter_map(Window::allocs_per_op).collect();
    if allocs.len() == u.len() {
        rows.push(
            Row::windows(
                "allocations",
                format!("server allocations per URB, {}", c.name),
                "allocs/URB",
                allocs,
                false,
            )
            .goal("== 0"),
        );
    }
    Ok((rows, pipe))
}

pub async fn throughput(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut pipe = load::import_owned(server.usbip, "0-1").await?;
    let mut rows = Vec::new();
    let n = 64 << 10;
    let cases = [
        Case {
            name: "control GET_DESCRIPTOR x32",
            submit: get_descriptor(),
            shape: Shape::get_descriptor(),
            raw: (Op::In, 18),
            depth: 32,
            goal: ">= 0.9",
            lean_port: 20,
        },
        Case {
            name: "bulk IN 64 KiB x16",
            submit: bulk_submit(Op::In, n),
            shape: Shape::bulk(Direction::In, n),
            raw: (Op::In, n),
            depth: 16,
            goal: ">= 0.95",
            lean_port: 30,
        },
        Case {
            name: "bulk OUT 64 KiB x16",
            submit: bulk_submit(Op::Out, n),
            shape: Shape::bulk(Direction::Out, n),
            raw: (Op::Out, n),
            depth: 16,
            goal: ">= 0.95",
            lean_port: 40,
        },
    ];
    for c in cases {
        eprintln!("  {}", c.name);
        let (r, p) = case(server, pipe, plan, c).await?;
        rows.extend(r);
        pipe = p;
    }
    Ok(rows)
}

/// usbip-client against the prebuilt-reply server vs the raw client against the raw server:
/// the client library alone, as an [`OwnedPipeline`] (the goal) and as a shared
/// [`Connection`] with a `Pipeline` (reader task, mailbox).
pub async fn client_library(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let prebuilt = server
        .prebuilt
        .ok_or_else(|| anyhow::anyhow!("no prebuilt-reply server"))?;
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let conn = Connection::import(prebuilt, "1-1").await?;
    let mut pipe = OwnedPipeline::import(prebuilt, "1-2").await?;
    let n = 64 << 10;
    let mut rows = Vec::new();
    for op in [Op::In, Op::Out] {
        let (mut o, mut u, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..plan.windows {
            let (ow, p) = owned_window(server, pipe, bulk_submit(op, n), 16, plan).await?;
            pipe = p;
            let uw = client_window(server, &conn, bulk_submit(op, n), 16, plan).await?;
            let rw = raw_window(server, raw_addr, op, n, 16, plan).await?;
            anyhow::ensure!(
                uw.errors == 0 && ow.errors == 0,
                "client library: URBs failed"
            );
            eprintln!(
                "  client library {op:?} window {i}: owned {:.0}, shared {:.0} MiB/s vs raw {:.0} MiB/s",
                ow.mib_per_sec(),
                uw.mib_per_sec(),
                rw.mib_per_sec()
            );
            o.push(ow);
            u.push(uw);
            r.push(rw);
        }
        let dir = if op == Op::In { "IN" } else { "OUT" };
        let raw_name = "raw TCP client and server, same sizes";
        let mib = |ws: &[Window]| ws.iter().map(Window::mib_per_sec).collect::<Vec<f64>>();
        rows.push(
            Row::windows(
                "client library",
                format!("usbip-client OwnedPipeline, bulk {dir} 64 KiB x16, prebuilt-reply server"),
                "MiB/s",
                mib(&o),
                true,
            )
            .against(raw_name, mib(&r))
            .goal(">= 0.8")
            .note(format!(
                "OwnedPipeline windows: {}; raw windows: {}",
                cpu(&o),
                cpu(&r)
            )),
        );
        rows.push(
            Row::windows(
                "client library",
                format!("usbip-client Connection + Pipeline, bulk {dir} 64 KiB x16, prebuilt-reply server"),
                "MiB/s",
                mib(&u),
                true,
            )
            .against(raw_name, mib(&r))
            .note(format!("Connection windows: {}", cpu(&u))),
        );
    }
    Ok(rows)
}
