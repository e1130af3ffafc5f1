//! `SmbShare` (the engine's SMB replica) against a real, throwaway Samba.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use samba_harness::SambaServer;
use smb_layer::{SmbClient, SmbConfig};
use sync_engine::{codes, ByteStream, FileTime, ItemKind, RelPath, ReplicaError, SmbExpect, SmbReplica};
use sync_worker::smb_replica::{SmbShare, SMB_CHANGED_DURING_READ};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

async fn setup() -> (SambaServer, SmbShare) {
    let s = tokio::task::spawn_blocking(|| SambaServer::start().expect("starting samba")).await.unwrap();
    std::fs::create_dir_all(s.share_dir().join("base/docs")).unwrap();
    s.give_to_service_account(s.share_dir()).unwrap();
    let (domain, user, password) = s.service_account();
    let mut cfg = SmbConfig::new(s.host(), s.port(), domain, user, password, s.share_name());
    cfg.timeouts.connect = Duration::from_secs(10);
    cfg.timeouts.request = Duration::from_secs(20);
    let client = SmbClient::connect(cfg).await.expect("connecting");
    (s, SmbShare::new(client, "/base/"))
}

fn stream_of(chunks: Vec<&'static [u8]>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(|c| Ok::<Bytes, ReplicaError>(Bytes::from_static(c)))).boxed()
}

