//! SMB connectors: their configuration (validated here, so the REST API, the CLI and later
//! the gRPC service share one set of rules), their sealed credentials and their run-time
//! state (status, counters, schedule).
//!
//! The password is sealed with [`SecretBox`] before it is written and is opened only by
//! [`decrypted_credentials`], for the worker holding the connector's lease; it is never part
//! of [`Connector`]. Permission checks (MANAGE_PERMISSIONS on the target share) are the
//! callers'.

use sqlx::any::AnyRow;

use super::{get_i64, get_opt_i64, get_opt_str, get_str};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{ConnectorId, ShareId, TenantId};
use crate::secrets::{Secret, SecretBox};
use crate::time::now_ms;

/// Defaults where the request leaves a field out (documented in the OpenAPI schema).
pub const DEFAULT_PORT: i64 = 445;
/// SMB is authoritative: nothing in ScaiDrive can damage the original (the spec's advice for
/// onboarding).
pub const DEFAULT_DIRECTION: SyncDirection = SyncDirection::SmbToScaidrive;
/// Nothing is overwritten: the safest strategy.
pub const DEFAULT_CONFLICT: ConflictResolution = ConflictResolution::KeepBoth;
/// The spec's example cadence.
pub const DEFAULT_INTERVAL_MINUTES: i64 = 15;
/// Longest interval: 31 days.
pub const MAX_INTERVAL_MINUTES: i64 = 44_640;
pub const DEFAULT_MAX_DELETE_PERCENT: i64 = 50;
/// The worker pool of connectors that name none.
pub const DEFAULT_POOL: &str = sync_worker::DEFAULT_POOL;
/// Most entries in one `extensions` or `patterns` list.
pub const MAX_FILTER_ENTRIES: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDirection {
    Bidirectional,
    SmbToScaidrive,
    ScaidriveToSmb,
}

impl SyncDirection {
    pub const NAMES: &'static str = "'bidirectional', 'smb_to_scaidrive' or 'scaidrive_to_smb'";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bidirectional" => Self::Bidirectional,
            "smb_to_scaidrive" => Self::SmbToScaidrive,
            "scaidrive_to_smb" => Self::ScaidriveToSmb,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bidirectional => "bidirectional",
            Self::SmbToScaidrive => "smb_to_scaidrive",
            Self::ScaidriveToSmb => "scaidrive_to_smb",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictResolution {
    LastWriterWins,
    KeepBoth,
    ScaidriveWins,
    SmbWins,
}

impl ConflictResolution {
    pub const NAMES: &'static str = "'LAST_WRITER_WINS', 'KEEP_BOTH', 'SCAIDRIVE_WINS' or 'SMB_WINS'";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "LAST_WRITER_WINS" => Self::LastWriterWins,
            "KEEP_BOTH" => Self::KeepBoth,
            "SCAIDRIVE_WINS" => Self::ScaidriveWins,
            "SMB_WINS" => Self::SmbWins,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LastWriterWins => "LAST_WRITER_WINS",
            Self::KeepBoth => "KEEP_BOTH",
            Self::ScaidriveWins => "SCAIDRIVE_WINS",
            Self::SmbWins => "SMB_WINS",
        }
    }
}

/// An include or exclude filter. Extensions are lowercase without the dot; patterns are
/// valid globs (globset syntax).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub extensions: Vec<String>,
    pub patterns: Vec<String>,
}

impl Filter {
    fn to_json(&self) -> String {
        serde_json::json!({"extensions": self.extensions, "patterns": self.patterns}).to_string()
    }

    fn from_json(s: &str) -> Filter {
        let v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        Filter { extensions: list("extensions"), patterns: list("patterns") }
    }
}

/// A connector's configuration, validated and normalised (the password aside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub description: Option<String>,
    pub server_host: String,
    pub server_port: i64,
    pub share_name: String,
    pub base_path: Option<String>,
    pub domain: Option<String>,
    pub username: String,
    pub target_path: String,
    pub sync_direction: SyncDirection,
    pub sync_permissions: bool,
    pub sync_hidden_files: bool,
    pub sync_system_files: bool,
    pub include_patterns: Option<Filter>,
    pub exclude_patterns: Option<Filter>,
    pub conflict_resolution: ConflictResolution,
    pub sync_interval_minutes: i64,
    pub max_delete_percent: i64,
    /// The worker pool that runs the connector's jobs and tests.
    pub worker_pool: String,
}

