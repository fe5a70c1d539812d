//! `usbipd attach --busid B (--lima VM | --docker) [--auto]`: one command on the host that makes
//! a shared device appear in a Linux VM, as usbipd-win's `attach --wsl` does. Shares the device
//! if needed (the `bind` path), finds the static Linux client for the VM's CPU, runs the plan of
//! `vm::plan` through a `vm::runner::Runner`, and records the attachment for `usbipd detach`.

use std::path::{Path, PathBuf};

use crate::vm::plan::{self, Arch, Attachment, Vm};
use crate::vm::records::{self, Attachments};
use crate::vm::runner::{run_plan, Processes, Runner};

use super::SharingPlaces;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("vm").required(true).args(["lima", "docker"])))]
pub struct AttachArgs {
    /// The device, as `usbipd list` shows it (shared first when it is not yet)
    #[arg(long, short = 'b')]
    pub busid: String,
    /// Into this Lima instance (`limactl list`; Colima: `colima`, with LIMA_HOME=~/.colima/_lima)
    #[arg(long, value_name = "INSTANCE")]
    pub lima: Option<String>,
    /// Into Docker Desktop's VM (a privileged container with the host's PID namespace)
    #[arg(long)]
    pub docker: bool,
    /// Keep it attached: the client in the VM stays running and attaches again whenever the
    /// device or the connection comes back (`usbipd detach --busid` stops it)
    #[arg(long)]
    pub auto: bool,
    /// This server as the VM reaches it [default: host.lima.internal or host.docker.internal]
    #[arg(long, short = 'r', value_name = "HOST[:PORT]")]
    pub remote: Option<String>,
    /// The static Linux usbipd to run in the VM [default: usbipd-ARCH-linux for the VM's CPU,
    /// in $USBIPD_LINUX_CLIENTS, ../share/usbipd/linux next to this executable, or beside it]
    #[arg(long, value_name = "PATH")]
    pub client: Option<PathBuf>,
    /// The image of Docker's privileged containers (it needs `sh` and `nsenter`)
    #[arg(long, value_name = "IMAGE", default_value = "alpine")]
    pub image: String,
    #[command(flatten)]
    pub places: SharingPlaces,
}

pub async fn run(args: AttachArgs) -> anyhow::Result<()> {
    run_with(args, &mut Processes).await
}

/// `usbipd attach` with the commands run by `runner`.
pub async fn run_with(args: AttachArgs, runner: &mut dyn Runner) -> anyhow::Result<()> {
    let vm = match &args.lima {
        Some(instance) => Vm::Lima {
            instance: instance.clone(),
        },
        None => Vm::Docker {
            image: args.image.clone(),
        },
    };
    let attachment = Attachment {
        busid: args.busid.clone(),
        remote: args
            .remote
            .clone()
            .unwrap_or_else(|| vm.host_alias().to_string()),
        vm,
        auto: args.auto,
    };
    // Checked before anything is shared or copied.
    plan::detach_plan(&attachment)?;
    // Virtual devices (bus 0) are always shared by the server that serves them.
    if !args.busid.starts_with("0-") {
        super::binding::ensure_shared(&args.busid, &args.places).await?;
    }
    let client = match &args.client {
        Some(path) => path.clone(),
        None => {
            let probe = attachment.vm.arch_probe();
            let out = runner.run(&probe)?;
            let arch = Arch::parse(&out).ok_or_else(|| {
                anyhow::anyhow!(
                    "`{}` answered {:?}: not a CPU usbipd has a static Linux client for (x86_64, aarch64)",
                    probe.display(),
                    out.trim()
                )
            })?;
            find_client(arch, &client_dirs())?
        }
    };
    let steps = plan::attach_plan(&attachment, &client)?;
    run_plan(runner, &steps)?;
    let path = records::path(&args.places.state.dir()?);
    let mut all = Attachments::load(&path)?;
    all.put(attachment.clone());
    all.save(&path)?;
    let how = if attachment.auto {
        "kept attached by `usbipd client attach --auto` there"
    } else {
        "attached"
    };
    let place = match &attachment.vm {
        Vm::Lima { instance } => format!("Lima VM {instance}"),
        Vm::Docker { .. } => "Docker Desktop's VM".to_string(),
    };
    println!(
        "{} {how} in {place} (from {}); `usbipd detach --busid {}` ends it",
        attachment.busid, attachment.remote, attachment.busid
    );
    Ok(())
}

/// Where the static Linux clients are looked for, in order.
fn client_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("USBIPD_LINUX_CLIENTS") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if let Some(prefix) = bin.parent() {
            dirs.push(prefix.join("share/usbipd/linux"));
        }
        dirs.push(bin);
    }
    dirs
}

/// The first `usbipd-ARCH-linux` in `dirs`.
fn find_client(arch: Arch, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let name = arch.client_file();
    dirs.iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            anyhow::anyhow!(
                "no static Linux client {name} (looked in {}); build it with scripts/build-static.sh or pass --client PATH",
                looked.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_for_the_vms_cpu_is_found_in_the_first_directory_that_has_it() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("usbipd-aarch64-linux"), b"elf").unwrap();
        std::fs::write(b.path().join("usbipd-x86_64-linux"), b"elf").unwrap();
        std::fs::write(a.path().join("usbipd-x86_64-linux"), b"elf").unwrap();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_client(Arch::Aarch64, &dirs).unwrap(),
            b.path().join("usbipd-aarch64-linux")
        );
        assert_eq!(
            find_client(Arch::X86_64, &dirs).unwrap(),
            a.path().join("usbipd-x86_64-linux")
        );
        let e = find_client(Arch::Aarch64, &dirs[..1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("usbipd-aarch64-linux") && e.contains("--client"),
            "{e}"
        );
    }
}
