//! Identity mappings of a connector: an SMB principal (`DOMAIN\name`, a bare `name`, or a SID
//! `S-1-5-21-…`) mapped to a ScaiDrive user or group of the tenant.
//!
//! Duplicates are found by a normalised key: names compare case-insensitively
//! (`corp\alice`), SIDs by their canonical form (upper-case `S`, decimal numbers). A bare
//! name and a domain-qualified one are different principals. Every change bumps the
//! connector's `mappings_version` and `mappings_changed_at`, so ACL translation knows to
//! re-run.

use sqlx::any::AnyRow;

use super::{get_i64, get_str, Tx};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::{ConnectorId, MappingId, TenantId};
use crate::time::now_ms;

/// Most rows one CSV import takes.
pub const MAX_IMPORT_ROWS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Mapping {
    pub id: MappingId,
    pub connector_id: ConnectorId,
    pub identity_type: String,
    pub smb_principal: String,
    pub scaidrive_principal_id: String,
    pub created_at: i64,
}

fn mapping_from(r: &AnyRow) -> Mapping {
    Mapping {
        id: MappingId::from_db(get_str(r, "id")),
        connector_id: ConnectorId::from_db(get_str(r, "connector_id")),
        identity_type: get_str(r, "identity_type"),
        smb_principal: get_str(r, "smb_principal"),
        scaidrive_principal_id: get_str(r, "scaidrive_principal_id"),
        created_at: get_i64(r, "created_at"),
    }
}

/// A parsed SMB principal: the form shown back and the duplicate-detection key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub display: String,
    pub key: String,
}

const NAME_FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>";

/// Parses `DOMAIN\name`, `name` or a SID (`S-1-<authority>-<sub>…`).
pub fn parse_principal(raw: &str) -> Result<Principal, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let b = t.as_bytes();
    if b.len() > 2 && (b[0] == b'S' || b[0] == b's') && b[1] == b'-' && b[2].is_ascii_digit() {
        let sid = parse_sid(t)?;
        return Ok(Principal { display: sid.clone(), key: sid });
    }
    let (domain, name) = match t.split_once('\\') {
        Some((d, n)) => (Some(d), n),
        None => (None, t),
    };
    let check = |part: &str, what: &str, max: usize| -> Result<(), String> {
        if part.trim().is_empty() {
            return Err(format!("the {what} must not be empty (use DOMAIN\\name, name or a SID)"));
        }
        if part.chars().count() > max {
            return Err(format!("the {what} must be at most {max} characters"));
        }
        if let Some(c) = part.chars().find(|c| NAME_FORBIDDEN.contains(*c)) {
            return Err(format!("'{c}' is not allowed in the {what} (use DOMAIN\\name, name or a SID)"));
        }
        Ok(())
    };
    if let Some(d) = domain {
        check(d, "domain", 255)?;
    }
    check(name, "name", 256)?;
    let key = match domain {
        Some(d) => format!("{}\\{}", d.to_lowercase(), name.to_lowercase()),
        None => name.to_lowercase(),
    };
    Ok(Principal { display: t.to_string(), key })
}

/// Validates a SID string and returns its canonical form.
pub fn parse_sid(s: &str) -> Result<String, String> {
    let err = || {
        "not a valid SID (expected S-1-<authority>-<sub-authority>..., e.g. S-1-5-21-1004336348-1177238915-682003330-512)".to_string()
    };
    let mut parts = s.split('-');
    let first = parts.next().ok_or_else(err)?;
    if !first.eq_ignore_ascii_case("s") {
        return Err(err());
    }
    let revision = parts.next().ok_or_else(err)?;
    if revision != "1" {
        return Err(err());
    }
    let authority = parts.next().ok_or_else(err)?;
    let authority: u64 = if let Some(h) = authority.strip_prefix("0x").or_else(|| authority.strip_prefix("0X")) {
        (h.len() == 12).then_some(()).ok_or_else(err)?;
        u64::from_str_radix(h, 16).map_err(|_| err())?
    } else {
        (authority.chars().all(|c| c.is_ascii_digit()) && !authority.is_empty()).then_some(()).ok_or_else(err)?;
        authority.parse().map_err(|_| err())?
    };
    if authority >= 1 << 48 {
        return Err(err());
    }
    let mut subs = Vec::new();
    for p in parts {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        subs.push(p.parse::<u32>().map_err(|_| err())?);
    }
    if subs.is_empty() || subs.len() > 15 {
        return Err(err());
    }
    let mut out = format!("S-1-{authority}");
    for s in subs {
        out.push_str(&format!("-{s}"));
    }
    Ok(out)
}

