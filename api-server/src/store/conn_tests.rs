//! Connectivity tests waiting for a worker's answer. The credentials to try are sealed like a
//! connector's (the test id as associated data); the row lives only while its caller waits.

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::ids::TenantId;
use crate::secrets::{Secret, SecretBox};
use crate::time::now_ms;

/// What a worker needs to run a test.
#[derive(Clone, Debug)]
pub struct PendingTest {
    pub id: String,
    pub server_host: String,
    pub server_port: i64,
    pub share_name: String,
    pub base_path: Option<String>,
    pub domain: Option<String>,
    pub username: String,
    pub password: Secret,
    pub check_write: bool,
}

pub async fn create(
    db: &Db,
    secrets: &SecretBox,
    tenant: &TenantId,
    connector_id: Option<&str>,
    t: &PendingTest,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO connection_tests (id, tenant_id, connector_id, server_host, server_port, share_name, base_path, domain,
            username, password_sealed, check_write, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&t.id)
    .bind(tenant.as_str())
    .bind(connector_id)
    .bind(&t.server_host)
    .bind(t.server_port)
    .bind(&t.share_name)
    .bind(t.base_path.clone())
    .bind(t.domain.clone())
    .bind(&t.username)
    .bind(secrets.seal(&t.id, &t.password))
    .bind(t.check_write as i64)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The pending test, with its password opened (for the worker fetching it).
pub async fn fetch(db: &Db, secrets: &SecretBox, id: &str) -> ApiResult<Option<PendingTest>> {
    let row: Option<(String, i64, String, Option<String>, Option<String>, String, String, i64)> = sqlx::query_as(
        "SELECT server_host, server_port, share_name, base_path, domain, username, password_sealed, check_write
         FROM connection_tests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?;
    let Some((server_host, server_port, share_name, base_path, domain, username, sealed, check_write)) = row else {
        return Ok(None);
    };
    let password = secrets
        .open(id, &sealed)
        .map_err(|_| ApiError::internal("a pending test's credentials could not be opened"))?;
    Ok(Some(PendingTest {
        id: id.to_string(),
        server_host,
        server_port,
        share_name,
        base_path,
        domain,
        username,
        password,
        check_write: check_write != 0,
    }))
}

pub async fn remove(db: &Db, id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM connection_tests WHERE id = $1").bind(id).execute(&db.pool).await?;
    Ok(())
}