#[derive(Clone, Debug)]
pub struct Connector {
    pub id: ConnectorId,
    pub tenant_id: TenantId,
    pub target_share_id: ShareId,
    pub settings: Settings,
    pub status: String,
    pub status_message: Option<String>,
    pub error_count: i64,
    pub last_sync_at: Option<i64>,
    pub next_sync_at: Option<i64>,
    pub total_files_synced: i64,
    pub total_bytes_synced: i64,
    pub mappings_version: i64,
    pub mappings_changed_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a worker logs in with. Only for the holder of the connector's lease.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub domain: Option<String>,
    pub username: String,
    pub password: Secret,
}

fn connector_from(r: &AnyRow) -> Connector {
    let flag = |c: &str| get_i64(r, c) != 0;
    Connector {
        id: ConnectorId::from_db(get_str(r, "id")),
        tenant_id: TenantId::from_db(get_str(r, "tenant_id")),
        target_share_id: ShareId::from_db(get_str(r, "target_share_id")),
        settings: Settings {
            name: get_str(r, "name"),
            description: get_opt_str(r, "description"),
            server_host: get_str(r, "server_host"),
            server_port: get_i64(r, "server_port"),
            share_name: get_str(r, "share_name"),
            base_path: get_opt_str(r, "base_path"),
            domain: get_opt_str(r, "domain"),
            username: get_str(r, "username"),
            target_path: get_str(r, "target_path"),
            sync_direction: SyncDirection::parse(&get_str(r, "sync_direction")).unwrap_or(DEFAULT_DIRECTION),
            sync_permissions: flag("sync_permissions"),
            sync_hidden_files: flag("sync_hidden_files"),
            sync_system_files: flag("sync_system_files"),
            include_patterns: get_opt_str(r, "include_patterns").map(|s| Filter::from_json(&s)),
            exclude_patterns: get_opt_str(r, "exclude_patterns").map(|s| Filter::from_json(&s)),
            conflict_resolution: ConflictResolution::parse(&get_str(r, "conflict_resolution"))
                .unwrap_or(DEFAULT_CONFLICT),
            sync_interval_minutes: get_i64(r, "sync_interval_minutes"),
            max_delete_percent: get_i64(r, "max_delete_percent"),
            worker_pool: get_opt_str(r, "worker_pool").unwrap_or_else(|| DEFAULT_POOL.to_string()),
        },
        status: get_str(r, "status"),
        status_message: get_opt_str(r, "status_message"),
        error_count: get_i64(r, "error_count"),
        last_sync_at: get_opt_i64(r, "last_sync_at"),
        next_sync_at: get_opt_i64(r, "next_sync_at"),
        total_files_synced: get_i64(r, "total_files_synced"),
        total_bytes_synced: get_i64(r, "total_bytes_synced"),
        mappings_version: get_i64(r, "mappings_version"),
        mappings_changed_at: get_opt_i64(r, "mappings_changed_at"),
        created_by: get_str(r, "created_by"),
        created_at: get_i64(r, "created_at"),
        updated_at: get_i64(r, "updated_at"),
    }
}

/// When the next scheduled run is due: `now + interval`, or never for interval 0.
pub fn next_sync_at(now: i64, interval_minutes: i64) -> Option<i64> {
    (interval_minutes > 0).then(|| now + interval_minutes * 60_000)
}