/// A mapping request, checked: its principal parsed and its ScaiDrive principal existing.
#[derive(Clone, Debug)]
pub struct NewMapping {
    pub identity_type: String,
    pub principal: Principal,
    pub scaidrive_principal_id: String,
}

/// Checks a mapping request against the tenant; errors name the field at fault.
pub async fn check(
    db: &Db,
    tenant: &TenantId,
    identity_type: &str,
    smb_principal: &str,
    scaidrive_principal_id: &str,
) -> ApiResult<NewMapping> {
    let (table, prefix) = match identity_type {
        "user" => ("users", "usr"),
        "group" => ("groups", "grp"),
        _ => return Err(ApiError::validation("identity_type", "must be 'user' or 'group'")),
    };
    let principal = parse_principal(smb_principal).map_err(|m| ApiError::validation("smb_principal", m))?;
    let pid = scaidrive_principal_id.trim();
    if crate::ids::prefix_of(pid) != Some(prefix) {
        return Err(ApiError::validation(
            "scaidrive_principal_id",
            format!("identity_type '{identity_type}' needs a {identity_type} id ({prefix}_...)"),
        ));
    }
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table} WHERE id = $1 AND tenant_id = $2"))
        .bind(pid)
        .bind(tenant.as_str())
        .fetch_one(&db.pool)
        .await?;
    if n == 0 {
        return Err(ApiError::validation(
            "scaidrive_principal_id",
            format!("no {identity_type} with that id in this tenant"),
        ));
    }
    Ok(NewMapping { identity_type: identity_type.to_string(), principal, scaidrive_principal_id: pid.to_string() })
}

async fn existing(tx: &mut Tx<'_>, connector: &ConnectorId, key: &str) -> ApiResult<Option<String>> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT id FROM identity_mappings WHERE connector_id = $1 AND smb_principal_key = $2")
            .bind(connector.as_str())
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(r.map(|(id,)| id))
}

fn duplicate(existing_id: &str) -> ApiError {
    ApiError::conflict("ALREADY_EXISTS", "this SMB principal is already mapped for this connector")
        .with_field("smb_principal")
        .with_details(serde_json::json!({"mapping_id": existing_id}))
}

async fn insert(
    tx: &mut Tx<'_>,
    tenant: &TenantId,
    connector: &ConnectorId,
    m: &NewMapping,
    now: i64,
) -> ApiResult<Mapping> {
    let id = MappingId::generate();
    sqlx::query(
        "INSERT INTO identity_mappings (id, connector_id, tenant_id, identity_type, smb_principal, smb_principal_key,
            scaidrive_principal_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.as_str())
    .bind(connector.as_str())
    .bind(tenant.as_str())
    .bind(&m.identity_type)
    .bind(&m.principal.display)
    .bind(&m.principal.key)
    .bind(&m.scaidrive_principal_id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        err if err.code == "ALREADY_EXISTS" => duplicate(""),
        err => err,
    })?;
    Ok(Mapping {
        id,
        connector_id: connector.clone(),
        identity_type: m.identity_type.clone(),
        smb_principal: m.principal.display.clone(),
        scaidrive_principal_id: m.scaidrive_principal_id.clone(),
        created_at: now,
    })
}

