//! Who is calling: bearer API tokens. A token is shown once when created; the database holds
//! only its SHA-256 (tokens are 256 random bits, so a fast hash suffices and lookups stay
//! O(1)). Revoked tokens and tokens of deleted users are refused with 401.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::ids::{TenantId, UserId};
use crate::AppState;

/// An authenticated user, resolved from the request's bearer token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub global_role: Option<String>,
    pub group_ids: Vec<String>,
}

impl Caller {
    /// `tenant_admin` and `super_admin` hold every permission in their tenant.
    pub fn is_admin(&self) -> bool {
        matches!(self.global_role.as_deref(), Some("tenant_admin" | "super_admin"))
    }

    pub fn actor(&self) -> crate::store::changes::Actor {
        crate::store::changes::Actor::user(self.user_id.as_str())
    }
}

pub const TOKEN_PREFIX: &str = "sdt_";

/// A new random token (its plaintext).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{TOKEN_PREFIX}{}", hex::encode(b))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer <token> header"))?;
        let value = header.to_str().map_err(|_| ApiError::unauthenticated("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be 'Bearer <token>'"))?;
        crate::store::accounts::authenticate(&state.db, token)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("invalid or revoked token"))
    }
}
