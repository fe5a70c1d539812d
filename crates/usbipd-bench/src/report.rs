//! The results: rows (per-window samples of a figure and of its same-run baseline, and the
//! goal), the throughput grid, the machine; the summary of a row (median, per-window ratios,
//! their spread, met/missed) and the terminal table. No measuring here.

use serde::{Deserialize, Serialize};

/// One figure: what each window measured, and the baseline measured right after it.
/// The same shape as the rows of the in-guest results (docs/bench/*.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub figure: String,
    pub case: String,
    pub unit: String,
    /// One value per measuring window.
    pub samples: Vec<f64>,
    /// What the baseline is (e.g. "raw TCP, async server").
    pub baseline: Option<String>,
    /// The baseline's value in each window, measured right after `samples[i]`.
    pub baseline_samples: Option<Vec<f64>>,
    /// e.g. ">= 0.9": on the per-window ratio when there is a baseline, else on the value.
    pub goal: Option<String>,
    pub higher_is_better: bool,
    /// What the figures show about why the goal is missed (or about the row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The summary of a row.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub value: f64,
    pub baseline_value: Option<f64>,
    pub ratios: Vec<f64>,
    pub ratio: Option<f64>,
    /// min-max of the per-window ratios (of the samples when there is no baseline).
    pub spread: (f64, f64),
    pub met: Option<bool>,
}

/// Below this many per URB, an allocation count is "0 per URB": the runtime's own
/// housekeeping (timers, wake-ups of idle workers) is not on the URB path.
pub const ZERO_PER_URB: f64 = 0.001;

impl Row {
    /// A row of one window (for figures not measured in windows, such as memory).
    pub fn new(figure: &str, case: impl Into<String>, value: f64, unit: &str) -> Row {
        Row::windows(figure, case, unit, vec![value], true)
    }

    pub fn windows(
        figure: &str,
        case: impl Into<String>,
        unit: &str,
        samples: Vec<f64>,
        higher_is_better: bool,
    ) -> Row {
        Row {
            figure: figure.into(),
            case: case.into(),
            unit: unit.into(),
            samples,
            baseline: None,
            baseline_samples: None,
            goal: None,
            higher_is_better,
            note: None,
        }
    }

    pub fn against(mut self, name: &str, samples: Vec<f64>) -> Row {
        self.baseline = Some(name.into());
        self.baseline_samples = Some(samples);
        self
    }