async fn touch_connector(tx: &mut Tx<'_>, connector: &ConnectorId, now: i64) -> ApiResult<()> {
    sqlx::query(
        "UPDATE connectors SET mappings_version = mappings_version + 1, mappings_changed_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(connector.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a mapping; a second mapping of the same SMB principal is a 409.
pub async fn create(db: &Db, tenant: &TenantId, connector: &ConnectorId, m: &NewMapping) -> ApiResult<Mapping> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    if let Some(id) = existing(&mut tx, connector, &m.principal.key).await? {
        return Err(duplicate(&id));
    }
    let out = insert(&mut tx, tenant, connector, m, now).await?;
    touch_connector(&mut tx, connector, now).await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn list(db: &Db, connector: &ConnectorId, after: Option<&str>, limit: i64) -> ApiResult<Vec<Mapping>> {
    let rows = sqlx::query("SELECT * FROM identity_mappings WHERE connector_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(connector.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(mapping_from).collect())
}

pub async fn delete(db: &Db, connector: &ConnectorId, mapping_id: &str) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let r = sqlx::query("DELETE FROM identity_mappings WHERE connector_id = $1 AND id = $2")
        .bind(connector.as_str())
        .bind(mapping_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(ApiError::not_found("identity mapping"));
    }
    touch_connector(&mut tx, connector, now_ms()).await?;
    tx.commit().await?;
    Ok(())
}

/// One row's outcome in an import.
#[derive(Debug)]
pub enum RowOutcome {
    Created(MappingId),
    /// Already mapped (before the import or earlier in the file): the existing mapping's id.
    Skipped(String),
    Rejected(ApiError),
}

/// Imports checked rows in one transaction: new principals are created, already mapped ones
/// skipped. `rows` holds, per line, either a checked mapping or the reason it was refused.
pub async fn import(
    db: &Db,
    tenant: &TenantId,
    connector: &ConnectorId,
    rows: Vec<(usize, Result<NewMapping, ApiError>)>,
) -> ApiResult<Vec<(usize, RowOutcome)>> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut created = 0;
    for (line, row) in rows {
        let outcome = match row {
            Err(e) => RowOutcome::Rejected(e),
            Ok(m) => match existing(&mut tx, connector, &m.principal.key).await? {
                Some(id) => RowOutcome::Skipped(id),
                None => {
                    created += 1;
                    RowOutcome::Created(insert(&mut tx, tenant, connector, &m, now).await?.id)
                }
            },
        };
        out.push((line, outcome));
    }
    if created > 0 {
        touch_connector(&mut tx, connector, now).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Splits CSV text (RFC 4180: `,` separators, `"` quoting with `""` escapes, LF or CRLF)
/// into records with the line each starts on. Blank lines are dropped.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut in_quotes = false;
    let mut quoted_field = false;
    let mut chars = text.chars().peekable();
    let finish = |fields: &mut Vec<String>, cur: &mut String, records: &mut Vec<(usize, Vec<String>)>, at: usize| {
        fields.push(std::mem::take(cur));
        let f = std::mem::take(fields);
        if !(f.len() == 1 && f[0].trim().is_empty()) {
            records.push((at, f));
        }
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    cur.push('\n');
                }
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '"' if cur.trim().is_empty() && !quoted_field => {
                cur.clear();
                in_quotes = true;
                quoted_field = true;
            }
            '"' => return Err((line, "a quote inside an unquoted field".into())),
            ',' => {
                fields.push(std::mem::take(&mut cur));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                finish(&mut fields, &mut cur, &mut records, start_line);
                quoted_field = false;
                line += 1;
                start_line = line;
            }
            _ => cur.push(c),
        }
    }
    if in_quotes {
        return Err((start_line, "an unterminated quoted field".into()));
    }
    finish(&mut fields, &mut cur, &mut records, start_line);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_normalise_for_duplicate_detection() {
        assert_eq!(parse_principal("CORP\\Alice").unwrap().key, "corp\\alice");
        assert_eq!(parse_principal(" alice ").unwrap().key, "alice");
        let sid = parse_principal("s-1-5-21-1004336348-1177238915-682003330-512").unwrap();
        assert_eq!(sid.key, "S-1-5-21-1004336348-1177238915-682003330-512");
        assert_eq!(sid.display, sid.key);
        assert_eq!(parse_sid("S-1-0x000000000005-32-544").unwrap(), "S-1-5-32-544");
        for bad in
            ["S-1-5", "S-2-5-21", "S-1-5-x", "S-1-5-21-99999999999", "S-1-", "\\alice", "CORP\\", "a*b", "CORP\\a\\b"]
        {
            assert!(parse_principal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_handles_quotes_crlf_and_blank_lines() {
        let r = parse_csv("a,b\r\n\r\n\"x,\"\"y\"\"\",z\n").unwrap();
        assert_eq!(r, vec![(1, vec!["a".into(), "b".into()]), (3, vec!["x,\"y\"".into(), "z".into()])]);
        assert!(parse_csv("\"open,x\n").is_err());
    }
}
