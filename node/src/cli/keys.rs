//! `kpnode keys …`: this node's keys over time, and rotation.

use clap::Subcommand;
use serde_json::Value;

use super::peer::{access, Access};
use super::{CliResult, DirArg, Failure};
use crate::client::Client;
use crate::home::NodeDir;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Current and past keys of this node and of its peers, with validity windows.
    Show {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace keys; the rotation is announced to every peer, signed by the old and new key.
    #[command(long_about = "Replace the signing key, the TLS key, or both (the default). The \
rotation statement is signed by the key it replaces and by the new key, and delivered to every \
enrolled peer like any document. Peers update their key history at once: documents signed \
before the rotation keep verifying with the old key, and the old TLS key (and delivery of \
documents signed with the old signing key) is accepted for their tls_grace_period. Until a peer has acknowledged a TLS rotation, this node keeps presenting its \
previous TLS certificate to it. Export the bundle again afterwards (`kpnode peer export`) for \
partners who verify offline or enrol later. Needs the running daemon.\n\n\
With keys in a PKCS#11 token, the new key is made in the same token under the same label; \
--signing-key URI or --tls-key URI makes it under another label or in another token of the same \
module (and PIN) instead, and node.toml's [pkcs11] is updated to name it.")]
    Rotate {
        /// Rotate the signing key.
        #[arg(long)]
        signing: bool,
        /// Rotate the TLS key.
        #[arg(long)]
        tls: bool,
        /// Make the new signing key in the token under this RFC 7512 URI
        /// (pkcs11:token=KP;object=kp-signing-2); implies --signing.
        #[arg(long, value_name = "URI")]
        signing_key: Option<String>,
        /// Make the new TLS key in the token under this RFC 7512 URI; implies --tls.
        #[arg(long, value_name = "URI")]
        tls_key: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(c: KeysCommand) -> CliResult {
    match c {
        KeysCommand::Show { dir, json } => show(&dir, json),
        KeysCommand::Rotate { signing, tls, signing_key, tls_key, dir } => {
            let client = Client::for_dir(&NodeDir::new(&dir.dir))?;
            let (signing, tls) = (signing || signing_key.is_some(), tls || tls_key.is_some());
            let body = serde_json::json!({"signing": signing, "tls": tls, "signing_key": signing_key, "tls_key": tls_key})
                .to_string();
            let (_, v) = client.post("/v1/keys/rotate", body.as_bytes())?;
            let what = match (v["tls_rotated"].as_bool() == Some(true), signing || !tls) {
                (true, true) => "signing and TLS keys",
                (true, false) => "TLS key",
                _ => "signing key",
            };
            println!(
                "Rotated the {what} (rotation {}), effective {}; signing key now {}",
                v["sequence"],
                v["effective_from"].as_str().unwrap_or("?"),
                v["signing_key"].as_str().unwrap_or("?")
            );
            let peers: Vec<&str> = v["announced_to"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("Announced to {} peer(s): {}", peers.len(), peers.join(", "));
            println!("Send partners your new bundle too: kpnode peer export --dir {}", dir.dir.display());
            Ok(())
        }
    }
}

fn show(dir: &DirArg, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let v: Value = match access(&home)? {
        Access::Daemon(client) => client.get("/v1/keys")?,
        Access::Offline(store) => {
            let config = home.config()?;
            let keys = home.keys(&config)?;
            let trust = crate::state::load_trust(&store).map_err(|e| Failure::runtime(e.to_string()))?;
            serde_json::to_value(crate::api::keys_view(&keys, &trust))
                .map_err(|e| Failure::runtime(e.to_string()))?
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let print = |title: String, h: &Value| {
        println!("{title}");
        let mut rows = Vec::new();
        for k in h["signing"].as_array().into_iter().flatten() {
            rows.push(vec!["signing".into(), s(&k["key_id"]), s(&k["valid_from"]), s(&k["valid_until"])]);
        }
        for k in h["tls"].as_array().into_iter().flatten() {
            rows.push(vec!["tls".into(), s(&k["key_sha256"]), s(&k["valid_from"]), s(&k["replaced_at"])]);
        }
        super::output::table(
            &["  KEY", "ID", "VALID FROM", "UNTIL"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
        println!();
    };
    print(format!("{} (this node), fingerprint {}", s(&v["participant"]), s(&v["fingerprint"])), &v["own"]);
    for p in v["peers"].as_array().into_iter().flatten() {
        let removed = if p["removed"].as_bool() == Some(true) { " (removed)" } else { "" };
        print(
            format!("{}{removed}, fingerprint {}", s(&p["participant"]), s(&p["fingerprint"])),
            &p["history"],
        );
    }
    Ok(())
}
