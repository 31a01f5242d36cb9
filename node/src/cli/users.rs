//! `kpnode users …`: the console's accounts. Like `kpnode peer`, each command works on a
//! running daemon (through its API) or, with the daemon stopped, on the store directly.

use std::io::{BufRead, Read};

use clap::Subcommand;
use serde_json::{json, Value};

use super::peer::{access, Access};
use super::{CliResult, DirArg, Failure};
use crate::client::segment;
use crate::clock::{Clock, SystemClock};
use crate::home::NodeDir;
use crate::service::accounts::{self, Account, AccountError, Role};

const ADD_LONG_ABOUT: &str = "Create an account for a person who signs in to the node's console \
(at / of the API listener). Roles: clerk (drafts, validates and submits certificates), \
supervisor (a clerk's rights, and voids, partners, keys, the participant registry), customs \
(inbound certificates: verifies, confirms imports), auditor (reads everything, statistics, log \
verification; changes nothing).\n\n\
With --password-stdin the password is the first line of standard input (at least 12 \
characters). Without it, a one-time password is made and printed once: the user must choose \
a new one at first sign-in. Only an Argon2id hash of a password is stored.\n\n\
--language sets the language the console speaks to the user (en or ru, one per catalogue in \
node/data/console/); the user can change it on the console's password page.";

