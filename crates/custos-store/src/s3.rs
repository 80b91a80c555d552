//! The S3 store (any S3-compatible service) for scale-out: nodes share blobs
//! without sharing a filesystem. Blobs are staged locally, then uploaded in
//! one PUT (or a multipart upload when large); a successful PUT is the store's
//! durability promise. Keys are `PREFIX/abc/<key>` like the filesystem layout.
//!
//! URL: `s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1`.
//! Plain-HTTP endpoints are refused unless on loopback or the URL says
//! `allow_http=true`. Credentials come from the arguments (configuration) or
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; they are never logged.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;

use crate::{BlobStore, Reader, StagedBlob, StoreError};

/// Uploads up to this size go in one PUT; larger ones are multipart.
const SINGLE_PUT_MAX: u64 = 16 << 20;

/// Retries of a failed S3 request: a few, within 10 s, so that with the
/// service gone a store is refused (A700/503) in seconds, not after
/// object_store's default of 10 retries over up to 3 minutes.
const RETRY: object_store::RetryConfig = object_store::RetryConfig {
    backoff: object_store::BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
    },
    max_retries: 4,
    retry_timeout: Duration::from_secs(10),
};

pub struct S3Store {
    store: AmazonS3,
    prefix: String,
    /// This store's own folder under the staging folder (`crate::staging`).
    staging: crate::staging::Staging,
}

/// The parts of an `s3://` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub allow_http: bool,
}

fn is_loopback_url(endpoint: &str) -> bool {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host_port)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl S3Url {
    pub fn parse(url: &str) -> Result<S3Url, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or("an S3 store URL starts with s3://")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err("the S3 URL names no bucket".into());
        }
        let mut parsed = S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: "us-east-1".into(),
            allow_http: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("bad S3 URL parameter `{pair}`"))?;
            match k {
                "endpoint" => parsed.endpoint = Some(v.to_string()),
                "region" => parsed.region = v.to_string(),
                "allow_http" => parsed.allow_http = v == "true",
                other => return Err(format!("unknown S3 URL parameter `{other}`")),
            }
        }
        if let Some(e) = &parsed.endpoint
            && e.starts_with("http://")
            && !parsed.allow_http
        {
            if !is_loopback_url(e) {
                return Err(format!(
                    "plain-HTTP endpoint {e} refused: use https, or add allow_http=true to the URL"
                ));
            }
            parsed.allow_http = true;
        }
        Ok(parsed)
    }
}

