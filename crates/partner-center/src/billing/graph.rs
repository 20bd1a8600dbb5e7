//! E29: the billed (and unbilled) reconciliation export through Microsoft Graph: start an
//! export, poll its operation, read the manifest, download each file (gzip'd JSON Lines) with
//! its SAS, streamed line by line.
//!
//! Decisions (addendum 42-45): the operation's kind is read from `@odata.type`, `completed` and
//! `succeeded` both mean done; `resourceLocation` may be a link or the manifest itself;
//! `dataFormat` is not trusted, gzip is detected by its magic bytes; a file is read within
//! `max_blob_bytes` decompressed; a blob host is sent no token (the SAS authorises the GET),
//! and only over https or to loopback.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::{local_error, Period};
use crate::auth::GrantKind;
use crate::client::{Call, CallMeta, Client, Reply};
use crate::error::{Error, ErrorClass};
use crate::ids::{CorrelationId, RequestId};

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExportRequest {
    /// E29.1: one invoice's billed lines.
    Billed { invoice_id: String },
    /// E29.5: lines not yet invoiced.
    Unbilled { currency: String, period: Period },
}

/// Where an export stands (E29.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOperation {
    /// Not ready; ask again after `retry_after` when the service said.
    Running { retry_after: Option<Duration> },
    /// Done: the manifest's URL (or the manifest itself, as Microsoft's sample reads it).
    Succeeded { manifest: ManifestRef },
    /// The export failed (`5000 No data available` for an invoice without v2 data).
    Failed { code: String, message: String },
}

/// `resourceLocation`: a link to the manifest, or the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Link(String),
    Embedded(Box<Manifest>),
}

/// E29.3.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Manifest {
    pub id: String,
    pub schema_version: Option<String>,
    pub data_format: Option<String>,
    pub e_tag: Option<String>,
    pub partner_tenant_id: Option<String>,
    pub root_directory: String,
    /// A secret for the blobs' lifetime: never printed (`Debug` redacts it), never stored.
    #[serde(skip_serializing)]
    pub sas_token: String,
    pub blob_count: Option<u64>,
    pub blobs: Vec<ManifestBlob>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.id)
            .field("e_tag", &self.e_tag)
            .field("root_directory", &self.root_directory)
            .field("sas_token", &"***")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

impl crate::models::Checked for Manifest {
    fn missing(&self) -> Option<String> {
        self.root_directory
            .trim()
            .is_empty()
            .then(|| "the manifest has no rootDirectory".to_owned())
    }
}

/// One file of an export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManifestBlob {
    pub name: String,
    pub partition_value: Option<String>,
}