    pub fn goal(mut self, goal: &str) -> Row {
        self.goal = Some(goal.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    pub fn summary(&self) -> Summary {
        let value = median(&self.samples);
        let ratios: Vec<f64> = match &self.baseline_samples {
            Some(b) => self
                .samples
                .iter()
                .zip(b)
                .filter(|(_, b)| **b > 0.0)
                .map(|(s, b)| s / b)
                .collect(),
            None => Vec::new(),
        };
        let ratio = (!ratios.is_empty()).then(|| median(&ratios));
        let spread_of = if ratios.is_empty() {
            &self.samples
        } else {
            &ratios
        };
        let spread = spread_of
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let judged = if self.baseline_samples.is_some() {
            ratio
        } else {
            Some(value)
        };
        let met = match (&self.goal, judged) {
            (Some(g), Some(v)) => meets(g, v),
            _ => None,
        };
        Summary {
            value,
            baseline_value: self.baseline_samples.as_deref().map(median),
            ratios,
            ratio,
            spread,
            met,
        }
    }
}

/// Whether `v` meets a goal such as ">= 0.9", "<= 1.1" or "== 0"; `None` if unparsable.
pub fn meets(goal: &str, v: f64) -> Option<bool> {
    let mut words = goal.split_whitespace();
    let op = words.next()?;
    let target: f64 = words.next()?.parse().ok()?;
    match op {
        ">=" => Some(v >= target),
        "<=" => Some(v <= target),
        "==" if target == 0.0 => Some(v.abs() < ZERO_PER_URB),
        "==" => Some(v == target),
        _ => None,
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
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

/// A row with its summary, as written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct RowOut {
    #[serde(flatten)]
    pub row: Row,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub mode: String,
    pub windows: usize,
    pub command: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    pub grid: Vec<GridPoint>,
}

/// What `--guest FILE` merges: rows measured inside a guest by another tool (the e2e benches),
/// kept as committed files under docs/bench/ so that regenerating the report keeps them.
#[derive(Debug, Deserialize)]
pub struct GuestRows {
    pub rows: Vec<Row>,
    /// When, on which commit and by which command the rows were measured.
    #[serde(default)]
    pub measured: Option<Measured>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Measured {
    pub at: Option<String>,
    pub commit: Option<String>,
    /// The worktree had uncommitted changes when the rows were measured.
    #[serde(default)]
    pub dirty: bool,
    pub by: Option<String>,
    /// What went wrong during the run (its rows keep what was measured).
    #[serde(default)]
    pub failures: Vec<String>,
}

impl GuestRows {
    /// The rows of `path`; `None` when the file does not exist.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Option<GuestRows>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// The report's note on where these rows come from.
    pub fn describe(&self, path: &std::path::Path) -> String {
        let mut out = format!(
            "{} rows measured inside a QEMU guest, merged from {}",
            self.rows.len(),
            path.display()
        );
        if let Some(m) = &self.measured {
            let unknown = || "unknown".to_string();
            out.push_str(&format!(
                " (measured {} on commit {}{}",
                m.at.clone().unwrap_or_else(unknown),
                m.commit.clone().unwrap_or_else(unknown),
                if m.dirty {
                    " plus uncommitted changes"
                } else {
                    ""
                }
            ));
            if let Some(by) = &m.by {
                out.push_str(&format!(" by `{by}`"));
            }
            out.push(')');
            if !m.failures.is_empty() {
                out.push_str(&format!(
                    "; {} failures in that run: {}",
                    m.failures.len(),
                    m.failures.join("; ")
                ));
            }
        } else {
            out.push_str(" (the file does not say when or on which commit it was measured)");
        }
        out
    }
}

pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if v.is_nan() {
        "-".into()
    } else if a >= 1e6 {
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
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<RowOut> = self
            .rows
            .iter()
            .map(|r| RowOut {
                row: r.clone(),
                summary: r.summary(),
            })
            .collect();
        serde_json::json!({
            "machine": self.machine,
            "mode": self.mode,
            "windows": self.windows,
            "command": self.command,
            "notes": self.notes,
            "rows": rows,
            "grid": self.grid,
        })
    }

    /// The rows as a Markdown table (readable in a terminal too); `goals`: only rows with a
    /// goal, else only rows without.
    pub fn table(&self, goals: bool) -> String {
        let mut out = String::new();
        out.push_str("| figure | case | usbipd (median) | baseline (median) | ratio (median) | spread (min-max) | goal | met |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in self.rows.iter().filter(|r| r.goal.is_some() == goals) {
            let s = r.summary();
            let baseline = match (&r.baseline, s.baseline_value) {
                (Some(name), Some(v)) => format!("{} ({name})", fmt(v)),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "| {} | {} | {} {} | {} | {} | {}-{} ({} windows) | {} | {} |\n",
                r.figure,
                r.case,
                fmt(s.value),
                r.unit,
                baseline,
                s.ratio.map(fmt).unwrap_or_else(|| "-".into()),
                fmt(s.spread.0),
                fmt(s.spread.1),
                r.samples.len(),
                r.goal.as_deref().unwrap_or("-"),
                match s.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_per_window_and_goals_judge_the_median_ratio() {
        let r = Row::windows("f", "c", "MiB/s", vec![90.0, 50.0, 100.0], true)
            .against("raw", vec![100.0, 100.0, 50.0])
            .goal(">= 0.9");
        let s = r.summary();
        assert_eq!(s.ratios, vec![0.9, 0.5, 2.0]);
        assert_eq!(s.ratio, Some(0.9));
        assert_eq!(s.spread, (0.5, 2.0));
        assert_eq!(s.met, Some(true));
        let r = r.goal(">= 0.95");
        assert_eq!(r.summary().met, Some(false));
    }

    #[test]
    fn value_goals_judge_the_median_value() {
        let r = Row::windows("m", "c", "KiB", vec![3000.0, 1000.0, 1500.0], false).goal("<= 2048");
        let s = r.summary();
        assert_eq!(s.value, 1500.0);
        assert_eq!(s.spread, (1000.0, 3000.0));
        assert_eq!(s.met, Some(true));
        assert_eq!(meets("== 0", 0.0005), Some(true));
        assert_eq!(meets("== 0", 0.01), Some(false));
        assert_eq!(meets("about 3", 1.0), None);
    }

    #[test]
    fn guest_rows_parse() {
        let g: GuestRows = serde_json::from_str(
            r#"{"rows":[{"figure":"host","case":"read","unit":"MiB/s","samples":[1,2],
            "baseline":"usbip-host","baseline_samples":[2,2],"goal":">= 0.9","higher_is_better":true}]}"#,
        )
        .unwrap();
        let s = g.rows[0].summary();
        assert_eq!(s.ratio, Some(0.75));
        assert_eq!(s.met, Some(false));
        let path = std::path::Path::new("g.json");
        assert!(g.describe(path).contains("does not say when"));
        let g: GuestRows = serde_json::from_str(
            r#"{"measured":{"at":"2026-12-02T10:00:00Z","commit":"abc","dirty":true,"by":"x.sh"},
            "rows":[]}"#,
        )
        .unwrap();
        assert_eq!(
            g.describe(path),
            "0 rows measured inside a QEMU guest, merged from g.json (measured \
             2026-12-02T10:00:00Z on commit abc plus uncommitted changes by `x.sh`)"
        );
    }

    #[test]
    fn a_missing_guest_file_is_none_and_a_bad_one_an_error() {
        let dir = std::env::temp_dir().join(format!("usbipd-bench-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(GuestRows::read(&dir.join("absent.json")).unwrap().is_none());
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(GuestRows::read(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
