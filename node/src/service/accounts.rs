//! The console's accounts: people who sign in to the node's console, each with one role.
//! Shared by `kpnode users …` (offline, on the store) and the API and console (on a running
//! daemon), so the rules — names, password length, Argon2id, who may do what — live here once.
//!
//! Accounts sit in the store's own account table (see `crate::store::AccountTable`): the node
//! directory's backup and its permissions then cover them, a write is flushed before it is
//! reported done, and a running daemon and an offline command can never both write them (the
//! store's lock decides which one does).
//!
//! Passwords are hashed with Argon2id (RFC 9106) at the `argon2` crate's defaults (19 MiB,
//! two passes, one lane: the OWASP minimum), stored as PHC strings, so stronger parameters can
//! be adopted later without invalidating stored hashes.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use kp_protocol::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::{SledStore, StoreError};

/// What a person may do is decided by their role alone, on the server, for every action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Drafts, validates and submits certificates.
    Clerk,
    /// A clerk's rights, and voids, partners, keys and the participant registry.
    Supervisor,
    /// Inbound certificates at the border: verifies and confirms imports.
    Customs,
    /// Reads everything, verifies the log, statistics; changes nothing.
    Auditor,
}

/// Everything a console user can do that a role may be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Draft, validate and submit a certificate.
    Issue,
    /// Void an issued certificate.
    Void,
    /// Confirm the import of an inbound certificate, or record a discrepancy.
    ConfirmImport,
    /// Verify a `.kpc` file or a QR seal.
    Verify,
    /// Enrol or remove partners.
    ManagePeers,
    /// Rotate the node's keys.
    ManageKeys,
    /// Set a participant's status in the registry.
    ManageParticipants,
    /// Statistics, reconciliation and the log's verification.
    Audit,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Clerk, Role::Supervisor, Role::Customs, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Supervisor => "supervisor",
            Role::Customs => "customs",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role may do `action`. Reading pages needs no role beyond being signed in.
    pub fn may(self, action: Action) -> bool {
        use Action as A;
        match self {
            Role::Supervisor => !matches!(action, A::ConfirmImport),
            Role::Clerk => matches!(action, A::Issue | A::Verify),
            Role::Customs => matches!(action, A::ConfirmImport | A::Verify),
            Role::Auditor => matches!(action, A::Verify | A::Audit),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Role, AccountError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| AccountError::UnknownRole(s.to_owned()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account's console language when its stored record names none (accounts made before
/// languages were stored).
fn default_language() -> String {
    super::i18n::DEFAULT_LANGUAGE.to_owned()
}

/// A stored account. The hash never leaves this module but through [`check_password`].
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    role: Role,
    /// The Argon2id PHC string.
    password_hash: String,
    disabled: bool,
    /// Set for a one-time password: the console lets the user do nothing but choose a new one.
    must_change_password: bool,
    /// The console's language, a catalogue's code (`en`, `ru`). Records written before
    /// languages were codes hold `"en"` or `"ru"` already, or nothing: all read.
    #[serde(default = "default_language")]
    language: String,
    #[serde(with = "rfc3339")]
    created_at: Timestamp,
    #[serde(with = "rfc3339")]
    password_changed_at: Timestamp,
    /// Bumped whenever the password is set (by the user or an administrator): a console
    /// session signed in under another generation has ended. 0 in older records.
    #[serde(default)]
    password_generation: u64,
}

/// An account as shown to people and answered by the API: no hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub must_change_password: bool,
    /// The console's language: a code of `kpnode users add --language` (`en`, `ru`).
    pub language: String,
    #[schema(value_type = String, example = "2026-03-01T09:30:00.000Z")]
    #[serde(with = "rfc3339")]
    pub created_at: Timestamp,
    #[schema(value_type = String, example = "2026-03-01T09:30:00.000Z")]
    #[serde(with = "rfc3339")]
    pub password_changed_at: Timestamp,
    /// The password's generation (see `Record`): compared by the console on every request,
    /// never answered.
    #[serde(skip)]
    pub password_generation: u64,
}

/// Instants as the text [`Timestamp`] displays (RFC 3339, UTC), both ways.
mod rfc3339 {
    use kp_protocol::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an account operation was refused. All but `Store` and `Corrupt` are the caller's to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error("name {0:?}: use 1 to 32 characters, lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("role {0:?}: use one of clerk, supervisor, customs, auditor")]
    UnknownRole(String),
    #[error("language {0:?}: the console speaks {langs}; use one of those codes", langs = super::i18n::codes().join(", "))]
    UnknownLanguage(String),
    #[error("password: use at least {MIN_PASSWORD} characters (a passphrase of a few words is easiest)")]
    PasswordTooShort,
    #[error("password: use at most {MAX_PASSWORD} bytes")]
    PasswordTooLong,
    #[error("the new password must differ from the current one")]
    PasswordUnchanged,
    #[error("an account named {0:?} exists already; `kpnode users passwd {0}` sets its password")]
    Exists(String),
    #[error("no account is named {0:?}; `kpnode users list` shows the accounts")]
    NotFound(String),
    #[error("the account {0:?} changed while this change was made; try again")]
    Conflict(String),
    #[error(
        "the stored account {name:?} cannot be read ({why}); set it again with `kpnode users passwd {name}`"
    )]
    Corrupt { name: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccountError {
    /// Whether the request itself was at fault (an exit status of 2, an answer of 422).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, AccountError::Store(_) | AccountError::Corrupt { .. } | AccountError::Conflict(_))
    }

    /// The request field the error is about, for the API's problem list and the console's forms.
    pub fn field(&self) -> &'static str {
        match self {
            AccountError::InvalidName(_) | AccountError::Exists(_) | AccountError::NotFound(_) => "name",
            AccountError::UnknownRole(_) => "role",
            AccountError::UnknownLanguage(_) => "language",
            AccountError::PasswordTooShort
            | AccountError::PasswordTooLong
            | AccountError::PasswordUnchanged => "password",
            _ => "",
        }
    }
}

