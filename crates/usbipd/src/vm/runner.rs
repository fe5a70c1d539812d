//! Runs a plan's steps as processes, behind `Runner` so that tests can put a recording stand-in
//! in its place (the integration test puts fake `limactl`/`docker` executables on PATH instead,
//! to run the real binary end to end).

use std::fs::File;
use std::process::{Command, Stdio};

use super::plan::Step;

/// A step that could not run or failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` {reason}")]
pub struct StepError {
    pub command: String,
    pub reason: String,
}

/// Runs one step and returns its standard output.
pub trait Runner {
    fn run(&mut self, step: &Step) -> Result<String, StepError>;
}

/// Runs `plan` in order and stops at the first failing step.
pub fn run_plan(runner: &mut dyn Runner, plan: &[Step]) -> Result<(), StepError> {
    for step in plan {
        runner.run(step)?;
    }
    Ok(())
}

/// The real runner: each step a child process, its standard error passed through (the user sees
/// `limactl`'s and `docker`'s own messages), its standard output captured.
pub struct Processes;

impl Runner for Processes {
    fn run(&mut self, step: &Step) -> Result<String, StepError> {
        let fail = |reason: String| StepError {
            command: step.display(),
            reason,
        };
        tracing::debug!("running {}", step.display());
        let stdin = match &step.stdin {
            Some(path) => Stdio::from(
                File::open(path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?,
            ),
            None => Stdio::null(),
        };
        let out = Command::new(&step.program)
            .args(&step.args)
            .stdin(stdin)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    fail(format!(
                        "cannot run: {} is not installed (or not on PATH)",
                        step.program
                    ))
                } else {
                    fail(format!("cannot run: {e}"))
                }
            })?;
        if !out.status.success() {
            return Err(fail(format!("failed ({})", out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