async fn drain(mut s: ByteStream) -> Result<Vec<u8>, ReplicaError> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_write_renames_over_the_target_only_if_it_is_unchanged() {
    let (s, smb) = setup().await;
    let disk = s.share_dir().join("base/docs/a.txt");
    smb.client().write_all("base/docs/a.txt", &b"old content"[..]).await.unwrap();
    let before = smb.stat(&p("docs/a.txt")).await.unwrap().expect("exists");
    assert_eq!((before.kind, before.size), (ItemKind::File, 11));

    // Written under a temporary name in the same folder; the target is untouched meanwhile.
    let temp = smb.write_temp(&p("docs/a.txt"), stream_of(vec![b"new ", b"content!"])).await.unwrap();
    assert_eq!(temp.path.parent(), Some(p("docs")));
    assert_ne!(temp.path, p("docs/a.txt"));
    assert_eq!(std::fs::read(&disk).unwrap(), b"old content");

    let t = FileTime::from_unix(1_700_000_000, 0);
    let after = smb.commit_temp(&temp, &p("docs/a.txt"), Some(&SmbExpect::of(&before)), t).await.unwrap();
    assert_eq!(std::fs::read(&disk).unwrap(), b"new content!");
    assert_eq!((after.size, after.last_write), (12, t));
    assert!(smb.stat(&temp.path).await.unwrap().is_none(), "temp renamed away");

    // The target changed since planned: the commit is refused and nothing changes.
    let temp = smb.write_temp(&p("docs/a.txt"), stream_of(vec![b"third"])).await.unwrap();
    let err = smb.commit_temp(&temp, &p("docs/a.txt"), Some(&SmbExpect::of(&before)), t).await.unwrap_err();
    assert_eq!(err.code, codes::SMB_CHANGED);
    assert_eq!(std::fs::read(&disk).unwrap(), b"new content!");
    smb.discard_temp(&temp).await.unwrap();
    assert!(smb.stat(&temp.path).await.unwrap().is_none());

    // A new file may not replace something that appeared meanwhile.
    let temp = smb.write_temp(&p("docs/a.txt"), stream_of(vec![b"x"])).await.unwrap();
    let err = smb.commit_temp(&temp, &p("docs/a.txt"), None, t).await.unwrap_err();
    assert_eq!(err.code, codes::SMB_CHANGED);
    smb.discard_temp(&temp).await.unwrap();

    // A failing source leaves no temporary file behind.
    let failing: ByteStream = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"abc")),
        Err(ReplicaError::new(codes::CHECKSUM_MISMATCH, "download broke")),
    ])
    .boxed();
    let err = smb.write_temp(&p("docs/b.txt"), failing).await.unwrap_err();
    assert_eq!(err.code, codes::CHECKSUM_MISMATCH);
    let left: Vec<_> =
        std::fs::read_dir(s.share_dir().join("base/docs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("a.txt")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_read_fails_its_stream() {
    let (s, smb) = setup().await;
    let disk = s.share_dir().join("base/big.bin");
    // Far larger than what the reader fetches ahead (a few 4 MiB reads in flight), so the
    // change below lands while most of the file is still unread: the stream is held back by
    // this test not consuming it.
    let data: Vec<u8> = (0..64u32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(&disk, &data).unwrap();

    // Unchanged: the content streams whole.
    let read = drain(smb.read(&p("big.bin")).await.unwrap()).await.unwrap();
    assert!(read == data, "the unchanged file streams whole");

    // Changed after the read started (same size, new content and time): the stream ends
    // with SMB_CHANGED_DURING_READ, so nothing built from it can be committed.
    let mut stream = smb.read(&p("big.bin")).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let mut changed = data.clone();
    changed[0] ^= 0xff;
    std::fs::write(&disk, &changed).unwrap();
    let f = std::fs::File::options().write(true).open(&disk).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    drop(f);
    let err = match drain(stream).await {
        Ok(v) => panic!("a file changed mid-read streamed to its end ({} bytes) without an error", v.len()),
        Err(e) => e,
    };
    assert_eq!(err.code, SMB_CHANGED_DURING_READ, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_deletes_and_folders_check_the_item_first() {
    let (_s, smb) = setup().await;
    let docs = smb.mkdir(&p("docs")).await.unwrap();
    assert_eq!(docs.kind, ItemKind::Dir);
    smb.mkdir(&p("docs/sub")).await.unwrap();
    smb.client().write_all("base/docs/a.txt", &b"abc"[..]).await.unwrap();
    let a = smb.stat(&p("docs/a.txt")).await.unwrap().unwrap();

    // Refused when another file is at the source path.
    let err = smb.rename(&p("docs/a.txt"), &p("docs/sub/a.txt"), a.file_id + 1).await.unwrap_err();
    assert_eq!(err.code, codes::SMB_CHANGED);
    let moved = smb.rename(&p("docs/a.txt"), &p("docs/sub/a.txt"), a.file_id).await.unwrap();
    assert_eq!(moved.file_id, a.file_id);

    // A delete of a file that changed is refused; of an unchanged one succeeds; twice is fine.
    let stale = SmbExpect { file_id: moved.file_id, size: 999, last_write: moved.last_write };
    let err = smb.delete(&p("docs/sub/a.txt"), ItemKind::File, Some(&stale)).await.unwrap_err();
    assert_eq!(err.code, codes::SMB_CHANGED);
    smb.delete(&p("docs/sub/a.txt"), ItemKind::File, Some(&SmbExpect::of(&moved))).await.unwrap();
    smb.delete(&p("docs/sub/a.txt"), ItemKind::File, None).await.unwrap();
    smb.delete(&p("docs/sub"), ItemKind::Dir, None).await.unwrap();
    assert!(smb.stat(&p("docs/sub")).await.unwrap().is_none());

    let t = FileTime::from_unix(1_600_000_000, 500);
    smb.client().write_all("base/docs/c.txt", &b"c"[..]).await.unwrap();
    assert_eq!(smb.set_times(&p("docs/c.txt"), t).await.unwrap().last_write, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_the_share_are_not_followed() {
    let (s, smb) = setup().await;
    std::fs::write(s.root_dir().join("secret.txt"), b"outside the share").unwrap();
    std::os::unix::fs::symlink(s.root_dir().join("secret.txt"), s.share_dir().join("base/link.txt")).unwrap();
    std::fs::write(s.share_dir().join("base/plain.txt"), b"plain").unwrap();
    s.give_to_service_account(s.share_dir()).unwrap();

    let settings = sync_engine::Settings::default();
    let scan = sync_worker::scan::scan_smb(
        smb.client(),
        smb.root(),
        &settings,
        &Default::default(),
        &tokio_util::sync::CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(scan.walk.items.contains_key(&p("plain.txt")));
    // Samba either hides a link leading out of the share or refuses to open it; its
    // content is never read into a sync.
    if scan.walk.items.contains_key(&p("link.txt")) {
        let r = match smb.read(&p("link.txt")).await {
            Ok(s) => drain(s).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let item = &scan.walk.items[&p("link.txt")];
        assert!(item.reparse || r.is_err(), "a link out of the share was readable: {item:?}");
    }
}
