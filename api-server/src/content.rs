//! Content storage: files are cut into chunks of [`CHUNK_SIZE`] bytes, each stored once under
//! its SHA-256 (deduplicated across files, versions and tenants). A version is the ordered
//! list of its chunks plus the SHA-256 of the whole content.
//!
//! [`ContentStore`] is the boundary: a local directory now ([`LocalDirStore`]), an
//! S3-compatible object store for multi-node deployments later. Nothing here touches the
//! database; callers record chunk references in the same transaction that makes a version
//! visible, so a version never names content that is not completely stored.
//!
//! Memory stays flat in file size: at most one chunk per transfer is held.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

/// Size of a content chunk (the last chunk of a file may be shorter).
pub const CHUNK_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error("content larger than allowed")]
    TooLarge,
    #[error("chunk {0} is missing from the content store")]
    Missing(String),
    #[error("chunk {0} is corrupt (its SHA-256 does not match)")]
    Corrupt(String),
    #[error("content store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Where chunks live. Implementations must make `put` atomic (a chunk is either completely
/// there or absent) and idempotent.
#[async_trait::async_trait]
pub trait ContentStore: Send + Sync + 'static {
    async fn put(&self, sha256: &str, data: Bytes) -> Result<(), ContentError>;
    /// Hashes `data` and stores it under its SHA-256, which it returns. Stores on local
    /// disks do both in one blocking task (a small file's upload is then one hand-off to the
    /// blocking pool, not three).
    async fn put_hashed(&self, data: Bytes) -> Result<String, ContentError> {
        let d = data.clone();
        let hash = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&d)))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.put(&hash, data).await?;
        Ok(hash)
    }
    async fn get(&self, sha256: &str) -> Result<Bytes, ContentError>;
    async fn exists(&self, sha256: &str) -> Result<bool, ContentError>;
}

/// Chunks as files under `<root>/chunks/<2 hex>/<sha256>`, written to a temporary file in
/// the same folder first (`.<sha256>.<ulid>.tmp`, never read as a chunk), synced, then
/// renamed into place. Temporary files spread over the 256 folders like the chunks: with one
/// shared temporary folder, concurrent uploads of small files queued on its directory lock.
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        // All 256 fan-out folders up front: a put then needs no directory calls of its own.
        for i in 0..=255u8 {
            std::fs::create_dir_all(root.join("chunks").join(format!("{i:02x}")))?;
        }
        Ok(Self { root: root.to_path_buf() })
    }

    /// Writes `data` as chunk `dest` unless it is there already (blocking).
    fn store_blocking(dest: &Path, sha256: &str, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if dest.try_exists()? {
            return Ok(());
        }
        let tmp = dest.with_file_name(format!(".{sha256}.{}.tmp", ulid::Ulid::new()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
            drop(f);
            std::fs::rename(&tmp, dest)
        })();
        // A failed write (a full disk) must not leave its partial file taking space.
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        chunk_path(&self.root, sha256)
    }
}

/// `<root>/chunks/<first 2 hex digits>/<sha256>`.
fn chunk_path(root: &Path, sha256: &str) -> PathBuf {
    root.join("chunks").join(&sha256[..2]).join(sha256)
}

fn valid_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[async_trait::async_trait]
impl ContentStore for LocalDirStore {
    async fn put(&self, sha256: &str, data: Bytes) -> Result<(), ContentError> {
        assert!(valid_hash(sha256), "chunk names are lowercase SHA-256 hex");
        let dest = self.path_of(sha256);
        let name = sha256.to_string();
        tokio::task::spawn_blocking(move || Self::store_blocking(&dest, &name, &data))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(())
    }

    async fn put_hashed(&self, data: Bytes) -> Result<String, ContentError> {
        let root = self.root.clone();
        let hash = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let hash = hex::encode(Sha256::digest(&data));
            let dest = chunk_path(&root, &hash);
            Self::store_blocking(&dest, &hash, &data)?;
            Ok(hash)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(hash)
    }

