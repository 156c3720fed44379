//! S3 Object Lock (`lock_days` on an S3 remote): every object of a pushed
//! generation is put under retention in compliance mode, so that nobody —
//! this machine's own credentials included — can delete or overwrite its
//! stored version before the date. A compromised machine can still hide
//! a generation behind a delete marker; the locked versions stay, and
//! `--as-of` reads the store as it was.
//!
//! The bucket must have Object Lock (S3 turns it on only when a bucket is
//! made, and with it versioning). OpenDAL has no call for retention:
//! these are the S3 requests it takes, path-style, signed by reqsign (the
//! signer OpenDAL itself uses), their answers read by quick-xml.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use md5::Digest;
use serde::Deserialize;

use crate::error::{refuse, Refusal};

/// Characters left as they are in a key's path (S3's own set, and '/').
const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// One bucket, for the requests OpenDAL does not make.
pub struct Bucket {
    /// `ENDPOINT/BUCKET`
    base: String,
    /// The URL's prefix, with a trailing '/' (or empty).
    root: String,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
    client: reqwest::Client,
}

/// An S3 error answer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Error {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockConfiguration {
    #[serde(default)]
    object_lock_enabled: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Retention {
    #[serde(default)]
    mode: String,
    retain_until_date: String,
}

impl Bucket {
    pub fn new(endpoint: &str, region: &str, bucket: &str, prefix: &str, id: &str, secret: &str) -> anyhow::Result<Bucket> {
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            reqsign_aws_v4::StaticCredentialProvider::new(id, secret),
            reqsign_aws_v4::RequestSigner::new("s3", region),
        );
        let root = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().context("an HTTP client for the store")?;
        Ok(Bucket { base: format!("{}/{bucket}", endpoint.trim_end_matches('/')), root, signer, client })
    }

    /// One signed request: `key` under the prefix (`None`: the bucket),
    /// `query` as S3 names the call. Returns the status and the body.
    async fn send(&self, method: http::Method, key: Option<&str>, query: &str, body: Vec<u8>) -> anyhow::Result<(http::StatusCode, String)> {
        let path = match key {
            Some(k) => format!("/{}", percent_encoding::utf8_percent_encode(&format!("{}{k}", self.root), KEY)),
            None => String::new(),
        };
        let url = format!("{}{path}?{query}", self.base);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-amz-content-sha256", crate::output::hex(&sha2::Sha256::digest(&body)))
            .body(())
            .context("an S3 request")?;
        if !body.is_empty() {
            let h = req.headers_mut();
            h.insert("content-md5", base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body)).parse()?);
            h.insert("content-type", http::HeaderValue::from_static("application/xml"));
        }
        let (mut parts, ()) = req.into_parts();
        self.signer.sign(&mut parts, None).await.map_err(|e| anyhow::anyhow!("signing the request: {e}"))?;
        let unreachable = |e: reqwest::Error| refuse(Refusal::RemoteUnreachable, format!("{e}; check the network and that the store is up"));
        let answer = self.client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await.map_err(unreachable)?;
        let status = answer.status();
        Ok((status, answer.text().await.map_err(unreachable)?))
    }

    /// Whether the bucket has Object Lock on.
    pub async fn enabled(&self) -> anyhow::Result<bool> {
        let (status, body) = self.send(http::Method::GET, None, "object-lock=", Vec::new()).await?;
        if status.is_success() {
            let c: LockConfiguration = quick_xml::de::from_str(&body).context("the bucket's Object Lock configuration does not read")?;
            return Ok(c.object_lock_enabled == "Enabled");
        }
        match error(&body) {
            Some(e) if status == http::StatusCode::NOT_FOUND && e.code.contains("ObjectLockConfiguration") => Ok(false),
            e => Err(failed(status, e, "asking for the bucket's Object Lock")),
        }
    }

    /// Puts the current version of `key` under compliance-mode retention
    /// until `until` (`2026-12-31T00:00:00Z`). The store refuses a date
    /// earlier than one it has.
    pub async fn lock(&self, key: &str, until: &str) -> anyhow::Result<()> {
        let body = format!(
            r#"<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>COMPLIANCE</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"#
        );
        let (status, answer) = self.send(http::Method::PUT, Some(key), "retention=", body.into_bytes()).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(failed(status, error(&answer), &format!("locking {key}")))
    }

    /// Until when the current version of `key` is locked: `None` when it
    /// has no retention.
    pub async fn locked_until(&self, key: &str) -> anyhow::Result<Option<String>> {
        let (status, body) = self.send(http::Method::GET, Some(key), "retention=", Vec::new()).await?;
        if status.is_success() {
            let r: Retention = quick_xml::de::from_str(&body).with_context(|| format!("the retention of {key} does not read"))?;
            if !r.mode.eq_ignore_ascii_case("COMPLIANCE") && !r.mode.eq_ignore_ascii_case("GOVERNANCE") {
                anyhow::bail!("the retention of {key} has the mode {:?}", r.mode);
            }
            return Ok(Some(r.retain_until_date));
        }
        match error(&body) {
            // AWS says NoSuchObjectLockConfiguration, SeaweedFS ObjectLockConfigurationNotFoundError.
            Some(e) if status == http::StatusCode::NOT_FOUND && e.code.contains("ObjectLockConfiguration") => Ok(None),
            e => Err(failed(status, e, &format!("asking for the retention of {key}"))),
        }
    }
}

