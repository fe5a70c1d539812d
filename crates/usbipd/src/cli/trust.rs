//! `usbipd trust add|list|remove` and `usbipd pair`: which client keys the TLS listener admits
//! (the trust store in the state directory), and one-time pairing codes that let a client
//! register its own key. They edit files the running server reads at each TLS handshake.

use super::StateArg;
use crate::tls::pairing::{Pairing, TTL_SECS};
use crate::tls::trust::{parse_key_argument, Trust};
use crate::tls::{Fingerprint, Identity, SERVER_KEY};

#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// Trust a client key: its fingerprint (SHA256:...), its key line (usbipd-key ...), or a
    /// file holding either (`usbipd client key` prints them on the client)
    Add(AddArgs),
    /// The trusted client keys
    List(ListArgs),
    /// Stop trusting a client key (by fingerprint, key line or file)
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[arg(value_name = "KEY|FILE")]
    pub key: String,
    /// A name to list it by [default: the key line's comment]
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[arg(value_name = "KEY|FILE")]
    pub key: String,
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, clap::Args)]
pub struct PairArgs {
    #[command(flatten)]
    pub state: StateArg,
}

pub fn run(cmd: TrustCommand) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::Add(args) => {
            let (fingerprint, comment) =
                parse_key_argument(&args.key).map_err(anyhow::Error::msg)?;
            let name = args.name.unwrap_or(comment);
            let trust = Trust::new(&args.state.dir()?);
            if trust.add(fingerprint, &name)? {
                println!("trusted {fingerprint}{}", named(&name));
            } else {
                println!("{fingerprint} was trusted already");
            }
        }
        TrustCommand::List(args) => {
            let trust = Trust::new(&args.state.dir()?);
            let clients = trust.list()?;
            if clients.is_empty() {
                println!("no client key is trusted (usbipd trust add KEY, or usbipd pair)");
            }
            for c in clients {
                println!("{}{}", c.fingerprint, named(&c.name));
            }
        }
        TrustCommand::Remove(args) => {
            let (fingerprint, _) = parse_key_argument(&args.key).map_err(anyhow::Error::msg)?;
            let trust = Trust::new(&args.state.dir()?);
            if trust.remove(&fingerprint)? {
                println!("no longer trusted: {fingerprint}");
            } else {
                anyhow::bail!("{fingerprint} is not trusted (usbipd trust list)");
            }
        }
    }
    Ok(())
}

/// `usbipd pair`: a one-time code, and the server key's fingerprint to pin with it.
pub fn pair(args: PairArgs) -> anyhow::Result<()> {
    let dir = args.state.dir()?;
    let (identity, _) = Identity::load_or_create(&dir.join(SERVER_KEY))?;
    let code = Pairing::new(&dir).issue()?;
    print_pairing(&code, identity.fingerprint());
    Ok(())
}

fn print_pairing(code: &str, fingerprint: Fingerprint) {
    println!(
        "pairing code: {code}   (valid {} minutes, once)",
        TTL_SECS / 60
    );
    println!("server key:   {fingerprint}");
    println!("on the client: usbipd client attach --tls --remote <this host> --pair {code} --fingerprint {fingerprint} --busid <busid>");
}

fn named(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!("  {name}")
    }
}
