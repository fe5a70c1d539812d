//! `usbipd completions SHELL` and `usbipd manpages DIR`: shell completions and man pages
//! generated from the command-line definition itself, so they never drift from it.

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// Directory to write usbipd.1 and one usbipd-COMMAND.1 per command into.
    pub dir: PathBuf,
}

/// Prints the completion script for `shell` (install it where the shell looks; see README).
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    // Into a buffer first: the generator panics on a write error (say, a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "usbipd", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(())
}

/// Writes the man pages: `usbipd.1`, then `usbipd-bind.1`, `usbipd-extension-run.1`, ... for
/// every visible command, nested ones included. Prints each file written.
pub fn manpages(args: ManpagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.dir.display()))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    write_page(&args.dir, cmd)
}

fn write_page(dir: &std::path::Path, cmd: clap::Command) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(&path, page).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    writeln!(std::io::stdout(), "{}", path.display())?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_page(dir, sub.clone())?;
    }
    Ok(())
}
