//! CPU pinning for the latency figure. On these 2-vCPU virtual machines a round trip costs
//! ~10 us when the waking and the woken thread share a vCPU and ~80 us when the wake-up
//! crosses vCPUs; unpinned, a run samples whichever placement the scheduler picked. Pinning the
//! client thread and the server process measures each placement on its own.

use std::os::unix::process::CommandExt;
use std::process::Command;

pub use affinity::allowed;
use affinity::set;

/// sched_setaffinity is Linux's; elsewhere nothing is pinned and the latency figure leaves
/// the pinned modes out (it says so in its notes).
#[cfg(target_os = "linux")]
mod affinity {
    /// The CPUs this process may run on, in order.
    pub fn allowed() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `set` is a live cpu_set_t of `size` bytes.
        if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
            return Vec::new();
        }
        // SAFETY: CPU_ISSET reads the set within its CPU_SETSIZE bits.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    pub fn set(cpu: usize) -> std::io::Result<()> {
        // SAFETY: as in `allowed`; CPU_SET writes within the set's bits (cpu < CPU_SETSIZE checked).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a live cpu_set_t.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    /// None can be pinned to here.
    pub fn allowed() -> Vec<usize> {
        Vec::new()
    }

    pub fn set(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Pins the child `cmd` will start to `cpu` before it executes, so that every thread it ever
/// creates inherits the pinning.
pub fn command(cmd: &mut Command, cpu: usize) {
    // SAFETY: the closure runs between fork and exec and makes one syscall (no allocation, no
    // lock), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || set(cpu));
    }
}

/// Runs `f` on a new thread pinned to `cpu` (a thread of its own, so the pinning never leaks
/// into a pool) and awaits its result without blocking the runtime.
pub async fn on_cpu<T: Send + 'static>(
    cpu: usize,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("bench-cpu{cpu}"))
        .spawn(move || {
            let r = set(cpu)
                .map_err(|e| anyhow::anyhow!("cannot pin a thread to CPU {cpu}: {e}"))
                .and_then(|()| f());
            let _ = tx.send(r);
        })?;
    rx.await
        .map_err(|_| anyhow::anyhow!("the thread pinned to CPU {cpu} panicked"))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pinned_thread_runs_only_on_its_cpu() {
        let cpus = allowed();
        assert!(!cpus.is_empty(), "sched_getaffinity gave no CPU");
        for &cpu in &cpus {
            let seen = on_cpu(cpu, || Ok(allowed())).await.unwrap();
            assert_eq!(seen, vec![cpu]);
        }
        // The pinning stays on that thread: this one still has every CPU.
        assert_eq!(allowed(), cpus);
    }

    #[test]
    fn a_pinned_child_and_its_threads_inherit_the_cpu() {
        let cpu = *allowed().last().unwrap();
        let mut cmd = Command::new("sh");
        // grep, a process the pinned child starts in turn, reports what it may use.
        cmd.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        command(&mut cmd, cpu);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.split_whitespace().nth(1),
            Some(cpu.to_string().as_str()),
            "{text}"
        );
    }
}
