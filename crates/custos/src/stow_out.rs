//! Forwarding by STOW-RS to a `[[dicomweb_destination]]`: instances go as
//! stored (Part 10 files) in `multipart/related; type="application/dicom"`
//! POSTs to `{url}/studies`, streamed from the store (a request holds one
//! read block in memory, not the study), a bounded number per request. The
//! response's Referenced and Failed SOP Sequences say which arrived.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use custos_archive::Archive;
use custos_archive::routing::Failure;
use custos_core::record::StoredInstance;
use custos_core::routing::WebDestination;

/// Instances per request, and bytes (a single larger instance goes alone).
const MAX_PER_REQUEST: usize = 64;
const MAX_BYTES_PER_REQUEST: u64 = 256 << 20;

/// A configured DICOMweb destination, ready to send to.
pub struct StowClient {
    studies_url: String,
    client: reqwest::Client,
    authorization: Option<HeaderValue>,
}

impl StowClient {
    /// Reads the destination's credentials and trust roots now, so a
    /// missing file stops the server at start instead of every send.
    pub fn new(d: &WebDestination) -> Result<StowClient> {
        d.check().map_err(anyhow::Error::msg)?;
        let read = |path: &str| -> Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("dicomweb destination `{}`: reading {path}", d.name))?;
            Ok(text.trim_end_matches(['\r', '\n']).to_string())
        };
        let authorization = if !d.username.is_empty() {
            use base64::Engine;
            let pair = format!("{}:{}", d.username, read(&d.password_file)?);
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            Some(format!("Basic {b64}"))
        } else if !d.token_file.is_empty() {
            Some(format!("Bearer {}", read(&d.token_file)?))
        } else {
            None
        };
        let authorization = authorization
            .map(|a| {
                let mut v = HeaderValue::from_str(&a).with_context(|| {
                    format!(
                        "dicomweb destination `{}`: credentials are not header-safe",
                        d.name
                    )
                })?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(Duration::from_secs(10))
            // A slow destination fails the attempt; it is retried later.
            .read_timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none());
        if !d.ca_file.is_empty() {
            let pem = std::fs::read(&d.ca_file).with_context(|| {
                format!("dicomweb destination `{}`: reading {}", d.name, d.ca_file)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "dicomweb destination `{}`: {} is not PEM",
                    d.name, d.ca_file
                )
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        Ok(StowClient {
            studies_url: format!("{}/studies", d.url.trim_end_matches('/')),
            client: builder.build()?,
            authorization,
        })
    }

    /// Sends `instances`: an outcome per instance, in order.
    pub async fn send(
        &self,
        archive: &Arc<Archive>,
        instances: &[StoredInstance],
    ) -> Vec<Result<(), Failure>> {
        let mut out = Vec::with_capacity(instances.len());
        let mut rest = instances;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len()
                && n < MAX_PER_REQUEST
                && (n == 0 || bytes + rest[n].size <= MAX_BYTES_PER_REQUEST)
            {
                bytes += rest[n].size;
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            out.extend(self.post(archive, batch).await);
            rest = tail;
        }
        out
    }

    async fn post(
        &self,
        archive: &Arc<Archive>,
        batch: &[StoredInstance],
    ) -> Vec<Result<(), Failure>> {
        let all = |why: String| {
            batch
                .iter()
                .map(|_| Err(Failure::Transient(why.clone())))
                .collect()
        };
        let boundary = format!("custos-{}", custos_core::credentials::random_text(24));
        let body = multipart_body(archive.clone(), batch.to_vec(), boundary.clone());
        let mut request = self
            .client
            .post(&self.studies_url)
            .header(
                CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("Accept", "application/dicom+json")
            .body(body);
        if let Some(a) = &self.authorization {
            request = request.header(AUTHORIZATION, a.clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            // Without the URL, which may carry a token (logged, and shown
            // on the jobs page).
            Err(e) => {
                return all(format!(
                    "STOW-RS request failed: {}",
                    error_chain(&e.without_url())
                ));
            }
        };
        let status = response.status();
        let text = bounded_body(response).await;
        let answer: Option<Value> = serde_json::from_slice(&text).ok();
        outcomes(status, answer.as_ref(), batch)
    }
}

/// Each instance's outcome from a STOW-RS answer. Sent only when a success
/// status comes with the instance named in the answer's Referenced SOP
/// Sequence: a 2xx alone (a proxy's page, a body cut short, a 202 whose
/// failures cannot be read) once marked every instance sent, never to be
/// sent again.
fn outcomes(
    status: reqwest::StatusCode,
    answer: Option<&Value>,
    batch: &[StoredInstance],
) -> Vec<Result<(), Failure>> {
    // Some servers wrap the answer's data set in an array.
    let answer = answer.map(|a| match a.as_array().map(Vec::as_slice) {
        Some([one]) => one,
        _ => a,
    });
    let failed = answer.map(failed_uids).unwrap_or_default();
    let stored = answer.map(stored_uids).unwrap_or_default();
    batch
        .iter()
        .map(|inst| {
            let uid = &inst.sop_instance_uid;
            if let Some((_, reason)) = failed.iter().find(|(f, _)| f == uid) {
                return Err(Failure::Transient(format!(
                    "the destination refused it (HTTP {status}, failure reason {reason})"
                )));
            }
            if !status.is_success() {
                return Err(Failure::Transient(format!(
                    "the destination answered HTTP {status}"
                )));
            }
            if stored.contains(uid) {
                Ok(())
            } else if answer.is_none() {
                Err(Failure::Transient(format!(
                    "the destination answered HTTP {status} without a STOW-RS answer it could be told from"
                )))
            } else {
                Err(Failure::Transient(format!(
                    "the destination answered HTTP {status} without naming it as stored"
                )))
            }
        })
        .collect()
}

/// The request body: each instance's stored file as one part, read from
/// the store in blocks by a task feeding a small channel.
fn multipart_body(
    archive: Arc<Archive>,
    instances: Vec<StoredInstance>,
    boundary: String,
) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::spawn(async move {
        for inst in &instances {
            let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            let mut reader = match archive.open_file(inst).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            loop {
                let mut block = bytes::BytesMut::with_capacity(256 << 10);
                match reader.read_buf(&mut block).await {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(block.freeze())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(Ok(Bytes::from(format!("--{boundary}--\r\n"))))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(stream)
}

/// A response body up to `MAX_RESPONSE` bytes (a STOW-RS answer names each
/// instance sent: well under that); a longer one is cut, and then not read
/// as JSON.
async fn bounded_body(mut response: reqwest::Response) -> Vec<u8> {
    const MAX_RESPONSE: usize = 16 << 20;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Vec::new();
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// SOP Instance UIDs in a STOW-RS response's Failed SOP Sequence
/// (0008,1198), with their Failure Reason (0008,1197).
fn failed_uids(answer: &Value) -> Vec<(String, u64)> {
    let items = answer["00081198"]["Value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            let uid = item["00081155"]["Value"][0].as_str()?.to_string();
            let reason = item["00081197"]["Value"][0].as_u64().unwrap_or(0x0110);
            Some((uid, reason))
        })
        .collect()
}

/// SOP Instance UIDs in a STOW-RS response's Referenced SOP Sequence
/// (0008,1199): what the destination says it stored.
fn stored_uids(answer: &Value) -> Vec<String> {
    answer["00081199"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["00081155"]["Value"][0].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An error with its causes (reqwest's own message hides the reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_instances_are_read_from_the_response() {
        let answer = serde_json::json!({
            "00081198": {"vr": "SQ", "Value": [
                {"00081150": {"vr": "UI", "Value": ["1.2"]},
                 "00081155": {"vr": "UI", "Value": ["1.2.3"]},
                 "00081197": {"vr": "US", "Value": [49442]}}
            ]},
            "00081199": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2.4"]}}
            ]}
        });
        assert_eq!(failed_uids(&answer), vec![("1.2.3".to_string(), 49442)]);
        assert!(failed_uids(&serde_json::json!({})).is_empty());
        assert_eq!(stored_uids(&answer), vec!["1.2.4".to_string()]);
    }

    #[test]
    fn only_instances_the_answer_names_as_stored_are_sent() {
        use reqwest::StatusCode;
        let inst = |uid: &str| StoredInstance {
            sop_instance_uid: uid.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
        };
        let batch = [inst("1.2.3"), inst("1.2.4")];
        let answer = serde_json::json!({
            "00081198": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2.3"]},
                 "00081197": {"vr": "US", "Value": [49442]}}
            ]},
            "00081199": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2.4"]}}
            ]}
        });
        let sent = |status, answer: Option<&Value>| -> Vec<bool> {
            outcomes(status, answer, &batch)
                .iter()
                .map(Result::is_ok)
                .collect()
        };
        assert_eq!(sent(StatusCode::ACCEPTED, Some(&answer)), [false, true]);
        // A success status whose answer names nothing (cut short, not JSON,
        // a proxy's page), or a 204: nothing counts as sent.
        assert_eq!(sent(StatusCode::OK, None), [false, false]);
        assert_eq!(
            sent(StatusCode::OK, Some(&serde_json::json!({}))),
            [false, false]
        );
        assert_eq!(sent(StatusCode::NO_CONTENT, None), [false, false]);
        assert_eq!(sent(StatusCode::CONFLICT, Some(&answer)), [false, false]);
        let all = serde_json::json!({"00081199": {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.2.3"]}},
            {"00081155": {"vr": "UI", "Value": ["1.2.4"]}}
        ]}});
        assert_eq!(sent(StatusCode::OK, Some(&all)), [true, true]);
        let wrapped = serde_json::json!([all]);
        assert_eq!(sent(StatusCode::OK, Some(&wrapped)), [true, true]);
    }
}
