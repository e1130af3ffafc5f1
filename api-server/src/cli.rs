//! The `api-server` command line: `serve` (the default) and administration subcommands that
//! work directly on the database (tenants, users, groups, tokens, shares). Every subcommand
//! prints what it created as one JSON object per line, so scripts can read it.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::perm::Role;
use crate::store::{accounts, shares};
use crate::time::rfc3339;
use crate::AppState;

#[derive(Parser, Debug)]
#[command(name = "api-server", version, about = "ScaiDrive control plane (REST API, file service, SMB connectors)")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit (for a deployment's migration Job; the
    /// server also migrates at start-up, under a lock).
    Migrate,
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantCmd),
    /// Users of a tenant.
    #[command(subcommand)]
    Users(UserCmd),
    /// Groups and their members.
    #[command(subcommand)]
    Groups(GroupCmd),
    /// API tokens.
    #[command(subcommand)]
    Tokens(TokenCmd),
    /// Shares and their members.
    #[command(subcommand)]
    Shares(ShareCmd),
    /// The key sealing connector credentials.
    #[command(subcommand)]
    Secrets(SecretsCmd),
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Writes a new random key (64 hex digits) to a file created with mode 0600.
    GenerateKey {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Re-encrypts every stored secret under the key in `--new-key-file`, in one transaction,
    /// then installs it as the key file (or tells you to update SCAIDRIVE_SECRET_KEY). Stop
    /// the api-server replicas first; start them again with the new key.
    RotateKey {
        #[arg(long)]
        new_key_file: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    Create { name: String },
    List,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    Create {
        username: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// `tenant_admin` or `super_admin`.
        #[arg(long)]
        role: Option<String>,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    Create {
        name: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Adds a user (id or username) to a group (id or name).
    AddMember {
        group: String,
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Creates a token for a user (id or username) and prints it once.
    Create {
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    List {
        user: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    Revoke {
        token_id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ShareCmd {
    /// Creates a share owned by a user (id or username).
    Create {
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Gives a user or group a role on a share.
    AddMember {
        share: String,
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// owner, admin, contributor or reader.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
}

fn out(v: serde_json::Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
}

fn user_json(u: &accounts::User) -> serde_json::Value {
    json!({"id": u.id.as_str(), "tenant_id": u.tenant_id.as_str(), "username": u.username,
           "display_name": u.display_name, "global_role": u.global_role, "created_at": rfc3339(u.created_at)})
}

/// Runs an administration subcommand against the configured database.
pub async fn run_admin(config: Config, cmd: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).ok();
    if let Command::Secrets(cmd) = cmd {
        return run_secrets(config, cmd).await;
    }
    if let Command::Migrate = cmd {
        let db = crate::db::Db::connect(&config.database_url()).await?;
        let (version,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetch_one(&db.pool).await?;
        out(json!({"schema_version": version}));
        return Ok(());
    }
    let state = AppState::open(config).await?;
    let db = &state.db;
    let e = |e: crate::error::ApiError| {
        anyhow::anyhow!("{}: {}{}", e.code, e.message, e.field.map(|f| format!(" (field {f})")).unwrap_or_default())
    };
    match cmd {
        Command::Serve | Command::Migrate | Command::Secrets(_) => unreachable!("handled elsewhere"),
        Command::Tenants(TenantCmd::Create { name }) => {
            let t = accounts::create_tenant(db, &name).await.map_err(e)?;
            out(json!({"id": t.id.as_str(), "name": t.name}));
        }
        Command::Tenants(TenantCmd::List) => {
            for t in accounts::list_tenants(db).await.map_err(e)? {
                out(json!({"id": t.id.as_str(), "name": t.name, "created_at": rfc3339(t.created_at)}));
            }
        }
        Command::Users(UserCmd::Create { username, tenant, display_name, email, role }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let u = accounts::create_user(
                db,
                &t.id,
                accounts::NewUser {
                    username: &username,
                    display_name: display_name.as_deref(),
                    email: email.as_deref(),
                    global_role: role.as_deref(),
                },
            )
            .await
            .map_err(e)?;
            out(user_json(&u));
        }
        Command::Users(UserCmd::List { tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            for u in accounts::list_users(db, &t.id).await.map_err(e)? {
                out(user_json(&u));
            }
        }
        Command::Groups(GroupCmd::Create { name, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let g = accounts::create_group(db, &t.id, &name).await.map_err(e)?;
            out(json!({"id": g.id.as_str(), "name": g.name}));
        }
        Command::Groups(GroupCmd::List { tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            for g in accounts::list_groups(db, &t.id).await.map_err(e)? {
                out(json!({"id": g.id.as_str(), "name": g.name}));
            }
        }
        Command::Groups(GroupCmd::AddMember { group, user, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let g = accounts::find_group(db, &t.id, &group).await.map_err(e)?;
            let u = accounts::find_user(db, &t.id, &user).await.map_err(e)?;
            accounts::add_group_member(db, &g, &u).await.map_err(e)?;
            out(json!({"group_id": g.id.as_str(), "user_id": u.id.as_str()}));
        }
        Command::Tokens(TokenCmd::Create { user, tenant, name }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let u = accounts::find_user(db, &t.id, &user).await.map_err(e)?;
            let (info, token) = accounts::create_token(db, &u.id, &name).await.map_err(e)?;
            out(json!({"id": info.id.as_str(), "user_id": u.id.as_str(), "name": info.name, "token": token}));
        }
        Command::Tokens(TokenCmd::List { user, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let u = accounts::find_user(db, &t.id, &user).await.map_err(e)?;
            for info in accounts::list_tokens(db, &u.id).await.map_err(e)? {
                out(json!({"id": info.id.as_str(), "name": info.name, "created_at": rfc3339(info.created_at),
                           "revoked_at": info.revoked_at.map(rfc3339)}));
            }
        }
        Command::Tokens(TokenCmd::Revoke { token_id, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            accounts::revoke_token(db, &t.id, None, &token_id).await.map_err(e)?;
            out(json!({"revoked": token_id}));
        }
        Command::Shares(ShareCmd::Create { name, owner, description, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let u = accounts::find_user(db, &t.id, &owner).await.map_err(e)?;
            let s = shares::create(db, &t.id, u.id.as_str(), &name, &description).await.map_err(e)?;
            out(json!({"id": s.id.as_str(), "name": s.name, "owner": u.id.as_str()}));
        }
        Command::Shares(ShareCmd::List { tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let caller = crate::auth::Caller {
                user_id: crate::ids::UserId::from_db(String::new()),
                tenant_id: t.id.clone(),
                global_role: Some("super_admin".into()),
                group_ids: vec![],
            };
            for s in shares::list_visible(db, &caller).await.map_err(e)? {
                out(json!({"id": s.id.as_str(), "name": s.name, "description": s.description}));
            }
        }
        Command::Shares(ShareCmd::AddMember { share, user, group, role, tenant }) => {
            let t = accounts::find_tenant(db, &tenant).await.map_err(e)?;
            let s = shares::get(db, &t.id, &share).await.map_err(e)?;
            let role = Role::parse(&role).context("role must be owner, admin, contributor or reader")?;
            let (ptype, pid) = match (user, group) {
                (Some(u), _) => ("user", accounts::find_user(db, &t.id, &u).await.map_err(e)?.id.to_string()),
                (None, Some(g)) => ("group", accounts::find_group(db, &t.id, &g).await.map_err(e)?.id.to_string()),
                (None, None) => anyhow::bail!("give --user or --group"),
            };
            let m = shares::set_member(db, &s, ptype, &pid, role).await.map_err(e)?;
            out(json!({"share_id": s.id.as_str(), "principal_type": m.principal_type, "principal_id": m.principal_id,
                       "role": m.role.as_str()}));
        }
    }
    Ok(())
}

/// Key management. Works on the database directly (not through [`AppState::open`], which
/// refuses a key that does not match the stored secrets).
async fn run_secrets(config: Config, cmd: SecretsCmd) -> anyhow::Result<()> {
    use crate::secrets::{KeySource, SecretBox};
    match cmd {
        SecretsCmd::GenerateKey { out: path } => {
            if path.exists() {
                anyhow::bail!("{} exists; refusing to overwrite a key", path.display());
            }
            let key = SecretBox::generate_key_text();
            write_secret_file(&path, &format!("{key}\n")).with_context(|| format!("writing {}", path.display()))?;
            out(json!({"key_file": path.display().to_string(), "key_id": SecretBox::parse_key(&key)?.key_id()}));
        }
        SecretsCmd::RotateKey { new_key_file } => {
            let new_text = std::fs::read_to_string(&new_key_file)
                .with_context(|| format!("reading {}", new_key_file.display()))?;
            let new =
                SecretBox::parse_key(&new_text).with_context(|| format!("the key in {}", new_key_file.display()))?;
            let db = crate::db::Db::connect(&config.database_url()).await?;
            let (old, source) = SecretBox::load(&config)?;
            let n = crate::store::connectors::rotate_key(&db, &old, &new).await?;
            let installed = match &source {
                KeySource::File(path) => {
                    crate::secrets::replace_key_file(path, &new_text)?;
                    Some(path.display().to_string())
                }
                KeySource::Env => {
                    eprintln!(
                        "Secrets re-encrypted. Now set SCAIDRIVE_SECRET_KEY to the key in {} on every replica and \
                         restart them: servers with the old key refuse to start.",
                        new_key_file.display()
                    );
                    None
                }
            };
            out(
                json!({"reencrypted": n, "old_key_id": old.key_id(), "new_key_id": new.key_id(), "key_file": installed}),
            );
        }
    }
    Ok(())
}

/// First start: creates the default tenant and admin and keeps the admin token in a file
/// readable only by its owner. Returns the token when it was just created.
pub async fn bootstrap(state: &AppState) -> anyhow::Result<Option<String>> {
    let Some((_admin, token)) =
        accounts::bootstrap(&state.db).await.map_err(|e| anyhow::anyhow!("bootstrap: {}", e.message))?
    else {
        return Ok(None);
    };
    let path = state.config.admin_token_file();
    write_secret_file(&path, &format!("{token}\n")).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(token))
}

/// Writes a file created with mode 0600 (never readable by others, even for a moment).
pub fn write_secret_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}
