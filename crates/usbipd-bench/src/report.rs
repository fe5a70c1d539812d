//! The results: rows of the summary table, the throughput grid, the machine, and how to print
//! them as a table or JSON. No measuring here.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub case: String,
    pub value: f64,
    pub unit: String,
    /// The same-run raw baseline in the same unit, when there is one.
    pub baseline: Option<f64>,
    /// value / baseline (or baseline / value for latency: always "higher is better" except
    /// where the goal says `<=`).
    pub ratio: Option<f64>,
    pub goal: String,
    /// Whether the goal is met; `None` for rows with no goal.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(figure: &str, case: impl Into<String>, value: f64, unit: &str) -> Row {
        Row {
            figure: figure.into(),
            case: case.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            goal: String::new(),
            met: None,
        }
    }

    pub fn baseline(mut self, baseline: f64) -> Row {
        self.baseline = Some(baseline);
        self.ratio = (baseline > 0.0).then(|| self.value / baseline);
        self
    }

    /// A goal on the ratio (`>=` or `<=`).
    pub fn ratio_goal(mut self, op: &str, target: f64) -> Row {
        self.goal = format!("ratio {op} {target}");
        self.met = self.ratio.map(|r| compare(r, op, target));
        self
    }

    /// A goal on the value itself.
    pub fn value_goal(mut self, op: &str, target: f64) -> Row {
        self.goal = format!("{op} {} {}", fmt(target), self.unit);
        self.met = Some(compare(self.value, op, target));
        self
    }

    pub fn check(mut self, goal: &str, met: bool) -> Row {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

fn compare(v: f64, op: &str, target: f64) -> bool {
    match op {
        "<=" => v <= target,
        _ => v >= target,
    }
}

/// One point of the bulk throughput grid (for the plot).
#[derive(Debug, Clone, Serialize)]
pub struct GridPoint {
    pub direction: String,
    pub size: usize,
    pub depth: usize,
    pub usbip_mib_s: f64,
    pub raw_mib_s: f64,
    pub ratio: f64,
    pub urbs_per_s: f64,
    /// Server CPU seconds per second during the usbip run (2.0 = both cores).
    pub server_cpu: f64,
    /// The same for the client (this process).
    pub client_cpu: f64,
    pub raw_server_cpu: f64,
    pub raw_client_cpu: f64,
    pub allocs_per_urb: Option<f64>,
    pub alloc_bytes_per_urb: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub mode: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    pub grid: Vec<GridPoint>,
}

pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// The summary as a Markdown table (readable in a terminal too).
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| figure | case | usbipd | raw baseline | ratio | goal | met |\n");
        out.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let opt = |v: Option<f64>| v.map(fmt).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {} | {} | {} {} | {} | {} | {} | {} |\n",
                r.figure,
                r.case,
                fmt(r.value),
                r.unit,
                opt(r.baseline),
                opt(r.ratio),
                if r.goal.is_empty() { "-" } else { &r.goal },
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
            ));
        }
        out
    }

    pub fn grid_table(&self) -> String {
        let mut out = String::new();
        out.push_str("| dir | URB size | in flight | usbipd MiB/s | raw MiB/s | ratio | URBs/s | CPU server+client (raw) | server allocs/URB (bytes) |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for g in &self.grid {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2} | {} | {:.2}+{:.2} ({:.2}+{:.2}) | {} |\n",
                g.direction,
                size(g.size),
                g.depth,
                fmt(g.usbip_mib_s),
                fmt(g.raw_mib_s),
                g.ratio,
                fmt(g.urbs_per_s),
                g.server_cpu,
                g.client_cpu,
                g.raw_server_cpu,
                g.raw_client_cpu,
                match (g.allocs_per_urb, g.alloc_bytes_per_urb) {
                    (Some(a), Some(b)) => format!("{a:.2} ({})", fmt(b)),
                    _ => "-".into(),
                },
            ));
        }
        out
    }
}

pub fn size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}
