//! `jobctl token create NAME --owner O --role R`, `jobctl token list` and
//! `jobctl token revoke NAME` (admins).

use crate::client::Client;
use crate::output::{self, emit, Format};
use borg_shared::auth::{Role, TokenView};
use chrono::{DateTime, Utc};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Make a token. Its secret is printed (on stdout) this once.
    Create {
        /// 1 to 63 of a-z, 0-9, `.`, `_`, `-`.
        name: String,
        /// Whose jobs it submits and sees.
        #[arg(long)]
        owner: String,
        /// admin, operator or user.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Output format (`json`: the token with its secret).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// List the tokens (never their secrets).
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Revoke a token: its next call fails.
    Revoke { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Create {
            name,
            owner,
            role,
            output,
        } => {
            let made = client.create_token(&name, &owner, role).await?;
            match output {
                Format::Json => emit(&output::json(&made)?)?,
                Format::Table => {
                    eprintln!(
                        "token/{} created (owner {}, role {}); its secret, below, is shown this once",
                        made.token.name, made.token.owner, made.token.role
                    );
                    emit(&made.secret)?;
                }
            }
        }
        Action::List { output } => {
            let list = client.tokens().await?;
            let text = match output {
                Format::Json => output::json(&list)?,
                Format::Table => tokens_table(&list.tokens, Utc::now()),
            };
            emit(&text)?;
        }
        Action::Revoke { name } => {
            let t = client.revoke_token(&name).await?;
            emit(&format!("token/{} revoked", t.name))?;
        }
    }
    Ok(())
}

/// `NAME  OWNER  ROLE  AGE  REVOKED`.
pub fn tokens_table(tokens: &[TokenView], now: DateTime<Utc>) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.owner.clone(),
                t.role.to_string(),
                output::age(t.created_at, now),
                t.revoked_at
                    .map_or("-".to_string(), |r| format!("{} ago", output::age(r, now))),
            ]
        })
        .collect();
    output::table(&["NAME", "OWNER", "ROLE", "AGE", "REVOKED"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_like_kubectl() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let t = |name: &str, role: Role, revoked: Option<&str>| TokenView {
            name: name.into(),
            owner: "alice".into(),
            role,
            created_at: "2026-12-01T11:00:00Z".parse().unwrap(),
            revoked_at: revoked.map(|r| r.parse().unwrap()),
        };
        let text = tokens_table(
            &[
                t("bootstrap", Role::Admin, None),
                t("ci", Role::User, Some("2026-12-01T11:59:30Z")),
            ],
            now,
        );
        assert_eq!(
            text,
            "NAME        OWNER   ROLE    AGE   REVOKED\n\
             bootstrap   alice   admin   60m   -\n\
             ci          alice   user    60m   30s ago"
        );
    }
}