/// Creates a connector. `settings` and `target_share_id` are validated by the caller
/// (the target folder chain too); the password is sealed here.
pub async fn create(
    db: &Db,
    secrets: &SecretBox,
    tenant: &TenantId,
    creator: &str,
    target_share_id: &ShareId,
    settings: &Settings,
    password: &Secret,
) -> ApiResult<Connector> {
    let id = ConnectorId::generate();
    let now = now_ms();
    let sealed = secrets.seal(id.as_str(), password);
    let s = settings;
    sqlx::query(
        "INSERT INTO connectors (id, tenant_id, name, description, server_host, server_port, share_name, base_path,
            domain, username, password_sealed, secret_key_id, target_share_id, target_path, sync_direction,
            sync_permissions, sync_hidden_files, sync_system_files, include_patterns, exclude_patterns,
            conflict_resolution, sync_interval_minutes, max_delete_percent, status, next_sync_at,
            created_by, created_at, updated_at, worker_pool)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
            $21, $22, $23, 'idle', $24, $25, $26, $26, $27)",
    )
    .bind(id.as_str())
    .bind(tenant.as_str())
    .bind(&s.name)
    .bind(s.description.clone())
    .bind(&s.server_host)
    .bind(s.server_port)
    .bind(&s.share_name)
    .bind(s.base_path.clone())
    .bind(s.domain.clone())
    .bind(&s.username)
    .bind(&sealed)
    .bind(secrets.key_id())
    .bind(target_share_id.as_str())
    .bind(&s.target_path)
    .bind(s.sync_direction.as_str())
    .bind(s.sync_permissions as i64)
    .bind(s.sync_hidden_files as i64)
    .bind(s.sync_system_files as i64)
    .bind(s.include_patterns.as_ref().map(Filter::to_json))
    .bind(s.exclude_patterns.as_ref().map(Filter::to_json))
    .bind(s.conflict_resolution.as_str())
    .bind(s.sync_interval_minutes)
    .bind(s.max_delete_percent)
    .bind(next_sync_at(now, s.sync_interval_minutes))
    .bind(creator)
    .bind(now)
    .bind(&s.worker_pool)
    .execute(&db.pool)
    .await?;
    get(db, tenant, id.as_str()).await
}