/// The shortest password accepted: NIST SP 800-63B asks for at least 8; a border office's
/// shared terminals ask for more.
pub const MIN_PASSWORD: usize = 12;
/// Argon2 reads the whole password; this bounds the work a sign-in attempt can ask for.
pub const MAX_PASSWORD: usize = 256;

/// A valid account name: 1–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.chars().take(40).collect()))
    }
}

fn check_password_rules(password: &str) -> Result<(), AccountError> {
    if password.len() > MAX_PASSWORD {
        return Err(AccountError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(AccountError::PasswordTooShort);
    }
    Ok(())
}

fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    // Hashing with the default parameters and a fresh salt cannot fail: the password's
    // length is bounded above and the salt is valid by construction.
    match Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(h) => h.to_string(),
        Err(e) => unreachable!("argon2 with default parameters refused a bounded password: {e}"),
    }
}

/// A one-time password: 20 characters from an alphabet without look-alikes (about 100 bits).
pub fn one_time_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    let chars: String = (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    // Groups of five, easier to read out and type.
    chars.as_bytes().chunks(5).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
}

fn decode(name: &str, bytes: &[u8]) -> Result<Record, AccountError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AccountError::Corrupt { name: name.to_owned(), why: e.to_string() })
}

fn encode(record: &Record) -> Vec<u8> {
    // A struct of strings, booleans and enums always serialises.
    serde_json::to_vec(record).unwrap_or_default()
}

fn view(name: &str, r: &Record) -> Account {
    Account {
        name: name.to_owned(),
        role: r.role,
        disabled: r.disabled,
        must_change_password: r.must_change_password,
        language: r.language.clone(),
        created_at: r.created_at,
        password_changed_at: r.password_changed_at,
        password_generation: r.password_generation,
    }
}

/// What [`add`] made: the account, and the one-time password if none was given.
#[derive(Debug)]
pub struct Added {
    pub account: Account,
    pub one_time_password: Option<String>,
}

/// A language the console speaks.
pub fn check_language(code: &str) -> Result<(), AccountError> {
    if super::i18n::is_available(code) {
        Ok(())
    } else {
        Err(AccountError::UnknownLanguage(code.chars().take(40).collect()))
    }
}

/// Creates an account, whose console speaks `language` (English when `None`). Without a
/// password, a one-time password is made, which the user must change at first sign-in.
/// Hashing takes tens of milliseconds: call from a blocking thread.
pub fn add(
    store: &SledStore,
    name: &str,
    role: Role,
    language: Option<&str>,
    password: Option<&str>,
    now: Timestamp,
) -> Result<Added, AccountError> {
    check_name(name)?;
    let language = language.unwrap_or(super::i18n::DEFAULT_LANGUAGE);
    check_language(language)?;
    let one_time = match password {
        Some(p) => {
            check_password_rules(p)?;
            None
        }
        None => Some(one_time_password()),
    };
    let password = password.or(one_time.as_deref()).unwrap_or_default();
    let record = Record {
        role,
        password_hash: hash(password),
        disabled: false,
        must_change_password: one_time.is_some(),
        language: language.to_owned(),
        created_at: now,
        password_changed_at: now,
        password_generation: 0,
    };
    if !store.accounts().insert_new(name, &encode(&record))? {
        return Err(AccountError::Exists(name.to_owned()));
    }
    Ok(Added { account: view(name, &record), one_time_password: one_time })
}

