//! Images on any web server (nginx, `rimage serve`): read with range requests (`Range`, `206`),
//! several at once over kept-alive connections (one per worker), each retried with backoff on
//! a reset connection, a stall, a `5xx` or a short body, and resumed from the byte where it
//! stopped. Every request after the first carries `If-Range` with the image's validator
//! (`ETag`, else `Last-Modified`): an image replaced on the server mid-restore answers with the
//! whole new file (`200`) instead of the range, and the read stops there, so that one target is
//! never given chunks of two images. A server that ignores ranges is read as a stream.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Opened, RandomAccess};
use crate::Error;

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Attempts after the first for each request.
    pub retries: u32,
    /// Longest wait for a connection, a response or the next bytes of a body.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            retries: 5,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Bytes of the probe request: the image header.
const PROBE_LEN: u64 = 512;
/// First backoff; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether `arg` names an image by URL.
pub fn is_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// What proves a resumed request reads the same image.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Validator {
    ETag(String),
    LastModified(String),
    None,
}

impl Validator {
    fn of(resp: &ureq::http::Response<ureq::Body>) -> Self {
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // If-Range takes a strong ETag only; a weak one falls back to the date.
        match (header("etag"), header("last-modified")) {
            (Some(e), _) if !e.starts_with("W/") => Self::ETag(e),
            (_, Some(d)) => Self::LastModified(d),
            _ => Self::None,
        }
    }

    fn header(&self) -> Option<&str> {
        match self {
            Self::ETag(v) | Self::LastModified(v) => Some(v),
            Self::None => None,
        }
    }
}

/// An image read from a URL at random.
pub struct HttpImage {
    url: String,
    name: PathBuf,
    agent: ureq::Agent,
    len: u64,
    validator: Validator,
    opts: HttpOptions,
}

/// Why one attempt failed: worth another, or final.
enum Attempt {
    Retry(String),
    Fatal(String),
}

fn agent(opts: &HttpOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.timeout))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_per_read(Some(opts.timeout))
        // One connection per worker stays open between chunks.
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

fn transient(e: &ureq::Error) -> bool {
    !matches!(
        e,
        ureq::Error::BadUri(_) | ureq::Error::HostNotFound | ureq::Error::InvalidProxyUrl
    )
}

/// Opens `url`: a range request for the header tells the image's length and validator; a
/// server that answers it with the whole file is read as a stream.
///
/// # Errors
/// A URL that cannot be fetched (after retries), or an answer that is not the image.
pub fn open(url: &str, opts: HttpOptions) -> Result<Opened, Error> {
    let agent = agent(&opts);
    let name = PathBuf::from(url);
    let fail = |offset, reason: String| fetch_error(&name, offset, reason);
    let mut last = String::new();
    for attempt in 0..=opts.retries {
        if attempt > 0 {
            backoff(attempt);
        }
        let resp = agent
            .get(url)
            .header("Range", format!("bytes=0-{}", PROBE_LEN - 1))
            .call();
        let resp = match resp {
            Ok(r) => r,
            Err(e) if transient(&e) => {
                last = e.to_string();
                continue;
            }
            Err(e) => return Err(fail(0, e.to_string())),
        };
        let status = resp.status().as_u16();
        match status {
            206 => {
                let total = content_range(&resp)
                    .and_then(|(start, _, total)| (start == 0).then_some(total).flatten())
                    .ok_or_else(|| fail(0, "a 206 answer without a usable Content-Range".into()))?;
                let validator = Validator::of(&resp);
                return Ok(Opened::Random(Box::new(HttpImage {
                    url: url.to_string(),
                    name,
                    agent,
                    len: total,
                    validator,
                    opts,
                })));
            }
            // The whole image: the server does not do ranges. A short image answers 416 to a
            // range past its end; read it whole.
            200 => return Ok(Opened::Stream(Box::new(resp.into_body().into_reader()))),
            416 => {
                let resp = agent.get(url).call().map_err(|e| fail(0, e.to_string()))?;
                if resp.status().as_u16() != 200 {
                    return Err(fail(0, format!("HTTP {}", resp.status())));
                }
                return Ok(Opened::Stream(Box::new(resp.into_body().into_reader())));
            }
            500..=599 => last = format!("HTTP {}", resp.status()),
            _ => return Err(fail(0, format!("HTTP {}", resp.status()))),
        }
    }
    Err(fail(
        0,
        format!(
            "{last} (gave up after {})",
            crate::plural(u64::from(opts.retries) + 1, "attempt")
        ),
    ))
}

/// `(start, end, total)` of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range(resp: &ureq::http::Response<ureq::Body>) -> Option<(u64, u64, Option<u64>)> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()))
}

fn backoff(attempt: u32) {
    let d = FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16).saturating_sub(1))
        .min(MAX_BACKOFF);
    std::thread::sleep(d);
}

fn fetch_error(name: &Path, offset: u64, reason: String) -> Error {
    Error::Fetch {
        url: name.to_path_buf(),
        offset,
        chunk: None,
        reason,
    }
}

