//! `kpnode init`.

use std::net::SocketAddr;
use std::path::PathBuf;

use kp_protocol::{ParticipantCode, ParticipantDirectory, Text};

use super::{CliResult, Failure};
use crate::clock::{Clock, SystemClock};
use crate::home::{InitOptions, NodeDir};

/// The long help of the command (clap takes a subcommand's from its variant, see `cli::Command`).
pub(crate) const LONG_ABOUT: &str =
    "Create a node directory for one participant: a signing key and a TLS key \
(Ed25519, PKCS#8 PEM, mode 0600 in a 0700 keys/ directory), a self-signed TLS certificate, \
node.toml with every setting documented, the API token and an empty store.\n\n\
Refuses a directory that already holds a node. Prints the node's fingerprint: read it to \
partners over the phone when they enrol your bundle.\n\n\
With --signing-key pkcs11:token=LABEL;object=KEY-LABEL and --pkcs11-module, the signing key \
lives in a PKCS#11 token (a hardware security module) instead of keys/signing.key.pem: a key \
pair already under that label is used if the token reports it sensitive, not extractable, \
private (usable only after login), allowed to sign and Ed25519 (refused otherwise, naming the \
attribute), otherwise one is made inside the token, not \
extractable and sensitive; the private key never leaves the token. With --tls-key pkcs11:token=LABEL;object=TLS-LABEL as well, the TLS key (which authenticates the node to its peers) is in the token too, under its own label, and no keys/tls.key.pem is written; the self-signed certificate and every TLS handshake are signed by the token. The token needs Ed25519 \
(CKM_EDDSA, PKCS#11 3.0). The user PIN comes from --pkcs11-pin-file (a file of mode 0600) or \
the environment variable KPNODE_PKCS11_PIN, never from the command line; the settings are \
written to node.toml's [pkcs11] section, which every later command reads.";

#[derive(Debug, clap::Args)]
#[command(
    about = "Create a node directory: keys, configuration, API token and store",
    after_help = "Example:\n  kpnode init --participant RU --authority \"Gokhran of Russia\" --dir /var/lib/kpnode \\\n    --peer-listen 0.0.0.0:7700 --advertise kp.gokhran.example:7700"
)]
pub struct InitArgs {
    /// The participant this node speaks for: ISO 3166-1 alpha-2 code, or EU.
    #[arg(long, value_name = "CODE")]
    participant: String,
    /// The issuing authority's name, as printed on certificates.
    #[arg(long, value_name = "NAME")]
    authority: String,
    /// Where to create the node.
    #[arg(long, env = "KPNODE_DIR", value_name = "DIR")]
    dir: PathBuf,
    /// Address partner nodes connect to [default: 127.0.0.1:7700].
    #[arg(long, value_name = "ADDR")]
    peer_listen: Option<SocketAddr>,
    /// Address of the local HTTP API [default: 127.0.0.1:7780].
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    /// HOST:PORT partners should dial, if not --peer-listen (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Vec<String>,
    /// The signing key in a PKCS#11 token, as an RFC 7512 URI
    /// (pkcs11:token=KP;object=kp-signing) [default: keys/signing.key.pem].
    #[arg(long, value_name = "URI", requires = "pkcs11_module")]
    signing_key: Option<String>,
    /// The TLS key in the same PKCS#11 module, as an RFC 7512 URI with its own object label
    /// (pkcs11:token=KP;object=kp-tls); needs --signing-key [default: keys/tls.key.pem].
    #[arg(long, value_name = "URI", requires = "signing_key")]
    tls_key: Option<String>,
    /// The token vendor's PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "PATH", requires = "signing_key")]
    pkcs11_module: Option<PathBuf>,
    /// A file holding the token's user PIN, mode 0600 [default: the environment variable
    /// KPNODE_PKCS11_PIN].
    #[arg(long, value_name = "FILE", requires = "signing_key")]
    pkcs11_pin_file: Option<PathBuf>,
}

pub fn run(a: InitArgs) -> CliResult {
    let mut problems = Vec::new();
    let participant = a
        .participant
        .parse::<ParticipantCode>()
        .map_err(|e| problems.push(format!("--participant: {:?} {e}", a.participant)))
        .ok();
    let authority = a.authority.parse::<Text>().map_err(|e| problems.push(format!("--authority: {e}"))).ok();
    if let Some(code) = participant {
        let registry = kp_exchange::registry::Registry::default();
        let view = registry.on(SystemClock.now().date());
        if view.entry(code).is_none() && view.union_of(code).is_none() {
            problems.push(format!(
                "--participant: {code} is neither a Kimberley Process participant nor a member state of a union participant in the list shipped with kpnode"
            ));
        }
    }
    let tls_key = match a.tls_key.as_deref().map(kp_keys::pkcs11uri::Pkcs11Uri::parse) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            problems.push(format!("--tls-key: {e}"));
            None
        }
    };
    let pkcs11 = match (&a.signing_key, &a.pkcs11_module) {
        (Some(uri), Some(module)) => match kp_keys::pkcs11uri::Pkcs11Uri::parse(uri) {
            Ok(signing_key) => Some(kp_config::Pkcs11 {
                module: module.clone(),
                pin_file: a.pkcs11_pin_file.clone(),
                signing_key,
                tls_key,
            }),
            Err(e) => {
                problems.push(format!("--signing-key: {e}"));
                None
            }
        },
        _ => None,
    };
    let (Some(participant), Some(authority)) = (participant, authority) else {
        return Err(Failure::inputs(problems));
    };
    if !problems.is_empty() {
        return Err(Failure::inputs(problems));
    }
    let dir = NodeDir::new(&a.dir);
    let opts = InitOptions {
        participant,
        authority,
        peer_listen: a.peer_listen,
        api_listen: a.api_listen,
        advertise: a.advertise,
        pkcs11,
    };
    let (config, keys) = dir.init(&opts, SystemClock.now())?;
    println!("Created node {participant} ({}) in {}", config.authority, a.dir.display());
    match &config.pkcs11 {
        Some(p) => {
            println!("  signing key   {} in {} (not extractable)", keys.signing.key_id(), p.signing_key)
        }
        None => println!("  signing key   {}", keys.signing.key_id()),
    }
    if let Some(t) = config.pkcs11.as_ref().and_then(|p| p.tls_key.as_ref()) {
        println!(
            "  TLS key       {} in {t} (not extractable)",
            kp_protocol::KeyId::of(&keys.tls.verifying_key())
        );
    }
    println!("  fingerprint   {}", keys.fingerprint());
    println!("  peers connect {}", config.endpoints().join(", "));
    println!("  local API     http://{}", config.network.api_listen);
    println!();
    println!(
        "Next: `kpnode peer export --dir {} --out {participant}.bundle`, send the bundle to",
        a.dir.display()
    );
    println!("each partner and read them the fingerprint; enrol theirs with `kpnode peer add`.");
    Ok(())
}
