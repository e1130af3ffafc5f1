//! Measurements behind the numbers in README.md (ignored by default; run with
//! `--ignored --nocapture`): TCP_NODELAY on/off, listing and transfer rates.

mod common;

use std::time::Instant;

use common::*;
use smb_layer::SmbClient;

async fn stats_per_s(c: &SmbClient, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        c.stat(&format!("m/{}.txt", i % 10)).await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn write_read_mib_s(c: &SmbClient, mib: usize) -> (f64, f64) {
    let data = pseudo_random(3, mib * 1024 * 1024);
    let t = Instant::now();
    c.write_all("m/blob.bin", data.clone()).await.unwrap();
    let w = mib as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = c.read_to_vec("m/blob.bin").await.unwrap();
    let r = mib as f64 / t.elapsed().as_secs_f64();
    assert_eq!(back.len(), data.len());
    (w, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_nodelay_and_rates() {
    let s = samba();
    let setup = client(&s).await;
    setup.mkdir("m").await.unwrap();
    for i in 0..10 {
        setup.write_all(&format!("m/{i}.txt"), &b"x"[..]).await.unwrap();
    }
    for nodelay in [true, false] {
        let mut cfg = config(&s);
        cfg.tcp_nodelay = nodelay;
        let c = SmbClient::connect(cfg).await.unwrap();
        let sps = stats_per_s(&c, if nodelay { 2000 } else { 100 }).await;
        let (w, r) = write_read_mib_s(&c, 256).await;
        println!("nodelay={nodelay}: sequential stats {sps:.0}/s ({:.2} ms each); 256 MiB write {w:.0} MiB/s, read {r:.0} MiB/s", 1000.0 / sps);
    }
}

/// The library's own TCP transport (no TCP_NODELAY, frame header written separately), for
/// comparison with ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_library_transport_without_nodelay() {
    use smb::{Client, ClientConfig, ConnectionConfig, FileAccessMask, FileCreateArgs, UncPath};
    use std::str::FromStr;
    let s = samba();
    std::fs::write(s.share_dir().join("probe.txt"), b"x").unwrap();
    let (domain, user, pw) = s.service_account();
    let client = Client::new(ClientConfig {
        connection: ConnectionConfig { port: Some(s.port()), ..Default::default() },
        ..Default::default()
    });
    let share = UncPath::from_str(&format!(r"\\127.0.0.1\{}", s.share_name())).unwrap();
    client.share_connect(&share, &format!("{domain}\\{user}"), pw).await.unwrap();
    let file = share.clone().with_path("probe.txt");
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let r = client
            .create_file(
                &file,
                &FileCreateArgs::make_open_existing(FileAccessMask::new().with_file_read_attributes(true)),
            )
            .await
            .unwrap();
        drop(r);
    }
    let per = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("library TcpTransport: open (+ background close) {per:.1} ms each");
    let c = client_for_compare(&s).await;
    let t = Instant::now();
    for _ in 0..n {
        c.stat("probe.txt").await.unwrap();
    }
    println!(
        "our transport: stat (open + 2 queries + close) {:.2} ms each",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

async fn client_for_compare(s: &samba_harness::SambaServer) -> SmbClient {
    client(s).await
}

/// Read and write rates by request size and depth, with the interim responses (each one loses
/// its credits, see `transport.rs`) and the connections it took: what the defaults in
/// `Limits` rest on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_request_sizes() {
    let s = samba();
    let setup = client(&s).await;
    setup.mkdir("m").await.unwrap();
    let mib = 256;
    let data = pseudo_random(5, mib * 1024 * 1024);
    for (chunk_kib, depth) in [(256, 8), (512, 8), (1024, 4), (4096, 4), (256, 8), (512, 8), (1024, 4), (4096, 4)] {
        let mut cfg = config(&s);
        cfg.limits.io_chunk = chunk_kib * 1024;
        cfg.limits.io_depth = depth;
        cfg.limits.connections = 1;
        let c = SmbClient::connect(cfg).await.unwrap();
        let t = Instant::now();
        c.write_all("m/sizes.bin", data.clone()).await.unwrap();
        let w = mib as f64 / t.elapsed().as_secs_f64();
        let after_write = c.stats().await;
        let t = Instant::now();
        let back = c.read_to_vec("m/sizes.bin").await.unwrap();
        let r = mib as f64 / t.elapsed().as_secs_f64();
        assert_eq!(back.len(), data.len());
        let st = c.stats().await;
        println!(
            "{chunk_kib:>5} KiB x {depth}: write {w:>5.0} MiB/s, read {r:>5.0} MiB/s; interim responses {} (write {}), connections {}",
            st.interim_responses, after_write.interim_responses, st.connections_made
        );
    }
}