fn error(body: &str) -> Option<S3Error> {
    quick_xml::de::from_str(body).ok()
}

/// The store's refusal: `remote-denied` when it refused the credentials or
/// the request (a locked version), else `remote-failing`.
fn failed(status: http::StatusCode, e: Option<S3Error>, what: &str) -> anyhow::Error {
    let kind = if status == http::StatusCode::FORBIDDEN { Refusal::RemoteDenied } else { Refusal::RemoteFailing };
    match e {
        Some(e) => refuse(kind, format!("{what}: the store answered {status}, {}: {}", e.code, e.message)),
        None => refuse(kind, format!("{what}: the store answered {status}")),
    }
}

/// A store's date (`2026-12-07T12:59:43Z`, or with milliseconds as AWS
/// writes it) as seconds since 1970.
pub fn parse_date(s: &str) -> Option<i64> {
    let whole = match s.split_once('.') {
        Some((head, tail)) if tail.ends_with('Z') && tail[..tail.len() - 1].bytes().all(|b| b.is_ascii_digit()) => format!("{head}Z"),
        _ => s.to_string(),
    };
    crate::output::parse_time(&whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_s_answers_read() {
        let r: Retention = quick_xml::de::from_str(
            r#"<?xml version="1.0" encoding="UTF-8"?><Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>COMPLIANCE</Mode><RetainUntilDate>2026-12-07T12:59:43Z</RetainUntilDate></Retention>"#,
        )
        .unwrap();
        assert_eq!((r.mode.as_str(), r.retain_until_date.as_str()), ("COMPLIANCE", "2026-12-07T12:59:43Z"));
        let c: LockConfiguration = quick_xml::de::from_str(
            r#"<ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"#,
        )
        .unwrap();
        assert_eq!(c.object_lock_enabled, "Enabled");
        let e = error("<Error><Code>AccessDenied</Code><Message>Access Denied.</Message><Key>m/a</Key></Error>").unwrap();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("AccessDenied", "Access Denied."));
        assert_eq!(parse_date("2026-12-07T12:59:43.000Z"), parse_date("2026-12-07T12:59:43Z"));
        assert!(parse_date("2026-12-07T12:59:43").is_none());
        assert_eq!(percent_encoding::utf8_percent_encode("m/g 1/a+b", KEY).to_string(), "m/g%201/a%2Bb");
    }
}
