//! Every command sequence of `usbipd attach`/`detach` for Lima and Docker, word for word.

use super::*;

fn lima(auto: bool) -> Attachment {
    Attachment {
        busid: "1-2.3".into(),
        vm: Vm::Lima {
            instance: "default".into(),
        },
        remote: "host.lima.internal".into(),
        auto,
    }
}

fn docker(auto: bool) -> Attachment {
    Attachment {
        busid: "0-3".into(),
        vm: Vm::Docker {
            image: "alpine".into(),
        },
        remote: "host.docker.internal:3240".into(),
        auto,
    }
}

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::display).collect()
}

#[test]
fn lima_one_shot_copies_installs_and_attaches_with_sudo() {
    let steps = attach_plan(&lima(false), Path::new("/opt/usbipd/usbipd-aarch64-linux")).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "limactl copy /opt/usbipd/usbipd-aarch64-linux default:/tmp/usbipd-client",
            "limactl shell default sudo sh -c 'cp /tmp/usbipd-client /usr/local/bin/usbipd.new && chmod 0755 /usr/local/bin/usbipd.new && mv /usr/local/bin/usbipd.new /usr/local/bin/usbipd'",
            "limactl shell default sudo /usr/local/bin/usbipd client attach --remote host.lima.internal --busid 1-2.3",
        ]
    );
    assert!(steps.iter().all(|s| s.stdin.is_none()));
    assert_eq!(
        lines(&detach_plan(&lima(false)).unwrap()),
        ["limactl shell default sudo /usr/local/bin/usbipd client detach --busid 1-2.3"]
    );
}

#[test]
fn lima_auto_runs_in_its_own_session_and_detach_sends_it_sigterm() {
    let steps = attach_plan(&lima(true), Path::new("/c")).unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        steps[2].args,
        [
            "shell",
            "default",
            "sudo",
            "sh",
            "-c",
            "setsid /usr/local/bin/usbipd client attach --remote host.lima.internal --busid 1-2.3 --auto </dev/null >>/var/log/usbipd-attach-1-2.3.log 2>&1 & echo $! > /run/usbipd-attach-1-2.3.pid && sleep 1 && kill -0 $!"
        ]
    );
    let stop = detach_plan(&lima(true)).unwrap();
    assert_eq!(
        stop[0].args,
        [
            "shell",
            "default",
            "sudo",
            "sh",
            "-c",
            "kill -TERM $(cat /run/usbipd-attach-1-2.3.pid) && rm -f /run/usbipd-attach-1-2.3.pid"
        ]
    );
}

#[test]
fn docker_pipes_the_client_into_the_vm_and_attaches_through_nsenter() {
    let steps = attach_plan(&docker(false), Path::new("/x/usbipd-x86_64-linux")).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].program, "docker");
    assert_eq!(
        steps[0].args[..5],
        ["run", "--rm", "-i", "--privileged", "--pid=host"]
    );
    assert_eq!(steps[0].args[5..7], ["alpine", "sh"]);
    assert!(
        steps[0].args[8].contains("cat > /proc/1/root/run/usbipd-client/usbipd.new"),
        "{:?}",
        steps[0].args
    );
    assert_eq!(
        steps[0].stdin.as_deref(),
        Some(Path::new("/x/usbipd-x86_64-linux"))
    );
    assert_eq!(
        steps[1].display(),
        "docker run --rm --privileged --pid=host alpine nsenter -t 1 -m -- /run/usbipd-client/usbipd client attach --remote host.docker.internal:3240 --busid 0-3"
    );
    assert_eq!(
        lines(&detach_plan(&docker(false)).unwrap()),
        ["docker run --rm --privileged --pid=host alpine nsenter -t 1 -m -- /run/usbipd-client/usbipd client detach --busid 0-3"]
    );
}

#[test]
fn docker_auto_runs_a_named_detached_container_that_detach_stops() {
    let steps = attach_plan(&docker(true), Path::new("/c")).unwrap();
    assert_eq!(
        steps[1].display(),
        "docker run --rm -d --name usbipd-attach-0-3 --privileged --pid=host alpine nsenter -t 1 -m -- /run/usbipd-client/usbipd client attach --remote host.docker.internal:3240 --busid 0-3 --auto"
    );
    assert_eq!(
        lines(&detach_plan(&docker(true)).unwrap()),
        ["docker stop usbipd-attach-0-3"]
    );
}

#[test]
fn arch_probes_and_their_answers() {
    assert_eq!(
        lima(false).vm.arch_probe().display(),
        "limactl shell default uname -m"
    );
    assert_eq!(
        docker(false).vm.arch_probe().display(),
        "docker version --format '{{.Server.Arch}}'"
    );
    assert_eq!(Arch::parse("x86_64\n"), Some(Arch::X86_64));
    assert_eq!(Arch::parse("arm64"), Some(Arch::Aarch64));
    assert_eq!(Arch::parse("aarch64"), Some(Arch::Aarch64));
    assert_eq!(Arch::parse("riscv64"), None);
    assert_eq!(Arch::Aarch64.client_file(), "usbipd-aarch64-linux");
    assert_eq!(lima(false).vm.host_alias(), "host.lima.internal");
    assert_eq!(docker(false).vm.host_alias(), "host.docker.internal");
}

#[test]
fn nothing_reaches_a_shell_unchecked() {
    let mut a = lima(true);
    a.busid = "1-2; rm -rf /".into();
    assert_eq!(
        attach_plan(&a, Path::new("/c")),
        Err(PlanError::Busid(a.busid.clone()))
    );
    let mut a = lima(true);
    a.remote = "host$(reboot)".into();
    assert!(matches!(
        attach_plan(&a, Path::new("/c")),
        Err(PlanError::Remote(_))
    ));
    let mut a = lima(false);
    a.vm = Vm::Lima {
        instance: "--help".into(),
    };
    assert!(matches!(detach_plan(&a), Err(PlanError::Instance(_))));
    let mut a = docker(false);
    a.vm = Vm::Docker {
        image: "alpine sh".into(),
    };
    assert!(matches!(
        attach_plan(&a, Path::new("/c")),
        Err(PlanError::Image(_))
    ));
}

#[test]
fn displayed_commands_quote_what_a_shell_would_split() {
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), r"'it'\''s'");
    assert_eq!(quote("0-3"), "0-3");
    assert_eq!(quote(""), "''");
}