    async fn get(&self, sha256: &str) -> Result<Bytes, ContentError> {
        if !valid_hash(sha256) {
            return Err(ContentError::Missing(sha256.to_string()));
        }
        match tokio::fs::read(self.path_of(sha256)).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ContentError::Missing(sha256.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn exists(&self, sha256: &str) -> Result<bool, ContentError> {
        Ok(valid_hash(sha256) && tokio::fs::try_exists(self.path_of(sha256)).await?)
    }
}

/// One stored chunk of a content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub sha256: String,
    pub size: u64,
}

/// What [`ingest`] stored.
#[derive(Clone, Debug)]
pub struct Ingested {
    pub size: u64,
    /// SHA-256 of the whole content (lowercase hex).
    pub sha256: String,
    pub chunks: Vec<ChunkRef>,
}

/// Reads a byte stream to its end, storing it chunk by chunk, and returns the chunk list and
/// the whole content's SHA-256. Hashing runs off the async threads. `limit` bounds the total.
///
/// Each byte is hashed twice (its chunk's name, and the whole content), in one blocking task
/// per chunk, except for content of a single chunk, whose chunk hash is the whole hash. The
/// chunk is stored (written, synced, renamed into place) while the next one is received: one
/// store in flight, so memory holds at most two chunks and the store still completes in order.
pub async fn ingest<S, E>(store: &dyn ContentStore, mut body: S, limit: Option<u64>) -> Result<Ingested, ContentError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size: u64 = 0;
    let mut buf = BytesMut::with_capacity(CHUNK_SIZE);
    // The store of the previous full chunk, running while the next one is received.
    let mut storing: Option<Pin<Box<dyn std::future::Future<Output = Result<(), ContentError>> + Send + '_>>> = None;
    loop {
        let next = match storing.as_mut() {
            Some(put) => {
                // Receive while the previous chunk is being stored; surface its failure early.
                tokio::select! {
                    biased;
                    r = put => { r?; storing = None; continue; }
                    n = body.next() => n,
                }
            }
            None => body.next().await,
        };
        match next {
            Some(Ok(mut data)) => {
                size += data.len() as u64;
                if limit.is_some_and(|l| size > l) {
                    return Err(ContentError::TooLarge);
                }
                while !data.is_empty() {
                    let take = (CHUNK_SIZE - buf.len()).min(data.len());
                    if buf.is_empty() && take == CHUNK_SIZE {
                        // A whole chunk as received: no copy.
                        buf = BytesMut::new();
                        let chunk = data.split_to(take);
                        whole = stage_chunk(store, chunk, whole, &mut chunks, &mut storing).await?;
                        continue;
                    }
                    buf.extend_from_slice(&data.split_to(take));
                    if buf.len() == CHUNK_SIZE {
                        let chunk = buf.split().freeze();
                        buf.reserve(CHUNK_SIZE);
                        whole = stage_chunk(store, chunk, whole, &mut chunks, &mut storing).await?;
                    }
                }
            }
            Some(Err(e)) => return Err(ContentError::Body(e.to_string())),
            None => break,
        }
    }
    if let Some(put) = storing.take() {
        put.await?;
    }
    if !buf.is_empty() {
        if chunks.is_empty() {
            // The only chunk: its hash is the whole content's hash (one pass, not two).
            let chunk = buf.freeze();
            let size_of = chunk.len() as u64;
            let hash = store.put_hashed(chunk).await?;
            chunks.push(ChunkRef { sha256: hash.clone(), size: size_of });
            return Ok(Ingested { size, sha256: hash, chunks });
        }
        whole = stage_chunk(store, buf.freeze(), whole, &mut chunks, &mut storing).await?;
        if let Some(put) = storing.take() {
            put.await?;
        }
    }
    Ok(Ingested { size, sha256: hex::encode(whole.finalize()), chunks })
}

