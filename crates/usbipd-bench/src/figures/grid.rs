//! The throughput grid for the plot: bulk IN and OUT over URB sizes and depths, one window
//! each (usbip-client, then raw TCP of the same shape). No goals here: the goals are measured
//! in windows by `goals`.

use super::{bulk_submit, client_window, raw_window, Plan};
use crate::child::ServerProcess;
use crate::load;
use crate::raw::Op;
use crate::report::{size, GridPoint};

pub async fn bulk(server: &mut ServerProcess, plan: &Plan) -> anyhow::Result<Vec<GridPoint>> {
    let conn = load::import(server.usbip, "0-1").await?;
    let raw_addr = server.raw.ok_or_else(|| anyhow::anyhow!("no raw server"))?;
    let mut grid = Vec::new();
    for op in [Op::In, Op::Out] {
        for &n in &plan.sizes {
            for &depth in &plan.depths {
                let u = client_window(server, &conn, bulk_submit(op, n), depth, plan).await?;
                let r = raw_window(server, raw_addr, op, n, depth, plan).await?;
                let dir = if op == Op::In { "IN" } else { "OUT" };
                anyhow::ensure!(
                    u.errors == 0,
                    "bulk {dir} {} x{depth}: URBs failed",
                    size(n)
                );
                eprintln!(
                    "  bulk {dir} {} x{depth}: {:.0} MiB/s vs raw {:.0} MiB/s",
                    size(n),
                    u.mib_per_sec(),
                    r.mib_per_sec(),
                );
                grid.push(GridPoint {
                    direction: dir.into(),
                    size: n,
                    depth,
                    usbip_mib_s: u.mib_per_sec(),
                    raw_mib_s: r.mib_per_sec(),
                    ratio: u.mib_per_sec() / r.mib_per_sec().max(1e-9),
                    urbs_per_s: u.ops_per_sec(),
                    server_cpu: u.server_cpu / u.secs,
                    client_cpu: u.client_cpu / u.secs,
                    raw_server_cpu: r.server_cpu / r.secs,
                    raw_client_cpu: r.client_cpu / r.secs,
                    allocs_per_urb: u.allocs_per_op(),
                    alloc_bytes_per_urb: u.allocs.map(|a| a.bytes as f64 / u.ops.max(1) as f64),
                });
            }
        }
    }
    Ok(grid)
}
