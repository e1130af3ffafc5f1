//! Persistence of the ScaiDrive side: plain async functions over [`Db`](crate::db::Db),
//! shared by the REST handlers, the CLI and (later) the workers' gRPC service. They enforce
//! tenant scoping (another tenant's object is "not found") and integrity; permission checks
//! live with the callers, through [`acl::require`].

pub mod accounts;
pub mod acl;
pub mod changes;
pub mod conn_tests;
pub mod connectors;
pub mod file_states;
pub mod jobs;
pub mod leases;
pub mod mappings;
pub mod nodes;
pub mod permissions;
pub mod shares;
pub mod watch;

use sqlx::any::AnyRow;
use sqlx::Row;

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

pub(crate) fn get_str(r: &AnyRow, col: &str) -> String {
    r.try_get::<String, _>(col).unwrap_or_default()
}

pub(crate) fn get_opt_str(r: &AnyRow, col: &str) -> Option<String> {
    r.try_get::<Option<String>, _>(col).ok().flatten()
}

pub(crate) fn get_i64(r: &AnyRow, col: &str) -> i64 {
    r.try_get::<i64, _>(col).unwrap_or_default()
}

pub(crate) fn get_opt_i64(r: &AnyRow, col: &str) -> Option<i64> {
    r.try_get::<Option<i64>, _>(col).ok().flatten()
}
