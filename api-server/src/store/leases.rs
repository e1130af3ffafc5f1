//! Per-connector leases with fencing tokens.
//!
//! `lease_counters` holds each connector's last fencing token; `leases` every lease issued.
//! Acquiring succeeds only when the connector has no live lease (none, released or expired)
//! and takes the next token, so tokens increase strictly per connector and never repeat,
//! across restarts too; a newer token makes every older one stale at once. Every write
//! a worker makes carries (lease id, token) and is checked by [`check`] inside the write's own
//! transaction: a worker whose lease was taken over can never commit anything.
//!
//! Times are judged by the database server's caller (this process's clock, unix ms); workers'
//! clocks do not matter.

use super::Tx;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::time::now_ms;

/// Shortest and longest lease a worker may ask for.
pub const MIN_TTL_MS: i64 = 10_000;
pub const MAX_TTL_MS: i64 = 600_000;

#[derive(Clone, Debug)]
pub struct Lease {
    pub connector_id: String,
    pub lease_id: String,
    pub worker_id: String,
    pub fencing_token: i64,
    pub ttl_ms: i64,
    pub expires_at: i64,
}

/// Proof of a lease, as a worker presents it.
#[derive(Clone, Debug)]
pub struct Fence {
    pub lease_id: String,
    pub token: i64,
}

/// Why a lease was refused; each maps to a stable machine code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Held { expires_at: i64 },
    Stale,
    Expired,
    NotFound,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Held { .. } => "LEASE_HELD",
            Refusal::Stale => "LEASE_STALE",
            Refusal::Expired => "LEASE_EXPIRED",
            Refusal::NotFound => "LEASE_NOT_FOUND",
        }
    }

    pub fn into_error(self) -> ApiError {
        let msg = match self {
            Refusal::Held { .. } => "another worker holds this connector's lease",
            Refusal::Stale => "the lease was superseded by a newer one",
            Refusal::Expired => "the lease has expired",
            Refusal::NotFound => "no such lease",
        };
        let mut e = ApiError::conflict(self.code(), msg);
        if let Refusal::Held { expires_at } = self {
            e = e.with_details(serde_json::json!({ "expires_at": crate::time::rfc3339(expires_at) }));
        }
        e
    }
}

pub fn clamp_ttl(ms: i64) -> i64 {
    ms.clamp(MIN_TTL_MS, MAX_TTL_MS)
}

/// Takes the connector's lease if it is free.
///
/// The counter row is bumped first: its row lock serialises acquirers of one connector, and
/// the check for a live lease runs after it, so two workers can never both succeed. A refusal
/// rolls the bump back.
pub async fn acquire(db: &Db, connector_id: &str, worker_id: &str, ttl_ms: i64) -> ApiResult<Result<Lease, Refusal>> {
    let now = now_ms();
    let ttl = clamp_ttl(ttl_ms);
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO lease_counters (connector_id, last_token) VALUES ($1, 0) ON CONFLICT (connector_id) DO NOTHING",
    )
    .bind(connector_id)
    .execute(&mut *tx)
    .await?;
    let (token,): (i64,) = sqlx::query_as(
        "UPDATE lease_counters SET last_token = last_token + 1 WHERE connector_id = $1 RETURNING last_token",
    )
    .bind(connector_id)
    .fetch_one(&mut *tx)
    .await?;
    let held: Option<(i64,)> = sqlx::query_as(
        "SELECT expires_at FROM leases WHERE connector_id = $1 AND released = 0 AND expires_at >= $2
         ORDER BY fencing_token DESC LIMIT 1",
    )
    .bind(connector_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((expires_at,)) = held {
        tx.rollback().await?;
        return Ok(Err(Refusal::Held { expires_at }));
    }
    let lease = Lease {
        connector_id: connector_id.to_string(),
        lease_id: format!("lse_{}", ulid::Ulid::new()),
        worker_id: worker_id.to_string(),
        fencing_token: token,
        ttl_ms: ttl,
        expires_at: now + ttl,
    };
    sqlx::query(
        "INSERT INTO leases (id, connector_id, worker_id, fencing_token, ttl_ms, acquired_at, expires_at, released)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
    )
    .bind(&lease.lease_id)
    .bind(connector_id)
    .bind(worker_id)
    .bind(token)
    .bind(ttl)
    .bind(now)
    .bind(lease.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(lease))
}