/// Every account, in name order.
pub fn list(store: &SledStore) -> Result<Vec<Account>, AccountError> {
    store
        .accounts()
        .all()?
        .into_iter()
        .map(|(k, v)| {
            let name = String::from_utf8_lossy(&k).into_owned();
            decode(&name, &v).map(|r| view(&name, &r))
        })
        .collect()
}

/// One account.
pub fn get(store: &SledStore, name: &str) -> Result<Account, AccountError> {
    let (_, record) = load(store, name)?;
    Ok(view(name, &record))
}

fn load(store: &SledStore, name: &str) -> Result<(Vec<u8>, Record), AccountError> {
    check_name(name)?;
    let bytes = store.accounts().get(name)?.ok_or_else(|| AccountError::NotFound(name.to_owned()))?;
    let record = decode(name, &bytes)?;
    Ok((bytes, record))
}

/// Changes an account in place, refusing if it changed meanwhile (two supervisors at once).
fn update(store: &SledStore, name: &str, change: impl FnOnce(&mut Record)) -> Result<Account, AccountError> {
    let (old, mut record) = load(store, name)?;
    change(&mut record);
    if !store.accounts().replace(name, &old, &encode(&record))? {
        return Err(AccountError::Conflict(name.to_owned()));
    }
    Ok(view(name, &record))
}

/// Disables an account: it can no longer sign in, and the console ends its sessions at their
/// next request. Disabling twice is not an error.
pub fn disable(store: &SledStore, name: &str) -> Result<Account, AccountError> {
    update(store, name, |r| r.disabled = true)
}

/// Sets a password an administrator chose or made (`users passwd`): without one, a one-time
/// password is made, to be changed at the next sign-in. A disabled account stays disabled.
pub fn reset_password(
    store: &SledStore,
    name: &str,
    password: Option<&str>,
    now: Timestamp,
) -> Result<(Account, Option<String>), AccountError> {
    if let Some(p) = password {
        check_password_rules(p)?;
    }
    let one_time = password.is_none().then(one_time_password);
    let hashed = hash(password.or(one_time.as_deref()).unwrap_or_default());
    let account = update(store, name, |r| {
        r.password_hash = hashed;
        r.must_change_password = one_time.is_some();
        r.password_changed_at = now;
        r.password_generation = r.password_generation.wrapping_add(1);
    })?;
    Ok((account, one_time))
}

/// The user's own change of password (the console's form), after [`check_password`] passed.
pub fn change_own_password(
    store: &SledStore,
    name: &str,
    current: &str,
    new: &str,
    now: Timestamp,
) -> Result<Account, AccountError> {
    check_password_rules(new)?;
    if current == new {
        return Err(AccountError::PasswordUnchanged);
    }
    let hashed = hash(new);
    update(store, name, |r| {
        r.password_hash = hashed;
        r.must_change_password = false;
        r.password_changed_at = now;
        r.password_generation = r.password_generation.wrapping_add(1);
    })
}

/// Sets the console's language for a user (the console's profile page).
pub fn set_language(store: &SledStore, name: &str, language: &str) -> Result<Account, AccountError> {
    check_language(language)?;
    update(store, name, |r| r.language = language.to_owned())
}

/// Why a sign-in failed. Deliberately coarse: the console says the same for a wrong name and a
/// wrong password, so it does not tell which names exist.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefusal {
    WrongCredentials,
    Disabled,
}

/// Checks a password. An unknown name costs the same Argon2 work as a known one, so timing
/// does not tell which names exist either.
pub fn check_password(store: &SledStore, name: &str, password: &str) -> Result<Account, SignInError> {
    let found = match load(store, name) {
        Ok((_, r)) => Some(r),
        Err(AccountError::NotFound(_) | AccountError::InvalidName(_)) => None,
        Err(e) => return Err(SignInError::Account(e)),
    };
    let password = if password.len() > MAX_PASSWORD { "" } else { password };
    let phc = found.as_ref().map_or(DUMMY_HASH.as_str(), |r| r.password_hash.as_str());
    let matches = PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    match found {
        Some(r) if matches && !r.disabled => Ok(view(name, &r)),
        Some(r) if matches && r.disabled => Err(SignInError::Refused(SignInRefusal::Disabled)),
        _ => Err(SignInError::Refused(SignInRefusal::WrongCredentials)),
    }
}

/// Why [`check_password`] did not sign someone in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("sign-in refused: {0:?}")]
    Refused(SignInRefusal),
    #[error(transparent)]
    Account(AccountError),
}

