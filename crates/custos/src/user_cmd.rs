//! `custos user ...` and `custos token ...`: web and DICOM identity
//! accounts. Passwords are read from a prompt or stdin, never from arguments,
//! and only their argon2id hash is stored; a token's text is printed once.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use custos_archive::registry;
use custos_core::credentials::{check_password_policy, hash_password, random_password};
use custos_core::{Role, User};
use custos_index::{AuditLog, Index, Registry};
use custos_web::auth::now_unix;

use crate::config::Config;
use crate::data::open_index;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user (password from a prompt, or one line on stdin).
    Add {
        name: String,
        /// admin, radiologist (search, view, download, store derived objects), uploader (store), auditor (audit trail), monitor (metrics).
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Change a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Refuse a user's logins and tokens until enabled again.
    Disable { name: String },
    /// Allow a disabled user again.
    Enable { name: String },
    /// Remove a user and its tokens.
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user; it is printed once.
    Create {
        #[arg(long)]
        user: String,
        /// Lifetime: a number with s, m, h, d (days) or w (weeks), e.g. 30d.
        #[arg(long, default_value = "30d")]
        expires: String,
        /// The token may read but never store, delete or administer.
        #[arg(long)]
        read_only: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

fn read_password(name: &str, from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("Password for {name}: "))?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    };
    check_password_policy(name, &password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

fn hash(password: &str) -> Result<String> {
    hash_password(password).map_err(anyhow::Error::msg)
}

async fn existing(index: &dyn Index, name: &str) -> Result<User> {
    index
        .user(name)
        .await?
        .with_context(|| format!("no user named {name}"))
}

pub async fn run_user(data: &Path, command: UserCommand) -> Result<()> {
    let config = Config::load(data)?;
    let index = open_index(data, &config).await?;
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            let password = read_password(&name, password_stdin)?;
            let (_, line) = registry::add_user(index.as_ref(), &name, &role, password).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line.clone()).await;
            println!("{line}");
        }
        UserCommand::List => {
            let users = index.users().await?;
            if users.is_empty() {
                println!("no users");
            }
            for u in users {
                println!(
                    "{:<24} {:<12} {}",
                    u.name,
                    u.role,
                    if u.disabled { "disabled" } else { "enabled" }
                );
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            existing(index.as_ref(), &name).await?;
            let change = registry::UserChange {
                password: Some(read_password(&name, password_stdin)?),
                ..Default::default()
            };
            let (_, line) = registry::update_user(index.as_ref(), &name, change).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line.clone()).await;
            println!("{line}");
            if name == "admin" {
                // The first password's file has served its purpose.
                let _ = std::fs::remove_file(data.join(crate::data::INITIAL_PASSWORD_FILE));
            }
        }
        UserCommand::Disable { name } => set_disabled(data, index.as_ref(), &name, true).await?,
        UserCommand::Enable { name } => set_disabled(data, index.as_ref(), &name, false).await?,
        UserCommand::Remove { name } => {
            let line = registry::remove_user(index.as_ref(), &name).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line.clone()).await;
            println!("{line}");
        }
    }
    Ok(())
}

async fn set_disabled(data: &Path, index: &dyn Index, name: &str, disabled: bool) -> Result<()> {
    let change = registry::UserChange {
        disabled: Some(disabled),
        ..Default::default()
    };
    let (_, line) = registry::update_user(index, name, change).await?;
    crate::audit_cmd::record_change(data, index, line.clone()).await;
    println!("{line}");
    Ok(())
}

/// `30d`, `12h`, `2w` in seconds.
fn parse_lifetime(s: &str) -> Result<i64> {
    let s = s.trim();
    // The unit is the last character, whatever its width.
    let unit_at = s.char_indices().last().map_or(0, |(i, _)| i);
    let (n, unit) = s.split_at(unit_at);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("`{s}` is not a lifetime such as 30d, 12h or 2w"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("`{s}` is not a lifetime such as 30d, 12h or 2w"),
    };
    n.checked_mul(secs)
        .filter(|total| *total <= 3650 * 86_400)
        .context("a token lives at most ten years")
}

pub async fn run_token(data: &Path, command: TokenCommand) -> Result<()> {
    let config = Config::load(data)?;
    let index = open_index(data, &config).await?;
    match command {
        TokenCommand::Create {
            user,
            expires,
            read_only,
        } => {
            let lifetime = parse_lifetime(&expires)?;
            let (t, line) =
                registry::create_token(index.as_ref(), &user, read_only, lifetime).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line).await;
            eprintln!(
                "token {} for {user}{} (shown once; keep it secret):",
                t.token.id,
                if read_only { ", read-only" } else { "" }
            );
            println!("{}", t.text);
        }
        TokenCommand::List => {
            let now = now_unix();
            for t in index.tokens().await? {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires <= now {
                    "expired"
                } else {
                    "valid"
                };
                println!(
                    "{:<14} {:<24} {:<10} {}",
                    t.id,
                    t.user,
                    if t.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    state
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let line = registry::revoke_token(index.as_ref(), &id).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line.clone()).await;
            println!("{line}");
        }
    }
    Ok(())
}

/// Makes the first admin if there are no users at all; returns its password,
/// to be printed once.
pub async fn ensure_admin(
    data: &Path,
    index: &dyn Registry,
    log: &dyn AuditLog,
) -> Result<Option<String>> {
    if !index.users().await?.is_empty() {
        return Ok(None);
    }
    let password = random_password();
    let user = User {
        name: "admin".into(),
        role: Role::Admin,
        password_hash: hash(&password)?,
        disabled: false,
        password_changed: now_unix(),
    };
    let added = index.insert_user(user).await?;
    if added {
        crate::audit_cmd::record_change(data, log, "user admin created on first run".into()).await;
    }
    Ok(added.then_some(password))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifetimes_parse_and_odd_input_is_an_error_not_a_panic() {
        use super::parse_lifetime;
        assert_eq!(parse_lifetime("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_lifetime("2w").unwrap(), 14 * 86_400);
        for bad in [
            "30é",
            "é",
            "",
            "d",
            "0d",
            "-1d",
            "9223372036854775807w",
            "11000d",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_lifetime("2w").unwrap(), 14 * 86_400);
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("30").is_err());
        assert!(parse_lifetime("99999d").is_err());
    }
}