const UNLOCK_LONG_ABOUT: &str = "Clear an account's sign-in locks: the lock of the account from an \
address after 5 wrong passwords from there (15 minutes), and the slowdown of the account after \
10 wrong passwords from anywhere. The locks are kept in the running daemon's memory, so on a \
stopped node there is nothing to clear (the command says so). Addresses locked for wrong \
passwords over many accounts stay locked; they end after 15 minutes.";

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a console account with a role; prints a one-time password unless one is given.
    #[command(long_about = ADD_LONG_ABOUT)]
    Add {
        /// The account's name: 1 to 32 of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// clerk, supervisor, customs or auditor.
        #[arg(long, value_name = "ROLE")]
        role: String,
        /// The console's language for the user: en or ru.
        #[arg(long, value_name = "CODE", default_value = "en")]
        language: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// List the console's accounts and their roles.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot sign in any more, and its open sessions end.
    Disable {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Clear an account's sign-in locks (after wrong passwords) on the running daemon.
    #[command(long_about = UNLOCK_LONG_ABOUT)]
    Unlock {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Set an account's password; prints a one-time password unless one is given.
    #[command(long_about = "Set an account's password, for a user who forgot theirs. With \
--password-stdin the password is the first line of standard input; without it, a one-time \
password is made and printed once, which the user must change at the next sign-in. A disabled \
account stays disabled. The account's open console sessions end.")]
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(c: UsersCommand) -> CliResult {
    match c {
        UsersCommand::Add { name, role, language, password_stdin, dir } => {
            add(&dir, &name, &role, &language, password_stdin)
        }
        UsersCommand::Unlock { name, dir } => unlock(&dir, &name),
        UsersCommand::List { dir, json } => list(&dir, json),
        UsersCommand::Disable { name, dir } => disable(&dir, &name),
        UsersCommand::Passwd { name, password_stdin, dir } => passwd(&dir, &name, password_stdin),
    }
}

fn account_failure(e: AccountError) -> Failure {
    if e.is_invalid_input() {
        Failure::input(e.to_string())
    } else {
        Failure::runtime(e.to_string())
    }
}

/// The first line of standard input, without its line ending; bounded, so a stray file piped
/// in is not read whole.
fn password_from_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    let limit = (accounts::MAX_PASSWORD + 2) as u64;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_line(&mut line)
        .map_err(|e| Failure::input(format!("password: cannot read standard input: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Failure::input("password: standard input had no password on its first line"));
    }
    Ok(password)
}

fn parse_account(v: &Value) -> Result<Account, Failure> {
    serde_json::from_value(v.clone()).map_err(|e| Failure::runtime(format!("the daemon's answer: {e}")))
}

fn print_password(account: &Account, one_time: Option<&str>) {
    match one_time {
        Some(p) => {
            println!("one-time password for {}: {p}", account.name);
            println!("It is shown only now; {} must choose a new password at first sign-in.", account.name);
        }
        None => println!("The password given is set for {}.", account.name),
    }
}

fn add(dir: &DirArg, name: &str, role: &str, language: &str, password_stdin: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let role: Role = role.parse().map_err(account_failure)?;
    accounts::check_name(name).map_err(account_failure)?;
    accounts::check_language(language).map_err(account_failure)?;
    let password = if password_stdin { Some(password_from_stdin()?) } else { None };
    let (account, one_time) = match access(&home)? {
        Access::Daemon(client) => {
            let body = json!({"name": name, "role": role, "language": language, "password": password});
            let (_, v) = client.post("/v1/users", body.to_string().as_bytes())?;
            (parse_account(&v["account"])?, v["one_time_password"].as_str().map(str::to_owned))
        }
        Access::Offline(store) => {
            let added =
                accounts::add(&store, name, role, Some(language), password.as_deref(), SystemClock.now())
                    .map_err(account_failure)?;
            (added.account, added.one_time_password)
        }
    };
    println!("Added {} ({}, console in {})", account.name, account.role, account.language);
    print_password(&account, one_time.as_deref());
    Ok(())
}

fn list(dir: &DirArg, as_json: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    let list: Vec<Account> = match access(&home)? {
        Access::Daemon(client) => serde_json::from_value(client.get("/v1/users")?)
            .map_err(|e| Failure::runtime(format!("the daemon's answer: {e}")))?,
        Access::Offline(store) => accounts::list(&store).map_err(account_failure)?,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let state = match (a.disabled, a.must_change_password) {
                (true, _) => "disabled",
                (false, true) => "must change password",
                (false, false) => "active",
            };
            vec![
                a.name.clone(),
                a.role.to_string(),
                a.language.clone(),
                state.to_owned(),
                a.password_changed_at.to_string(),
            ]
        })
        .collect();
    super::output::table(&["NAME", "ROLE", "LANGUAGE", "STATE", "PASSWORD SET"], &rows);
    Ok(())
}

fn disable(dir: &DirArg, name: &str) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    accounts::check_name(name).map_err(account_failure)?;
    match access(&home)? {
        Access::Daemon(client) => {
            client.post(&format!("/v1/users/{}/disable", segment(name)), b"")?;
            println!("Disabled {name}: it cannot sign in, and its open sessions have ended.");
        }
        Access::Offline(store) => {
            accounts::disable(&store, name).map_err(account_failure)?;
            println!("Disabled {name}: it cannot sign in.");
        }
    }
    Ok(())
}

fn unlock(dir: &DirArg, name: &str) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    accounts::check_name(name).map_err(account_failure)?;
    match access(&home)? {
        Access::Daemon(client) => {
            let v = client.post(&format!("/v1/users/{}/unlock", segment(name)), b"")?.1;
            if v["was_locked"].as_bool().unwrap_or(false) {
                println!("Unlocked {name}: it can sign in again from every address.");
            } else {
                println!("{name} was not locked; nothing changed.");
            }
        }
        Access::Offline(store) => {
            accounts::get(&store, name).map_err(account_failure)?;
            println!(
                "The node is not running: sign-in locks live in the running daemon's memory and ended with it, so {name} has none."
            );
        }
    }
    Ok(())
}

fn passwd(dir: &DirArg, name: &str, password_stdin: bool) -> CliResult {
    let home = NodeDir::new(&dir.dir);
    accounts::check_name(name).map_err(account_failure)?;
    let password = if password_stdin { Some(password_from_stdin()?) } else { None };
    let (account, one_time) = match access(&home)? {
        Access::Daemon(client) => {
            let body = json!({ "password": password });
            let (_, v) =
                client.post(&format!("/v1/users/{}/password", segment(name)), body.to_string().as_bytes())?;
            (parse_account(&v["account"])?, v["one_time_password"].as_str().map(str::to_owned))
        }
        Access::Offline(store) => {
            accounts::reset_password(&store, name, password.as_deref(), SystemClock.now())
                .map_err(account_failure)?
        }
    };
    print_password(&account, one_time.as_deref());
    println!("{}'s open console sessions have ended.", account.name);
    if account.disabled {
        println!("{} stays disabled.", account.name);
    }
    Ok(())
}
