//! Blob store behaviour every backend must show: each case runs on the
//! filesystem store and on a real S3 service (`CUSTOS_TEST_S3_URL` plus
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`; `scripts/test` starts SeaweedFS).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use tokio::io::AsyncReadExt;

use custos_store::{BlobStore, FsStore, S3Store, StoreError};

type Store = Arc<dyn BlobStore>;

fn temp_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "custos-store-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// A folder the test removes when it is done (each case writes megabytes;
/// left behind, every run of the suite leaked a gigabyte of /tmp).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(what: &str) -> Scratch {
    Scratch(temp_dir(what))
}

/// The default filesystem store: small blobs packed, large ones in files.
fn fs_store(dir: &Scratch) -> Store {
    Arc::new(FsStore::open(&dir.0).unwrap())
}

/// Every blob in its own file.
fn fs_files_store(dir: &Scratch) -> Store {
    Arc::new(FsStore::open_with(&dir.0, 0).unwrap())
}

fn s3_store(staging: &Scratch) -> Store {
    let url = std::env::var("CUSTOS_TEST_S3_URL")
        .expect("CUSTOS_TEST_S3_URL is not set: run scripts/test, which starts SeaweedFS");
    // A prefix per case keeps cases apart in the one test bucket.
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let url = format!("{base}/case-{}?{query}", uuid::Uuid::new_v4().simple());
    Arc::new(S3Store::open(&url, None, staging.0.clone()).unwrap())
}

macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread")]
                async fn filesystem() {
                    let dir = super::scratch("fs");
                    super::$case(super::fs_store(&dir)).await
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn filesystem_files() {
                    let dir = super::scratch("fs");
                    super::$case(super::fs_files_store(&dir)).await
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn s3() {
                    let dir = super::scratch("s3-staging");
                    super::$case(super::s3_store(&dir)).await
                }
            }
        )*
    };
}

on_both_stores!(
    stage_commit_read_delete,
    large_blobs_stream,
    abandoned_blobs_leave_nothing,
    hostile_keys_are_refused,
    list_names_committed_blobs,
    a_prefix_is_the_first_bytes
);

async fn read_all(store: &Store, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    store
        .open(key)
        .await
        .unwrap()
        .read_to_end(&mut bytes)
        .await
        .unwrap();
    bytes
}

/// `read_prefix` gives a blob's first bytes (all of it when shorter), as
/// metadata reads a header without the pixel data behind it; a deleted
/// blob is not found.
async fn a_prefix_is_the_first_bytes(store: Store) {
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut blob = store.stage().await.unwrap();
    blob.write(&bytes).await.unwrap();
    let key = store.commit(blob).await.unwrap();
    assert_eq!(
        &store.read_prefix(&key, 65_536).await.unwrap()[..],
        &bytes[..65_536]
    );
    assert_eq!(
        &store.read_prefix(&key, 1 << 20).await.unwrap()[..],
        &bytes[..]
    );
    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.read_prefix(&key, 65_536).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn stage_commit_read_delete(store: Store) {
    let mut blob = store.stage().await.unwrap();
    blob.write(b"hello ").await.unwrap();
    blob.write(b"world").await.unwrap();
    assert_eq!(blob.size(), 11);
    assert_eq!(
        blob.sha256_hex(),
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    let key = store.commit(blob).await.unwrap();
    assert_eq!(read_all(&store, &key).await, b"hello world");
    assert_eq!(&store.read(&key).await.unwrap()[..], b"hello world");
    store.delete(&key).await.unwrap();
    assert!(matches!(
        store.open(&key).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.read(&key).await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete(&key).await.unwrap(); // deleting twice is fine
}

async fn large_blobs_stream(store: Store) {
    // 40 MiB: above the single-PUT limit of the S3 store (multipart upload).
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut blob = store.stage().await.unwrap();
    for _ in 0..40 {
        blob.write(&chunk).await.unwrap();
    }
    let key = store.commit(blob).await.unwrap();
    let back = read_all(&store, &key).await;
    assert_eq!(back.len(), 40 << 20);
    assert!(back.chunks(1 << 20).all(|c| c == chunk.as_slice()));
    assert_eq!(&store.read(&key).await.unwrap()[..], &back[..]);
}

async fn abandoned_blobs_leave_nothing(store: Store) {
    let mut blob = store.stage().await.unwrap();
    blob.write(b"partial").await.unwrap();
    drop(blob);
    let mut blob = store.stage().await.unwrap();
    blob.write(b"kept").await.unwrap();
    let key = store.commit(blob).await.unwrap();
    assert_eq!(read_all(&store, &key).await, b"kept");
}

async fn hostile_keys_are_refused(store: Store) {
    for key in [
        "../../etc/passwd",
        "ABCDEF",
        "",
        "0123456789abcdef0123456789abcde/",
    ] {
        assert!(
            matches!(store.open(key).await, Err(StoreError::BadKey(_))),
            "{key}"
        );
        assert!(
            matches!(store.read(key).await, Err(StoreError::BadKey(_))),
            "{key}"
        );
        assert!(
            matches!(store.delete(key).await, Err(StoreError::BadKey(_))),
            "{key}"
        );
    }
}

async fn listed_keys(store: &Store) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

async fn list_names_committed_blobs(store: Store) {
    let mut keys = Vec::new();
    for i in 0..3u8 {
        let mut blob = store.stage().await.unwrap();
        blob.write(&[i; 10]).await.unwrap();
        keys.push(store.commit(blob).await.unwrap());
    }
    let staged = store.stage().await.unwrap(); // in flight: not listed
    keys.sort();
    assert_eq!(listed_keys(&store).await, keys);
    drop(staged);
    store.delete(&keys[0]).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);
}

/// Blobs packed by an earlier process are read, listed and deleted by the
/// next one, which appends to a segment of its own.
#[tokio::test(flavor = "multi_thread")]
async fn packed_blobs_outlive_the_process_that_wrote_them() {
    let scratch = scratch("reopen");
    let root = scratch.0.clone();
    let first: Store = Arc::new(FsStore::open(&root).unwrap());
    let mut keys = Vec::new();
    for i in 0..3u8 {
        let mut blob = first.stage().await.unwrap();
        blob.write(&[i; 5000]).await.unwrap();
        keys.push(first.commit(blob).await.unwrap());
    }
    drop(first);
    let second: Store = Arc::new(FsStore::open(&root).unwrap());
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(read_all(&second, key).await, vec![i as u8; 5000]);
        assert_eq!(second.read(key).await.unwrap(), vec![i as u8; 5000]);
    }
    let mut blob = second.stage().await.unwrap();
    blob.write(b"new").await.unwrap();
    let new = second.commit(blob).await.unwrap();
    assert_ne!(new[1..17], keys[0][1..17], "a new segment per process");
    second.delete(&keys[1]).await.unwrap();
    let mut expected = vec![keys[0].clone(), keys[2].clone(), new];
    expected.sort();
    assert_eq!(listed_keys(&second).await, expected);
}

/// A blob held in memory is lent to a blocking thread and put back whole:
/// it commits and reads back unchanged, whether written as slices (a file
/// meta header, STOW-RS chunks) or as buffers taken over (P-DATA values).
#[tokio::test(flavor = "multi_thread")]
async fn held_bytes_are_lent_off_thread_and_kept() {
    use sha2::Digest;
    use std::io::Read;
    let (dir, files_dir) = (scratch("fs"), scratch("fs"));
    let store = fs_store(&dir);
    let mut blob = store.stage().await.unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
    blob.write(&bytes[..100]).await.unwrap();
    blob.write(&bytes[100..200]).await.unwrap();
    blob.write_owned(bytes[200..60_000].to_vec()).await.unwrap();
    blob.write_owned(bytes[60_000..60_010].to_vec())
        .await
        .unwrap();
    blob.write(&bytes[60_010..]).await.unwrap();
    let seen = blob
        .with_held_off_thread(|h| {
            let mut all = Vec::new();
            h.reader().read_to_end(&mut all).map(|_| (h.len(), all))
        })
        .await;
    assert_eq!(seen.unwrap().unwrap().unwrap(), (100_000, bytes.clone()));
    assert_eq!(blob.held().map(|h| h.len()), Some(100_000));
    assert_eq!(blob.sha256_hex(), hex::encode(sha2::Sha256::digest(&bytes)));
    let key = store.commit(blob).await.unwrap();
    assert_eq!(store.read(&key).await.unwrap(), bytes);
    // A blob in a file has no bytes to lend, however written.
    let files = fs_files_store(&files_dir);
    let mut blob = files.stage().await.unwrap();
    blob.write(b"on disk").await.unwrap();
    blob.write_owned(b" too".to_vec()).await.unwrap();
    assert!(blob.with_held_off_thread(|h| h.len()).await.is_none());
    let key = files.commit(blob).await.unwrap();
    assert_eq!(files.read(&key).await.unwrap(), &b"on disk too"[..]);
}

/// Opening a store (every CLI command does, beside the serving node; so does
/// another node on a shared folder) leaves the stores in flight alone, and
/// removes what a dead process left: a staging folder whose lock nobody
/// holds.
async fn opening_again_spares_blobs_in_flight(
    first: Store,
    open_again: impl Fn() -> Store,
    staging: std::path::PathBuf,
) {
    let mut blob = first.stage().await.unwrap();
    let part = vec![5u8; 3 << 20];
    blob.write(&part).await.unwrap();
    // A crashed process's folder: its lock file claimed, no longer locked.
    let dead = staging.join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".lock"), "4242\n").unwrap();
    std::fs::write(
        dead.join("fedcba9876543210fedcba9876543210"),
        b"never acknowledged",
    )
    .unwrap();
    let second = open_again();
    assert!(!dead.exists(), "a dead process's staging folder was kept");
    blob.write(&part).await.unwrap();
    let key = first
        .commit(blob)
        .await
        .expect("the blob in flight was lost");
    assert_eq!(read_all(&first, &key).await.len(), part.len() * 2);
    // The second store's own folder is not taken for a dead one by a third.
    let mut other = second.stage().await.unwrap();
    other.write(&part).await.unwrap();
    let _third = open_again();
    other.write(&part).await.unwrap();
    let key = second
        .commit(other)
        .await
        .expect("the second store's blob was lost");
    assert_eq!(read_all(&second, &key).await.len(), part.len() * 2);
}
#[tokio::test(flavor = "multi_thread")]
async fn opening_again_spares_blobs_in_flight_filesystem() {
    let scratch = scratch("fs");
    let dir = scratch.0.clone();
    let store: Store = Arc::new(FsStore::open_with(&dir, 0).unwrap());
    let again = || Arc::new(FsStore::open_with(&dir, 0).unwrap()) as Store;
    opening_again_spares_blobs_in_flight(store, again, dir.join(".staging")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_again_spares_blobs_in_flight_s3() {
    let url = std::env::var("CUSTOS_TEST_S3_URL")
        .expect("CUSTOS_TEST_S3_URL is not set: run scripts/test, which starts SeaweedFS");
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let url = format!("{base}/case-{}?{query}", uuid::Uuid::new_v4().simple());
    let scratch = scratch("s3-staging");
    let staging = scratch.0.clone();
    let open = || Arc::new(S3Store::open(&url, None, staging.clone()).unwrap()) as Store;
    opening_again_spares_blobs_in_flight(open(), open, staging.clone()).await;
}
