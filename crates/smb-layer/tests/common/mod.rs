//! Shared test setup: a real Samba (samba-harness) and a client for its service account.
#![allow(dead_code)]

use std::time::Duration;

use samba_harness::{SambaServer, TestUser};
use smb_layer::{SmbClient, SmbConfig};

/// Starts a throwaway Samba (blocking ~1 s).
pub fn samba() -> SambaServer {
    SambaServer::start().expect("starting samba")
}

/// A config for the service account of `s`, with short timeouts so a stall fails fast.
pub fn config(s: &SambaServer) -> SmbConfig {
    let (domain, user, password) = s.service_account();
    let mut cfg = SmbConfig::new(s.host(), s.port(), domain, user, password, s.share_name());
    cfg.timeouts.connect = Duration::from_secs(10);
    cfg.timeouts.request = Duration::from_secs(20);
    cfg.timeouts.list_dir = Duration::from_secs(60);
    cfg
}

/// A config for one of the harness's users.
pub fn config_for(s: &SambaServer, u: TestUser) -> SmbConfig {
    let c = s.user(u);
    let mut cfg = config(s);
    cfg.username = c.user;
    cfg.password = c.password.into();
    cfg
}

/// Connected client for the service account.
pub async fn client(s: &SambaServer) -> SmbClient {
    SmbClient::connect(config(s)).await.expect("connecting")
}

/// Deterministic pseudo-random bytes (xorshift64*), so tests need no RNG crate.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