/// The hash of a password no one knows, made with the same parameters as real ones, verified
/// against when the name is unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash(&one_time_password()));

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::create(&dir.path().join("store"), 16).unwrap();
        (dir, store)
    }

    const NOW: Timestamp = Timestamp::from_unix_millis(1_780_000_000_000);

    #[test]
    fn records_written_before_languages_and_generations_read() {
        let (_d, s) = store();
        let old = br#"{"role":"clerk","password_hash":"x","disabled":false,"must_change_password":false,"created_at":"2026-03-01T09:30:00.000Z","password_changed_at":"2026-03-01T09:30:00.000Z"}"#;
        let with_enum = br#"{"role":"clerk","password_hash":"x","disabled":false,"must_change_password":false,"language":"ru","created_at":"2026-03-01T09:30:00.000Z","password_changed_at":"2026-03-01T09:30:00.000Z"}"#;
        assert!(s.accounts().insert_new("old", old).unwrap());
        assert!(s.accounts().insert_new("older", with_enum).unwrap());
        let a = get(&s, "old").unwrap();
        assert_eq!((a.language.as_str(), a.password_generation), ("en", 0));
        assert_eq!(get(&s, "older").unwrap().language, "ru");
    }

    #[test]
    fn roles_allow_what_the_issue_says() {
        assert!(Role::Clerk.may(Action::Issue) && !Role::Clerk.may(Action::Void));
        assert!(Role::Supervisor.may(Action::Void) && Role::Supervisor.may(Action::ManagePeers));
        assert!(Role::Customs.may(Action::ConfirmImport) && !Role::Customs.may(Action::Issue));
        assert!(!Role::Auditor.may(Action::Issue) && Role::Auditor.may(Action::Audit));
        assert!(!Role::Auditor.may(Action::Void) && !Role::Clerk.may(Action::ManageKeys));
    }

    #[test]
    fn add_check_disable_and_passwords() {
        let (_d, s) = store();
        let added = add(&s, "anna", Role::Clerk, None, Some("correct horse battery"), NOW).unwrap();
        assert!(added.one_time_password.is_none() && !added.account.must_change_password);
        assert!(matches!(add(&s, "anna", Role::Auditor, None, None, NOW), Err(AccountError::Exists(_))));
        assert!(matches!(add(&s, "Anna!", Role::Clerk, None, None, NOW), Err(AccountError::InvalidName(_))));
        assert!(matches!(
            add(&s, "bob", Role::Clerk, None, Some("short"), NOW),
            Err(AccountError::PasswordTooShort)
        ));

        assert_eq!(check_password(&s, "anna", "correct horse battery").unwrap().role, Role::Clerk);
        assert!(matches!(
            check_password(&s, "anna", "wrong horse battery"),
            Err(SignInError::Refused(SignInRefusal::WrongCredentials))
        ));
        assert!(matches!(
            check_password(&s, "nobody", "correct horse battery"),
            Err(SignInError::Refused(SignInRefusal::WrongCredentials))
        ));

        let otp = add(&s, "olga", Role::Customs, Some("ru"), None, NOW).unwrap();
        let one_time = otp.one_time_password.unwrap();
        assert!(otp.account.must_change_password);
        assert!(check_password(&s, "olga", &one_time).unwrap().must_change_password);
        assert!(matches!(
            change_own_password(&s, "olga", &one_time, &one_time, NOW),
            Err(AccountError::PasswordUnchanged)
        ));
        change_own_password(&s, "olga", &one_time, "a much better passphrase", NOW).unwrap();
        assert!(!check_password(&s, "olga", "a much better passphrase").unwrap().must_change_password);

        disable(&s, "anna").unwrap();
        assert!(matches!(
            check_password(&s, "anna", "correct horse battery"),
            Err(SignInError::Refused(SignInRefusal::Disabled))
        ));
        let before = get(&s, "anna").unwrap().password_generation;
        let (a, otp) = reset_password(&s, "anna", None, NOW).unwrap();
        assert!(a.disabled && a.must_change_password && otp.is_some());
        assert_eq!(a.password_generation, before + 1, "a reset ends the account's sessions");
        assert!(!serde_json::to_string(&a).unwrap().contains("generation"), "never answered");

        // Languages: a code a catalogue has; the refusal names the field and the choices.
        assert_eq!(get(&s, "olga").unwrap().language, "ru");
        let e = add(&s, "ivan", Role::Clerk, Some("xx"), None, NOW).unwrap_err();
        assert_eq!(e.field(), "language");
        assert!(e.to_string().contains("en, ru"), "{e}");
        assert_eq!(set_language(&s, "anna", "ru").unwrap().language, "ru");
        assert!(set_language(&s, "anna", "de-AT").is_err());

        let names: Vec<_> = list(&s).unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["anna", "olga"]);
        assert!(matches!(disable(&s, "nobody"), Err(AccountError::NotFound(_))));
    }
}