/// What reading one file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobRead {
    /// Lines handed to the sink.
    pub lines: u64,
    /// Why the file ended early (truncated gzip, a connection lost, over the size limit); the
    /// lines before it were handed over.
    pub cut_short: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OperationBody {
    #[serde(rename = "@odata.type")]
    odata_type: Option<String>,
    status: Option<String>,
    #[serde(rename = "resourceLocation@odata.navigationLink")]
    navigation_link: Option<String>,
    #[serde(rename = "resourceLocation")]
    resource_location: Option<Value>,
    error: Option<GraphError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GraphError {
    #[serde(deserialize_with = "crate::models::lenient::de::opt_string_or_number")]
    code: Option<String>,
    message: Option<String>,
}

impl crate::models::Checked for OperationBody {
    fn missing(&self) -> Option<String> {
        (self.odata_type.is_none() && self.status.is_none())
            .then(|| "the operation has neither @odata.type nor status".to_owned())
    }
}

const EXPORT_PATH: &str = "reports/partners/billing/reconciliation";

impl Client {
    /// E29.1/E29.5: starts an export; returns the operation's URL (`Location` of the 202).
    /// Always `attributeSet = full` (ambiguity 43).
    pub async fn start_export(
        &self,
        correlation_id: CorrelationId,
        request: &ExportRequest,
    ) -> Result<Reply<String>, Error> {
        let (path, body) = match request {
            ExportRequest::Billed { invoice_id } => (
                format!("{EXPORT_PATH}/billed/export"),
                serde_json::json!({"invoiceId": invoice_id, "attributeSet": "full"}),
            ),
            ExportRequest::Unbilled { currency, period } => (
                format!("{EXPORT_PATH}/unbilled/export"),
                serde_json::json!({"currencyCode": currency, "billingPeriod": period.graph(), "attributeSet": "full"}),
            ),
        };
        let started = Instant::now();
        let call = Call::read_post(path, crate::client::to_body(&body)?, correlation_id).on_graph();
        let raw = self.execute(call).await?;
        let meta = crate::client::meta(&raw, started);
        match raw.location.clone() {
            Some(location) if !location.trim().is_empty() => Ok(Reply {
                value: location,
                meta,
            }),
            _ => Err(Error::new(
                ErrorClass::Transient,
                format!("HTTP {} without the operation's Location", raw.status),
                raw.context.clone(),
            )),
        }
    }

    /// E29.2: where an export stands.
    pub async fn export_operation(
        &self,
        correlation_id: CorrelationId,
        operation_url: &str,
    ) -> Result<Reply<ExportOperation>, Error> {
        let started = Instant::now();
        let call =
            Call::read(operation_url.to_owned(), correlation_id, GrantKind::AppOnly).on_graph();
        let raw = self.execute(call).await?;
        let body: OperationBody = crate::client::read_body(crate::error::Effect::ReadOnly, &raw)?;
        let kind = body
            .odata_type
            .as_deref()
            .unwrap_or("")
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let status = body.status.as_deref().unwrap_or("").to_ascii_lowercase();
        let value = if kind == "failedoperation" || status == "failed" {
            let error = body.error.unwrap_or_default();
            ExportOperation::Failed {
                code: error.code.unwrap_or_default(),
                message: error.message.unwrap_or_default(),
            }
        } else if kind == "exportsuccessoperation" || status == "succeeded" || status == "completed"
        {
            let embedded = body
                .resource_location
                .filter(Value::is_object)
                .and_then(|v| serde_json::from_value::<Manifest>(v).ok())
                .filter(|m| !m.root_directory.is_empty());
            match (embedded, body.navigation_link) {
                (Some(manifest), _) => ExportOperation::Succeeded {
                    manifest: ManifestRef::Embedded(Box::new(manifest)),
                },
                (None, Some(link)) => ExportOperation::Succeeded {
                    manifest: ManifestRef::Link(link),
                },
                (None, None) => {
                    return Err(Error::new(
                        ErrorClass::Transient,
                        "the export succeeded but names no manifest".to_owned(),
                        raw.context.clone(),
                    ))
                }
            }
        } else {
            ExportOperation::Running {
                retry_after: raw.retry_after,
            }
        };
        Ok(Reply {
            value,
            meta: crate::client::meta(&raw, started),
        })
    }

    /// E29.3: the manifest of a finished export.
    pub async fn export_manifest(
        &self,
        correlation_id: CorrelationId,
        manifest_url: &str,
    ) -> Result<Reply<Manifest>, Error> {
        let call =
            Call::read(manifest_url.to_owned(), correlation_id, GrantKind::AppOnly).on_graph();
        self.json(call).await
    }

    /// E29.4: downloads file `index` of a manifest and hands each line to `sink` as JSON (or
    /// the reason it is not JSON), without holding the file in memory. A file that ends early
    /// returns what was read with `cut_short`; a refused download (an expired SAS: 403, a
    /// missing file: 404) is `NotFound`: get the manifest again.
    pub async fn read_export_file(
        &self,
        manifest: &Manifest,
        index: usize,
        mut sink: impl FnMut(Result<Value, String>) + Send,
    ) -> Result<Reply<BlobRead>, Error> {
        let started = Instant::now();
        let Some(blob) = manifest.blobs.get(index) else {
            return Err(Error::config(format!(
                "the manifest has {} files; there is no file {index}",
                manifest.blobs.len()
            )));
        };
        let directory = manifest.root_directory.trim_end_matches('/');
        let path = format!("{directory}/{}", blob.name.trim_start_matches('/'));
        crate::endpoint::checked_url("an export file's URL", &path)
            .map_err(|e| local_error(ErrorClass::Config, e, &blob.name))?;
        let url = format!("{path}?{}", manifest.sas_token.trim_start_matches('?'));
        let response = self
            .http()
            .get(&url)
            .header("x-ms-version", "2021-08-06")
            .send()
            .await
            .map_err(|e| {
                local_error(
                    ErrorClass::Transient,
                    format!(
                        "export file unreachable: {}",
                        crate::client::describe_reqwest(&e)
                    ),
                    &blob.name,
                )
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let class = match status {
                403 | 404 => ErrorClass::NotFound,
                _ => ErrorClass::Transient,
            };
            return Err(local_error(
                class,
                format!("the export file answered HTTP {status}"),
                &blob.name,
            ));
        }
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        let mut reader = tokio_util::io::StreamReader::new(stream);
        let gzip = reader
            .fill_buf()
            .await
            .map(|head| head.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        let limit = self.config().max_blob_bytes;
        let read = if gzip {
            let decoder = async_compression::tokio::bufread::GzipDecoder::new(reader);
            read_lines(
                tokio::io::BufReader::new(decoder.take(limit + 1)),
                limit,
                &mut sink,
            )
            .await
        } else {
            read_lines(
                tokio::io::BufReader::new(reader.take(limit + 1)),
                limit,
                &mut sink,
            )
            .await
        };
        Ok(Reply {
            value: read,
            meta: CallMeta {
                status,
                latency: started.elapsed(),
                request_id: RequestId::new(),
                correlation_id: CorrelationId::new(),
                location: None,
                http_requests: 1,
            },
        })
    }
}

async fn read_lines(
    mut reader: impl AsyncBufRead + Unpin,
    limit: u64,
    sink: &mut (impl FnMut(Result<Value, String>) + Send),
) -> BlobRead {
    let mut read = BlobRead::default();
    let mut total: u64 = 0;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) => return read,
            Ok(n) => {
                total += n as u64;
                if total > limit {
                    read.cut_short = Some(format!(
                        "the file is larger than {limit} bytes decompressed; the rest was not read"
                    ));
                    return read;
                }
                if !buffer.ends_with(b"\n") {
                    // The last line of a file may lack its newline; a cut file's last line is
                    // caught by the decoder's error on the next read, or by the JSON below.
                }
                let text = String::from_utf8_lossy(&buffer);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                read.lines += 1;
                sink(serde_json::from_str::<Value>(text).map_err(|e| {
                    let mut shown: String = text.chars().take(500).collect();
                    if shown.len() < text.len() {
                        shown.push('…');
                    }
                    format!("not JSON ({e}): {shown}")
                }));
            }
            Err(e) => {
                read.cut_short = Some(format!("the file ends early: {e}"));
                return read;
            }
        }
    }
}