/// Hashes `chunk` (and feeds the whole-content hash), records it, and starts storing it once
/// the previous chunk's store has finished.
async fn stage_chunk<'s>(
    store: &'s dyn ContentStore,
    chunk: Bytes,
    mut whole: Sha256,
    chunks: &mut Vec<ChunkRef>,
    storing: &mut Option<Pin<Box<dyn std::future::Future<Output = Result<(), ContentError>> + Send + 's>>>,
) -> Result<Sha256, ContentError> {
    let data = chunk.clone();
    let (whole, hash) = tokio::task::spawn_blocking(move || {
        whole.update(&data);
        let hash = hex::encode(Sha256::digest(&data));
        (whole, hash)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(prev) = storing.take() {
        prev.await?;
    }
    chunks.push(ChunkRef { sha256: hash.clone(), size: chunk.len() as u64 });
    *storing = Some(Box::pin(async move { store.put(&hash, chunk).await }));
    Ok(whole)
}

/// SHA-256 of stored content, read back chunk by chunk (used to finish resumable uploads).
pub async fn hash_chunks(store: &dyn ContentStore, chunks: &[ChunkRef]) -> Result<String, ContentError> {
    let mut whole = Sha256::new();
    for c in chunks {
        let data = store.get(&c.sha256).await?;
        whole = tokio::task::spawn_blocking(move || {
            whole.update(&data);
            whole
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(hex::encode(whole.finalize()))
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ContentError>> + Send>>;

/// Streams bytes `[start, end)` of a content made of `chunks`, one chunk in memory at a time.
pub fn read_range(store: std::sync::Arc<dyn ContentStore>, chunks: Vec<ChunkRef>, start: u64, end: u64) -> ByteStream {
    // (chunk, offset of the chunk in the content)
    let mut offset = 0u64;
    let mut parts = Vec::new();
    for c in chunks {
        let (cs, ce) = (offset, offset + c.size);
        offset = ce;
        if ce <= start || cs >= end {
            continue;
        }
        let from = start.saturating_sub(cs) as usize;
        let to = (end.min(ce) - cs) as usize;
        parts.push((c.sha256, from, to));
    }
    Box::pin(futures::stream::iter(parts).then(move |(hash, from, to)| {
        let store = store.clone();
        async move {
            let data = store.get(&hash).await?;
            if data.len() < to {
                return Err(ContentError::Corrupt(hash));
            }
            Ok(data.slice(from..to))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    #[tokio::test]
    async fn ingest_cuts_chunks_dedups_and_reads_ranges_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn ContentStore> = std::sync::Arc::new(LocalDirStore::open(dir.path()).unwrap());
        let content: Vec<u8> = (0..(CHUNK_SIZE * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let parts: Vec<Vec<u8>> = content.chunks(1_000_003).map(|c| c.to_vec()).collect();
        let got = ingest(store.as_ref(), body(parts), None).await.unwrap();
        assert_eq!(got.size, content.len() as u64);
        assert_eq!(got.chunks.len(), 3);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&content)));
        assert_eq!(hash_chunks(store.as_ref(), &got.chunks).await.unwrap(), got.sha256);

        // The same content again stores nothing new.
        let again = ingest(store.as_ref(), body(vec![content.clone()]), None).await.unwrap();
        assert_eq!(again.chunks, got.chunks);

        let start = CHUNK_SIZE as u64 - 10;
        let end = CHUNK_SIZE as u64 * 2 + 5;
        let mut s = read_range(store.clone(), got.chunks.clone(), start, end);
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        assert_eq!(out, &content[start as usize..end as usize]);
    }

    #[tokio::test]
    async fn whole_chunks_as_received_and_a_single_chunk_hash_the_same_as_cut_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn ContentStore> = std::sync::Arc::new(LocalDirStore::open(dir.path()).unwrap());
        // Parts of exactly one chunk each (stored without copying) and a short tail.
        let content: Vec<u8> = (0..(CHUNK_SIZE * 2 + 9)).map(|i| (i % 241) as u8).collect();
        let parts: Vec<Vec<u8>> = content.chunks(CHUNK_SIZE).map(|c| c.to_vec()).collect();
        let got = ingest(store.as_ref(), body(parts), None).await.unwrap();
        let cut =
            ingest(store.as_ref(), body(content.chunks(777_777).map(|c| c.to_vec()).collect()), None).await.unwrap();
        assert_eq!((got.sha256.clone(), got.chunks.clone()), (cut.sha256, cut.chunks));
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&content)));
        // One chunk: its name is the whole content's hash, and it reads back.
        let small = b"one small file".to_vec();
        let one = ingest(store.as_ref(), body(vec![small[..4].to_vec(), small[4..].to_vec()]), None).await.unwrap();
        assert_eq!(one.sha256, hex::encode(Sha256::digest(&small)));
        assert_eq!(one.chunks, vec![ChunkRef { sha256: one.sha256.clone(), size: small.len() as u64 }]);
        assert_eq!(store.get(&one.sha256).await.unwrap(), Bytes::from(small));
    }

    #[tokio::test]
    async fn ingest_refuses_content_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let r = ingest(&store, body(vec![vec![1u8; 100]]), Some(99)).await;
        assert!(matches!(r, Err(ContentError::TooLarge)));
    }

    #[tokio::test]
    async fn empty_content_has_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let got = ingest(&store, body(vec![]), None).await.unwrap();
        assert_eq!(got.size, 0);
        assert!(got.chunks.is_empty());
        assert_eq!(got.sha256, hex::encode(Sha256::digest(b"")));
    }
}