/// A connector of the tenant, or 404 (also for malformed ids and other tenants' connectors).
pub async fn get(db: &Db, tenant: &TenantId, id: &str) -> ApiResult<Connector> {
    sqlx::query("SELECT * FROM connectors WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant.as_str())
        .fetch_optional(&db.pool)
        .await?
        .map(|r| connector_from(&r))
        .ok_or_else(|| ApiError::not_found("connector"))
}

/// The tenant's connectors ordered by id, after `after`.
pub async fn list(db: &Db, tenant: &TenantId, after: Option<&str>, limit: i64) -> ApiResult<Vec<Connector>> {
    let rows = sqlx::query("SELECT * FROM connectors WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(tenant.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(connector_from).collect())
}

/// Writes new settings (validated by the caller) and, when given, a new password.
/// A changed interval reschedules the next run from now.
pub async fn update(
    db: &Db,
    secrets: &SecretBox,
    old: &Connector,
    settings: &Settings,
    password: Option<&Secret>,
) -> ApiResult<Connector> {
    let now = now_ms();
    let s = settings;
    let next = if s.sync_interval_minutes != old.settings.sync_interval_minutes {
        next_sync_at(now, s.sync_interval_minutes)
    } else {
        old.next_sync_at
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE connectors SET name = $1, description = $2, server_host = $3, server_port = $4, share_name = $5,
            base_path = $6, domain = $7, username = $8, target_path = $9, sync_direction = $10,
            sync_permissions = $11, sync_hidden_files = $12, sync_system_files = $13, include_patterns = $14,
            exclude_patterns = $15, conflict_resolution = $16, sync_interval_minutes = $17,
            max_delete_percent = $18, next_sync_at = $19, updated_at = $20, worker_pool = $22
         WHERE id = $21",
    )
    .bind(&s.name)
    .bind(s.description.clone())
    .bind(&s.server_host)
    .bind(s.server_port)
    .bind(&s.share_name)
    .bind(s.base_path.clone())
    .bind(s.domain.clone())
    .bind(&s.username)
    .bind(&s.target_path)
    .bind(s.sync_direction.as_str())
    .bind(s.sync_permissions as i64)
    .bind(s.sync_hidden_files as i64)
    .bind(s.sync_system_files as i64)
    .bind(s.include_patterns.as_ref().map(Filter::to_json))
    .bind(s.exclude_patterns.as_ref().map(Filter::to_json))
    .bind(s.conflict_resolution.as_str())
    .bind(s.sync_interval_minutes)
    .bind(s.max_delete_percent)
    .bind(next)
    .bind(now)
    .bind(old.id.as_str())
    .bind(&s.worker_pool)
    .execute(&mut *tx)
    .await?;
    if let Some(p) = password {
        sqlx::query("UPDATE connectors SET password_sealed = $1, secret_key_id = $2 WHERE id = $3")
            .bind(secrets.seal(old.id.as_str(), p))
            .bind(secrets.key_id())
            .bind(old.id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get(db, &old.tenant_id, old.id.as_str()).await
}

/// Deletes a connector and its identity mappings. ScaiDrive content it synced stays; the SMB
/// side is never touched.
pub async fn delete(db: &Db, c: &Connector) -> ApiResult<()> {
    // Its live job is cancelled and its lease revoked first, in the same transaction: the
    // worker's next write is refused (stale token), so it stops between files and nothing
    // more is committed for a connector that no longer exists.
    let now = crate::time::now_ms();
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, cancel_reason = 'connector deleted',
            finished_at = $1, updated_at = $1 WHERE connector_id = $2 AND status IN ('queued', 'running')",
    )
    .bind(now)
    .bind(c.id.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE lease_counters SET last_token = last_token + 1 WHERE connector_id = $1")
        .bind(c.id.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE leases SET released = 1 WHERE connector_id = $1").bind(c.id.as_str()).execute(&mut *tx).await?;
    for table in ["file_states", "file_state_versions", "connector_cursors"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE connector_id = $1"))
            .bind(c.id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM identity_mappings WHERE connector_id = $1").bind(c.id.as_str()).execute(&mut *tx).await?;
    let r = sqlx::query("DELETE FROM connectors WHERE id = $1 AND tenant_id = $2")
        .bind(c.id.as_str())
        .bind(c.tenant_id.as_str())
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("connector"));
    }
    tx.commit().await?;
    Ok(())
}

/// The connector's decrypted service-account credentials.
///
/// Only for the worker holding the connector's lease (the worker-fleet issue checks the lease
/// before calling this); never exposed over REST, never logged.
pub async fn decrypted_credentials(db: &Db, secrets: &SecretBox, id: &ConnectorId) -> ApiResult<Credentials> {
    let row = sqlx::query("SELECT domain, username, password_sealed FROM connectors WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("connector"))?;
    let password = secrets
        .open(id.as_str(), &get_str(&row, "password_sealed"))
        .map_err(|e| ApiError::internal(format_args!("connector {id}: credentials do not open: {e}")))?;
    Ok(Credentials { domain: get_opt_str(&row, "domain"), username: get_str(&row, "username"), password })
}

/// Fails when the database holds secrets sealed with a key other than `secrets`' (a replica
/// started with the wrong key, or a rotation whose new key was not installed).
pub async fn check_key(db: &Db, secrets: &SecretBox) -> anyhow::Result<()> {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT secret_key_id FROM connectors").fetch_all(&db.pool).await?;
    if let Some((other,)) = ids.iter().find(|(k,)| k != secrets.key_id()) {
        anyhow::bail!(
            "the database holds connector credentials sealed with secret key {other}, but this server's key is {} \
             (check SCAIDRIVE_SECRET_KEY or the key file; after `secrets rotate-key` every replica needs the new key)",
            secrets.key_id()
        );
    }
    Ok(())
}

/// Re-seals every connector password under `new`, in one transaction. Rows already under
/// `new` are left alone, so an interrupted procedure can simply be run again. Returns how many
/// secrets were re-sealed.
pub async fn rotate_key(db: &Db, old: &SecretBox, new: &SecretBox) -> anyhow::Result<u64> {
    use anyhow::Context;
    let mut tx = db.begin().await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, password_sealed FROM connectors ORDER BY id").fetch_all(&mut *tx).await?;
    let mut n = 0;
    for (id, sealed) in rows {
        if SecretBox::key_id_of(&sealed) == Some(new.key_id()) {
            new.open(&id, &sealed).with_context(|| format!("connector {id}: checking its secret under the new key"))?;
            continue;
        }
        let plain = old
            .open(&id, &sealed)
            .with_context(|| format!("connector {id}: opening its secret with the current key"))?;
        sqlx::query("UPDATE connectors SET password_sealed = $1, secret_key_id = $2 WHERE id = $3")
            .bind(new.seal(&id, &plain))
            .bind(new.key_id())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}

/// Validation of each configuration field, with the field's name in every error.
pub mod validate {
    use super::*;

    fn bad(field: &str, msg: impl Into<String>) -> ApiError {
        ApiError::validation(field, msg)
    }

    fn no_controls(field: &str, s: &str) -> ApiResult<()> {
        if s.chars().any(char::is_control) {
            return Err(bad(field, "must not contain NUL or control characters"));
        }
        Ok(())
    }

    /// `None` for absent, empty or blank optional text.
    pub fn optional_text(field: &str, s: Option<String>, max: usize) -> ApiResult<Option<String>> {
        let Some(s) = s else { return Ok(None) };
        if s.trim().is_empty() {
            return Ok(None);
        }
        if s.chars().count() > max {
            return Err(bad(field, format!("must be at most {max} characters")));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(bad(field, "must not contain control characters"));
        }
        Ok(Some(s))
    }

    pub fn name(s: &str) -> ApiResult<String> {
        crate::store::accounts::validate_display("name", s, 255)?;
        Ok(s.trim().to_string())
    }

    /// A DNS host name, an IPv4 address or an IPv6 address (brackets optional). No scheme,
    /// no port, no path.
    pub fn server_host(s: &str) -> ApiResult<String> {
        let f = "server_host";
        let t = s.trim();
        if t.is_empty() {
            return Err(bad(f, "must not be empty"));
        }
        if t.contains("://") || t.starts_with("\\\\") || t.starts_with("//") {
            return Err(bad(f, "must be a host name or IP address, without a scheme (e.g. fs01.corp.example.com)"));
        }
        let unbracketed = t.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(t);
        if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
            return Ok(ip.to_string());
        }
        if t.contains(':') {
            return Err(bad(f, "must not contain a port; give it in server_port"));
        }
        if t.contains('/') || t.contains('\\') {
            return Err(bad(f, "must be a host name only, without a path or share"));
        }
        let host = t.strip_suffix('.').unwrap_or(t);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad(f, "must be a valid host name (letters, digits, '-', '_' and dots) or an IP address"));
        }
        Ok(t.to_string())
    }

    pub fn server_port(p: i64) -> ApiResult<i64> {
        if (1..=65535).contains(&p) {
            Ok(p)
        } else {
            Err(bad("server_port", "must be between 1 and 65535"))
        }
    }

    /// Characters SMB (Windows) refuses in share names.
    const SHARE_FORBIDDEN: &str = "\"/\\[]:|<>+=;,?*";
    /// Characters SMB (Windows) refuses in file and folder names.
    const NAME_FORBIDDEN: &str = "\"\\/:|<>?*";

    pub fn share_name(s: &str) -> ApiResult<String> {
        let f = "share_name";
        let t = s.trim();
        if t.is_empty() {
            return Err(bad(f, "must not be empty"));
        }
        if t.chars().count() > 80 {
            return Err(bad(f, "must be at most 80 characters"));
        }
        no_controls(f, t)?;
        if let Some(c) = t.chars().find(|c| SHARE_FORBIDDEN.contains(*c)) {
            return Err(bad(f, format!("must be the share's name only; '{c}' is not allowed")));
        }
        Ok(t.to_string())
    }

    /// A sub-path of the SMB share: `\` and `/` both separate; stored `/`-separated without
    /// leading or trailing separators; `None` for the share root.
    pub fn base_path(s: Option<String>) -> ApiResult<Option<String>> {
        let f = "base_path";
        let Some(s) = s else { return Ok(None) };
        if s.len() > 4096 {
            return Err(bad(f, "must be at most 4096 bytes"));
        }
        let mut segs = Vec::new();
        for seg in s.split(['/', '\\']) {
            if seg.is_empty() {
                continue;
            }
            if seg == "." || seg == ".." {
                return Err(bad(f, "'.' and '..' are not allowed"));
            }
            no_controls(f, seg)?;
            if let Some(c) = seg.chars().find(|c| NAME_FORBIDDEN.contains(*c)) {
                return Err(bad(f, format!("'{c}' is not allowed in SMB names")));
            }
            if seg.chars().count() > 255 {
                return Err(bad(f, "each name must be at most 255 characters"));
            }
            segs.push(seg);
        }
        Ok((!segs.is_empty()).then(|| segs.join("/")))
    }

    /// An NT domain or workgroup (NetBIOS or DNS form).
    pub fn domain(s: Option<String>) -> ApiResult<Option<String>> {
        let f = "domain";
        let Some(s) = s else { return Ok(None) };
        let t = s.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if t.chars().count() > 255 {
            return Err(bad(f, "must be at most 255 characters"));
        }
        no_controls(f, t)?;
        if let Some(c) = t.chars().find(|c| "\"/\\[]:|<>+=;,?*@".contains(*c)) {
            return Err(bad(f, format!("'{c}' is not allowed in a domain name")));
        }
        Ok(Some(t.to_string()))
    }

    pub fn username(s: &str) -> ApiResult<String> {
        let f = "username";
        let t = s.trim();
        if t.is_empty() {
            return Err(bad(f, "must not be empty"));
        }
        if t.chars().count() > 256 {
            return Err(bad(f, "must be at most 256 characters"));
        }
        no_controls(f, t)?;
        if t.contains('\\') {
            return Err(bad(f, "must not contain '\\'; give the domain in the 'domain' field"));
        }
        if let Some(c) = t.chars().find(|c| "\"/[]:|<>+=;,?*".contains(*c)) {
            return Err(bad(f, format!("'{c}' is not allowed in a user name")));
        }
        Ok(t.to_string())
    }

    /// Never quotes the value.
    pub fn password(p: &Secret) -> ApiResult<()> {
        let f = "password";
        if p.expose().is_empty() {
            return Err(bad(f, "must not be empty"));
        }
        if p.expose().len() > 1024 {
            return Err(bad(f, "must be at most 1024 bytes"));
        }
        if p.expose().contains('\0') {
            return Err(bad(f, "must not contain NUL"));
        }
        Ok(())
    }

    /// The canonical ScaiDrive path and its names.
    pub fn target_path(s: Option<&str>) -> ApiResult<(String, Vec<String>)> {
        let segs = crate::paths::segments("target_path", s.unwrap_or("/"))?;
        Ok((crate::paths::join(&segs), segs))
    }

    pub fn sync_direction(s: Option<&str>) -> ApiResult<SyncDirection> {
        match s {
            None => Ok(DEFAULT_DIRECTION),
            Some(s) => SyncDirection::parse(s)
                .ok_or_else(|| bad("sync_direction", format!("must be {}", SyncDirection::NAMES))),
        }
    }

    pub fn conflict_resolution(s: Option<&str>) -> ApiResult<ConflictResolution> {
        match s {
            None => Ok(DEFAULT_CONFLICT),
            Some(s) => ConflictResolution::parse(s)
                .ok_or_else(|| bad("conflict_resolution", format!("must be {}", ConflictResolution::NAMES))),
        }
    }

    pub fn sync_interval_minutes(n: i64) -> ApiResult<i64> {
        if (0..=MAX_INTERVAL_MINUTES).contains(&n) {
            Ok(n)
        } else {
            Err(bad(
                "sync_interval_minutes",
                format!("must be between 0 (no scheduled runs) and {MAX_INTERVAL_MINUTES}"),
            ))
        }
    }

    /// `[a-z0-9][a-z0-9-]*`, at most 63 characters (it names queues); default `default`.
    pub fn worker_pool(p: Option<&str>) -> ApiResult<String> {
        let p = p.unwrap_or(DEFAULT_POOL);
        if sync_worker::valid_pool_name(p) {
            Ok(p.to_string())
        } else {
            Err(bad(
                "worker_pool",
                "must be 1 to 63 characters: lowercase letters, digits and '-', not starting with '-'",
            ))
        }
    }

    pub fn max_delete_percent(n: i64) -> ApiResult<i64> {
        if (0..=100).contains(&n) {
            Ok(n)
        } else {
            Err(bad("max_delete_percent", "must be between 0 and 100"))
        }
    }

    /// Normalises a filter: extensions lowercase without the leading dot, deduplicated;
    /// patterns must compile as globs. An empty filter is no filter (`None`).
    pub fn filter(field: &str, extensions: Vec<String>, patterns: Vec<String>) -> ApiResult<Option<Filter>> {
        if extensions.len() > MAX_FILTER_ENTRIES {
            return Err(bad(&format!("{field}.extensions"), format!("at most {MAX_FILTER_ENTRIES} entries")));
        }
        if patterns.len() > MAX_FILTER_ENTRIES {
            return Err(bad(&format!("{field}.patterns"), format!("at most {MAX_FILTER_ENTRIES} entries")));
        }
        let mut exts: Vec<String> = Vec::new();
        for (i, e) in extensions.iter().enumerate() {
            let ef = format!("{field}.extensions[{i}]");
            let t = e.trim();
            let t = t.strip_prefix('.').unwrap_or(t).to_lowercase();
            if t.is_empty() {
                return Err(bad(&ef, "an extension must not be empty"));
            }
            if t.chars().count() > 64 {
                return Err(bad(&ef, "an extension must be at most 64 characters"));
            }
            if t.chars().any(|c| c.is_control() || c.is_whitespace() || "./\\*?[]{}".contains(c)) {
                return Err(bad(&ef, "an extension is a plain suffix like 'pdf' (use 'patterns' for globs)"));
            }
            if !exts.contains(&t) {
                exts.push(t);
            }
        }
        let mut pats: Vec<String> = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let pf = format!("{field}.patterns[{i}]");
            if p.trim().is_empty() {
                return Err(bad(&pf, "a pattern must not be empty"));
            }
            if p.len() > 1024 {
                return Err(bad(&pf, "a pattern must be at most 1024 bytes"));
            }
            if p.chars().any(char::is_control) {
                return Err(bad(&pf, "a pattern must not contain control characters"));
            }
            globset::Glob::new(p).map_err(|e| bad(&pf, format!("not a valid glob: {}", e.kind())))?;
            if !pats.contains(p) {
                pats.push(p.clone());
            }
        }
        if exts.is_empty() && pats.is_empty() {
            return Ok(None);
        }
        Ok(Some(Filter { extensions: exts, patterns: pats }))
    }
}

#[cfg(test)]
mod tests {
    use super::validate::*;

    #[test]
    fn hosts_and_paths_normalise() {
        assert_eq!(server_host("fs01.corp.example.com").unwrap(), "fs01.corp.example.com");
        assert_eq!(server_host("[::1]").unwrap(), "::1");
        assert_eq!(server_host("10.0.0.5").unwrap(), "10.0.0.5");
        for bad in ["smb://fs01", "\\\\fs01\\share", "fs01:445", "fs 01", "-x.com", "a..b", ""] {
            assert_eq!(server_host(bad).unwrap_err().field.as_deref(), Some("server_host"), "{bad}");
        }
        assert_eq!(base_path(Some("\\2026\\Q1/".into())).unwrap().as_deref(), Some("2026/Q1"));
        assert_eq!(base_path(Some("/".into())).unwrap(), None);
        for bad in ["a/../b", "a\\..", "a\0b", "a:b", "x*"] {
            assert!(base_path(Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_normalise_extensions_and_check_globs() {
        let f = filter("include_patterns", vec![".PDF".into(), "pdf".into(), "Docx".into()], vec!["~$*".into()])
            .unwrap()
            .unwrap();
        assert_eq!(f.extensions, vec!["pdf", "docx"]);
        let e = filter("exclude_patterns", vec![], vec!["a[".into()]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("exclude_patterns.patterns[0]"));
        assert_eq!(filter("x", vec![], vec![]).unwrap(), None);
    }
}
