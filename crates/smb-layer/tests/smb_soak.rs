//! Soak: ≥ 1 GiB written and read back byte-identical through one client, tens of thousands
//! of small requests, and concurrent listings of a ~20k-entry tree, all under timeouts so a
//! stall fails the test instead of hanging CI.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use smb_layer::{SmbClient, WalkOptions};

const GIB: u64 = 1024 * 1024 * 1024;
const PIECE: usize = 1024 * 1024;

/// A deterministic 1 MiB-piece source of `total` bytes, hashing what it yields.
fn source(
    total: u64,
    hasher: std::sync::Arc<std::sync::Mutex<Sha256>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let pieces = total.div_ceil(PIECE as u64);
    futures::stream::iter(0..pieces).map(move |i| {
        let len = (total - i * PIECE as u64).min(PIECE as u64) as usize;
        let b = pseudo_random(i + 1, len);
        hasher.lock().unwrap().update(&b);
        Ok(Bytes::from(b))
    })
}

async fn soak_gib(c: &SmbClient) {
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Sha256::new()));
    let t = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(150), c.write_stream("soak/big.bin", source(GIB, hasher.clone())))
        .await
        .expect("1 GiB upload stalled (timeout)")
        .expect("upload failed");
    let up = t.elapsed();
    assert_eq!(n, GIB);
    let want = hex::encode(hasher.lock().unwrap().clone().finalize());
    let stats = c.stats().await;
    println!(
        "write 1 GiB: {:.1} s, {:.0} MiB/s; connections so far {}, interim responses on current conn {}, lost credits {}",
        up.as_secs_f64(),
        1024.0 / up.as_secs_f64(),
        stats.connections_made,
        stats.interim_responses,
        stats.credits_lost
    );

    let t = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(150), async {
        let mut s = Box::pin(c.read_stream("soak/big.bin").await.expect("open for read"));
        let mut h = Sha256::new();
        let mut total = 0u64;
        while let Some(b) = s.next().await {
            let b = b.expect("read failed");
            total += b.len() as u64;
            h.update(&b);
        }
        (total, hex::encode(h.finalize()))
    })
    .await
    .expect("1 GiB download stalled (timeout)");
    let down = t.elapsed();
    println!("read 1 GiB: {:.1} s, {:.0} MiB/s", down.as_secs_f64(), 1024.0 / down.as_secs_f64());
    assert_eq!(got.0, GIB);
    assert_eq!(got.1, want, "SHA-256 of the read-back content differs");
}

async fn soak_small_requests(c: &SmbClient) {
    for i in 0..200 {
        c.write_all(&format!("soak/small/{i}.txt"), format!("file {i}").into_bytes()).await.unwrap();
    }
    let t = Instant::now();
    let n = 30_000usize;
    let ok = tokio::time::timeout(Duration::from_secs(120), async {
        futures::stream::iter(0..n)
            .map(|i| {
                let c = c.clone();
                async move { c.stat(&format!("soak/small/{}.txt", i % 200)).await }
            })
            .buffer_unordered(32)
            .filter(|r| futures::future::ready(r.is_ok()))
            .count()
            .await
    })
    .await
    .expect("small requests stalled (timeout)");
    let el = t.elapsed();
    // Each stat is 4 SMB requests (create, 2 x query info, close).
    println!(
        "{n} stats ({} SMB requests): {:.1} s, {:.0} stats/s",
        n * 4,
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64()
    );
    assert_eq!(ok, n);
}

async fn soak_listings(s: &samba_harness::SambaServer, c: &SmbClient) {
    let root = s.share_dir().join("tree");
    let (dirs, files) = (20usize, 1000usize);
    for d in 0..dirs {
        let p = root.join(format!("dir{d:02}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..files {
            std::fs::File::create(p.join(format!("file-with-a-longer-name-{f:05}.dat"))).unwrap();
        }
    }
    let expected = dirs + dirs * files;
    let t = Instant::now();
    let (a, b, lists) = tokio::time::timeout(Duration::from_secs(120), async {
        let walk = |conc| {
            let c = c.clone();
            async move {
                let opts = WalkOptions { concurrency: conc, ..Default::default() };
                let mut n = 0usize;
                let mut s = Box::pin(c.walk("tree", opts));
                while let Some(e) = s.next().await {
                    e.expect("walk entry");
                    n += 1;
                }
                n
            }
        };
        let lists = async {
            let all = futures::stream::iter(0..dirs)
                .map(|d| {
                    let c = c.clone();
                    async move { c.list_dir(&format!("tree/dir{d:02}")).await.expect("list").len() }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await;
            all.into_iter().sum::<usize>()
        };
        tokio::join!(walk(8), walk(3), lists)
    })
    .await
    .expect("listings stalled (timeout)");
    let el = t.elapsed();
    println!(
        "concurrent listings: 2 walks + {dirs} list_dir = {} entries in {:.1} s, {:.0} entries/s",
        a + b + lists,
        el.as_secs_f64(),
        (a + b + lists) as f64 / el.as_secs_f64()
    );
    assert_eq!(a, expected);
    assert_eq!(b, expected);
    assert_eq!(lists, dirs * files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_one_gib_round_trip_small_requests_and_big_listings() {
    let s = samba();
    let c = client(&s).await;
    c.mkdir_all("soak/small").await.unwrap();
    let t = Instant::now();
    soak_gib(&c).await;
    soak_small_requests(&c).await;
    soak_listings(&s, &c).await;
    let stats = c.stats().await;
    println!("soak total {:.1} s; {stats:?}", t.elapsed().as_secs_f64());
}