/// The live lease a fence names, or why not.
async fn live(conn: &mut sqlx::AnyConnection, fence: &Fence) -> ApiResult<Result<Lease, Refusal>> {
    Ok(judge(stored(conn, fence).await?.0, fence))
}

/// A lease as stored, with its connector's last issued fencing token.
type LeaseRow = (String, String, i64, i64, i64, i64, i64);

/// The lease a fence names as stored, and the tenant and target share of its connector
/// (`None` when the connector no longer exists), in one query.
async fn stored(
    conn: &mut sqlx::AnyConnection,
    fence: &Fence,
) -> ApiResult<(Option<LeaseRow>, Option<(String, String)>)> {
    let row: Option<(String, String, i64, i64, i64, i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT l.connector_id, l.worker_id, l.fencing_token, l.ttl_ms, l.expires_at, l.released, c.last_token,
                k.tenant_id, k.target_share_id
         FROM leases l JOIN lease_counters c ON c.connector_id = l.connector_id
         LEFT JOIN connectors k ON k.id = l.connector_id
         WHERE l.id = $1",
    )
    .bind(&fence.lease_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => (None, None),
        Some((a, b, c, d, e, f, g, tenant, share)) => (Some((a, b, c, d, e, f, g)), tenant.zip(share)),
    })
}

/// Whether the stored lease is live for this fence.
fn judge(row: Option<LeaseRow>, fence: &Fence) -> Result<Lease, Refusal> {
    let Some((connector_id, worker_id, token, ttl_ms, expires_at, released, last_token)) = row else {
        return Err(Refusal::NotFound);
    };
    if token != fence.token || last_token != token || released != 0 {
        return Err(Refusal::Stale);
    }
    if expires_at < now_ms() {
        return Err(Refusal::Expired);
    }
    Ok(Lease { connector_id, lease_id: fence.lease_id.clone(), worker_id, fencing_token: token, ttl_ms, expires_at })
}

/// [`validate`], and the tenant and target share of the lease's connector (`None` when the
/// connector no longer exists) from the same query: what every worker call checks first.
pub async fn validate_scoped(db: &Db, fence: &Fence) -> ApiResult<Result<(Lease, Option<(String, String)>), Refusal>> {
    let mut conn = db.pool.acquire().await?;
    let (lease, connector) = stored(&mut conn, fence).await?;
    Ok(judge(lease, fence).map(|l| (l, connector)))
}

/// Checks a fence inside a write transaction (see the module docs for why that orders it).
pub async fn check(tx: &mut Tx<'_>, fence: &Fence) -> ApiResult<Lease> {
    live(&mut **tx, fence).await?.map_err(Refusal::into_error)
}

/// The live lease a fence names, inside a transaction.
pub async fn validate_tx(tx: &mut Tx<'_>, fence: &Fence) -> ApiResult<Result<Lease, Refusal>> {
    live(&mut **tx, fence).await
}

/// Checks a fence outside a transaction (reads, and the start of a write).
pub async fn validate(db: &Db, fence: &Fence) -> ApiResult<Result<Lease, Refusal>> {
    let mut conn = db.pool.acquire().await?;
    live(&mut conn, fence).await
}

/// Extends a live lease by `ttl_ms` (or its own ttl) from now.
pub async fn renew(db: &Db, fence: &Fence, ttl_ms: Option<i64>) -> ApiResult<Result<Lease, Refusal>> {
    let lease = match validate(db, fence).await? {
        Ok(l) => l,
        Err(r) => return Ok(Err(r)),
    };
    let ttl = ttl_ms.map(clamp_ttl).unwrap_or(lease.ttl_ms);
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE leases SET expires_at = $1, ttl_ms = $2
         WHERE id = $3 AND fencing_token = $4 AND released = 0 AND expires_at >= $5",
    )
    .bind(now + ttl)
    .bind(ttl)
    .bind(&fence.lease_id)
    .bind(fence.token)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(Err(Refusal::Expired));
    }
    Ok(Ok(Lease { expires_at: now + ttl, ttl_ms: ttl, ..lease }))
}

/// Ends a lease; true if it was live.
pub async fn release(db: &Db, fence: &Fence) -> ApiResult<bool> {
    let r = sqlx::query(
        "UPDATE leases SET released = 1
         WHERE id = $1 AND fencing_token = $2 AND released = 0 AND expires_at >= $3",
    )
    .bind(&fence.lease_id)
    .bind(fence.token)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}
