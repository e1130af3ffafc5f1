//! A test-only crash hook for the fault campaigns (tests/sync/crash.rs).
//!
//! With `SCAIDRIVE_CRASH_AT=<point>:<n>` in its environment, the process aborts (no
//! unwinding, no destructors, no goodbye to the broker or the control plane: as good as
//! SIGKILL) the `n`-th time any task passes [`point`]`(<point>)`. The points sit where a crash
//! is most likely to break a promise: `listing` (after the SMB walk, before the ScaiDrive
//! listing), `upload` (mid-upload: the header and a first chunk sent), `download` (mid-write
//! of an SMB temporary file), `rename-over` (temporary file complete, target not yet
//! replaced), `renamed` (target replaced, its time not yet set), `state` (a side effect done,
//! its synced state not yet recorded) and `ack` (the outcome recorded, the queue message not
//! yet acknowledged).
//!
//! Unset — always, in production — a pass costs one load of a cached `None`. Never set it
//! for an api-server in standalone mode: its embedded workers would abort the whole server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "SCAIDRIVE_CRASH_AT";

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var(CRASH_AT_ENV).ok()?;
        let (point, n) = v.rsplit_once(':')?;
        Some((point.to_string(), n.parse().ok().filter(|n| *n > 0)?))
    })
}

/// Aborts the process if this is the configured pass through `name` (see the module docs).
#[inline]
pub fn point(name: &str) {
    let Some((at, n)) = target() else { return };
    if at == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        eprintln!("{CRASH_AT_ENV}: aborting at {name} (pass {n})");
        std::process::abort();
    }
}