impl HttpImage {
    /// One range request for `[offset, offset + want)`, appending what arrives to `out`.
    fn attempt(&self, offset: u64, want: u64, out: &mut Vec<u8>) -> Result<(), Attempt> {
        let end = offset + want - 1;
        let mut req = self
            .agent
            .get(&self.url)
            .header("Range", format!("bytes={offset}-{end}"));
        if let Some(v) = self.validator.header() {
            req = req.header("If-Range", v);
        }
        let resp = req.call().map_err(|e| {
            if transient(&e) {
                Attempt::Retry(e.to_string())
            } else {
                Attempt::Fatal(e.to_string())
            }
        })?;
        match resp.status().as_u16() {
            206 => {}
            200 if self.validator != Validator::None => {
                let now = Validator::of(&resp);
                return Err(Attempt::Fatal(format!(
                    "the image on the server changed (was {}, now {}); stopped so that the target is never given chunks of two images",
                    self.validator.header().unwrap_or("?"),
                    now.header().unwrap_or("unknown")
                )));
            }
            200 => {
                return Err(Attempt::Fatal(
                    "the server stopped answering range requests".into(),
                ));
            }
            s @ 500..=599 => return Err(Attempt::Retry(format!("HTTP {s}"))),
            s => return Err(Attempt::Fatal(format!("HTTP {s}"))),
        }
        // A server that does not honour If-Range still names the version it sends.
        if let Validator::ETag(e) = &self.validator
            && let Validator::ETag(now) = Validator::of(&resp)
            && &now != e
        {
            return Err(Attempt::Fatal(format!(
                "the image on the server changed (ETag was {e}, now {now}); stopped so that the target is never given chunks of two images"
            )));
        }
        match content_range(&resp) {
            Some((s, e, _)) if s == offset && e == end => {}
            other => {
                return Err(Attempt::Fatal(format!(
                    "asked for bytes {offset}-{end}, the server sent {other:?}"
                )));
            }
        }
        // Sized by what arrives, never by what a header claims.
        let before = out.len();
        let got = resp.into_body().into_reader().take(want).read_to_end(out);
        let n = (out.len() - before) as u64;
        match got {
            Ok(_) if n == want => Ok(()),
            Ok(_) => Err(Attempt::Retry(format!("short body ({n} of {want} bytes)"))),
            Err(e) => Err(Attempt::Retry(e.to_string())),
        }
    }
}

impl RandomAccess for HttpImage {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, Error> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(fetch_error(
                &self.name,
                offset,
                format!(
                    "{len} bytes are past the end of the {}-byte image",
                    self.len
                ),
            ));
        }
        let mut out = Vec::new();
        if len == 0 {
            return Ok(Cow::Owned(out));
        }
        let mut last = String::new();
        for attempt in 0..=self.opts.retries {
            if attempt > 0 {
                backoff(attempt);
            }
            // Resume from the first byte not yet received.
            let done = out.len() as u64;
            match self.attempt(offset + done, len - done, &mut out) {
                Ok(()) => return Ok(Cow::Owned(out)),
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Fatal(why)) => {
                    return Err(fetch_error(&self.name, offset + out.len() as u64, why));
                }
            }
        }
        Err(fetch_error(
            &self.name,
            offset + out.len() as u64,
            format!(
                "{last} (gave up after {})",
                crate::plural(u64::from(self.opts.retries) + 1, "attempt")
            ),
        ))
    }
}

/// Fetches a whole small file (a manifest, a boot area) from `url`, with the same retries; a
/// file larger than `limit` is refused.
///
/// # Errors
/// As [`open`], or a body larger than `limit`.
pub fn fetch_small(url: &str, opts: HttpOptions, limit: u64) -> Result<Vec<u8>, Error> {
    let agent = agent(&opts);
    let name = PathBuf::from(url);
    let mut last = String::new();
    for attempt in 0..=opts.retries {
        if attempt > 0 {
            backoff(attempt);
        }
        let resp = match agent.get(url).call() {
            Ok(r) => r,
            Err(e) if transient(&e) => {
                last = e.to_string();
                continue;
            }
            Err(e) => return Err(fetch_error(&name, 0, e.to_string())),
        };
        match resp.status().as_u16() {
            200 => {}
            s @ 500..=599 => {
                last = format!("HTTP {s}");
                continue;
            }
            s => return Err(fetch_error(&name, 0, format!("HTTP {s}"))),
        }
        let mut out = Vec::new();
        match resp
            .into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut out)
        {
            Ok(_) if out.len() as u64 > limit => {
                return Err(fetch_error(
                    &name,
                    0,
                    format!("larger than the {limit} bytes such a file may have"),
                ));
            }
            Ok(_) => return Ok(out),
            Err(e) => last = e.to_string(),
        }
    }
    Err(fetch_error(
        &name,
        0,
        format!(
            "{last} (gave up after {})",
            crate::plural(u64::from(opts.retries) + 1, "attempt")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("http://head:8080/images/root.rimg"));
        assert!(is_url("HTTPS://head/x"));
        assert!(!is_url("/cluster/images/http://x"));
        assert!(!is_url("root.rimg"));
        assert!(!is_url("-"));
    }
}