fn s3_err(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl S3Store {
    /// Connects to the bucket of `url`; `staging` is a local folder for blobs in flight.
    pub fn open(
        url: &str,
        credentials: Option<(String, String)>,
        staging: PathBuf,
    ) -> Result<S3Store, StoreError> {
        let stage_err = |source| StoreError::Stage {
            path: staging.clone(),
            source,
        };
        let parsed = S3Url::parse(url).map_err(|e| stage_err(std::io::Error::other(e)))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_retry(RETRY)
            .with_client_options(
                object_store::ClientOptions::new().with_connect_timeout(Duration::from_secs(5)),
            )
            .with_bucket_name(&parsed.bucket)
            .with_region(&parsed.region)
            .with_allow_http(parsed.allow_http);
        if let Some(endpoint) = &parsed.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some((id, secret)) = credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| stage_err(s3_err(e)))?;
        let staging = crate::staging::prepare(&staging).map_err(stage_err)?;
        Ok(S3Store {
            store,
            prefix: parsed.prefix,
            staging,
        })
    }

    fn object(&self, key: &str) -> Result<ObjPath, StoreError> {
        crate::fs::check_key(key)?;
        let name = format!("{}/{}", &key[0..3], key);
        Ok(if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        })
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stage(&self) -> Result<StagedBlob, StoreError> {
        StagedBlob::create(&self.staging.dir).await
    }

    async fn commit(&self, staged: StagedBlob) -> Result<String, StoreError> {
        let key = crate::fs::new_key();
        let object = self.object(&key)?;
        let size = staged.size();
        let err = |source| StoreError::Commit {
            key: key.clone(),
            source,
        };
        let (file, path) = staged.into_parts().await.map_err(err)?;
        let mut file = tokio::fs::File::from_std(file);
        let result = async {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(0)).await?;
            if size <= SINGLE_PUT_MAX {
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes).await?;
                self.store
                    .put(&object, PutPayload::from(bytes))
                    .await
                    .map_err(s3_err)?;
            } else {
                let upload = self.store.put_multipart(&object).await.map_err(s3_err)?;
                // The parts sent so far would stay in the bucket, unlisted
                // (fsck cannot see them) and billed: an upload that fails,
                // or whose future is dropped (a timeout, a shutdown), is
                // abandoned.
                let mut writer =
                    AbortUnlessFinished(Some(WriteMultipart::new_with_chunk_size(upload, 8 << 20)));
                let mut buf = vec![0u8; 1 << 20];
                let sent = async {
                    loop {
                        let n = file.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        let w = writer.get()?;
                        w.write(&buf[..n]);
                        // Bound memory: at most two parts in flight.
                        w.wait_for_capacity(2).await.map_err(s3_err)?;
                    }
                }
                .await;
                // The parts still in flight are awaited while the guard
                // holds the upload, so only the final completion is
                // unguarded.
                let sent = match sent {
                    Ok(()) => writer.get()?.wait_for_capacity(0).await.map_err(s3_err),
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    writer.abort().await;
                    return Err(e);
                }
                // `finish` abandons the upload itself when it fails.
                writer.finish().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        drop(file);
        let _ = tokio::fs::remove_file(&path).await;
        result.map_err(err)?;
        Ok(key)
    }

    async fn open(&self, key: &str) -> Result<Reader, StoreError> {
        let object = self.object(key)?;
        match self.store.get(&object).await {
            Ok(result) => {
                let stream = result.into_stream().map_err(std::io::Error::other);
                Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(StoreError::NotFound { key: key.into() })
            }
            Err(e) => Err(StoreError::Read {
                key: key.into(),
                source: s3_err(e),
            }),
        }
    }

    async fn read(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        let object = self.object(key)?;
        let got = match self.store.get(&object).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        read_result(key, got)
    }

    async fn read_prefix(&self, key: &str, max: u64) -> Result<bytes::Bytes, StoreError> {
        let object = self.object(key)?;
        // A ranged GET; S3 cuts a range that runs past the object's end.
        read_result(key, self.store.get_range(&object, 0..max).await)
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let object = self.object(key)?;
        match self.store.delete(&object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Delete {
                key: key.into(),
                source: s3_err(e),
            }),
        }
    }

    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.clone()));
        let metas: Vec<object_store::ObjectMeta> =
            object_store::ObjectStore::list(&self.store, prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| StoreError::List(s3_err(e)))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.filename()?.to_string();
                crate::fs::check_key(&key).ok()?;
                Some((key, std::time::SystemTime::from(m.last_modified)))
            })
            .collect())
    }
}

/// A read's outcome, its errors named by `key`.
fn read_result(
    key: &str,
    got: Result<bytes::Bytes, object_store::Error>,
) -> Result<bytes::Bytes, StoreError> {
    match got {
        Ok(bytes) => Ok(bytes),
        Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound { key: key.into() }),
        Err(e) => Err(StoreError::Read {
            key: key.into(),
            source: s3_err(e),
        }),
    }
}

/// A multipart upload that is abandoned (its parts deleted) unless it is
/// finished, also when the future writing it is dropped half-way.
struct AbortUnlessFinished(Option<WriteMultipart>);

impl AbortUnlessFinished {
    fn get(&mut self) -> std::io::Result<&mut WriteMultipart> {
        self.0
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the upload has ended"))
    }

    async fn abort(mut self) {
        if let Some(w) = self.0.take() {
            let _ = w.abort().await;
        }
    }

    async fn finish(mut self) -> std::io::Result<()> {
        match self.0.take() {
            Some(w) => w.finish().await.map(drop).map_err(s3_err),
            None => Err(std::io::Error::other("the upload has ended")),
        }
    }
}

impl Drop for AbortUnlessFinished {
    fn drop(&mut self) {
        if let Some(w) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = w.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = S3Url::parse("s3://pacs/archive/a?endpoint=http://127.0.0.1:8333&region=eu-west-1")
            .unwrap();
        assert_eq!(u.bucket, "pacs");
        assert_eq!(u.prefix, "archive/a");
        assert_eq!(u.region, "eu-west-1");
        assert!(u.allow_http, "loopback may be plain HTTP");
        assert!(
            S3Url::parse("s3://pacs?endpoint=http://10.0.0.5:8333").is_err(),
            "remote plain HTTP refused"
        );
        assert!(S3Url::parse("s3://pacs?endpoint=http://10.0.0.5:8333&allow_http=true").is_ok());
        assert!(S3Url::parse("s3://pacs?endpoint=https://s3.example.org").is_ok());
        assert!(S3Url::parse("s3://?endpoint=x").is_err());
        assert!(S3Url::parse("file:///x").is_err());
        assert!(S3Url::parse("s3://b?colour=blue").is_err());
    }
}
