//! What the head node and its nodes say to each other (docs/SERVICE.md), as types and parsers
//! with no I/O: MAC addresses as iPXE spells them, node and image names, the job a node fetches
//! and the report lines it sends. Everything here reads untrusted input and returns typed
//! errors (the fuzz target `serve_request` runs these).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest report body line, and longest message kept from one.
pub const MAX_REPORT_LINE: usize = 64 << 10;
/// Longest node name (a host name label).
pub const MAX_NODE_NAME: usize = 63;
/// Longest image name.
pub const MAX_IMAGE_NAME: usize = 128;

/// What is wrong with a request's parameters or body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Not a MAC address.
    #[error("not a MAC address: {0:?} (six hex bytes separated by ':' or '-')")]
    Mac(String),
    /// A node name that is not a host name label.
    #[error(
        "bad node name {0:?}: 1 to 63 letters, digits and '-', not starting or ending with '-'"
    )]
    NodeName(String),
    /// An image name that could leave the image root or hide.
    #[error(
        "bad image name {0:?}: 1 to 128 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
    )]
    ImageName(String),
    /// A report line that is not one of the documented objects.
    #[error("bad report line: {0}")]
    Report(String),
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The hyphen form pxelinux names its per-node files with (`52-54-00-12-34-56`).
    pub fn hyphenated(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for Mac {
    type Err = ProtoError;

    /// `52:54:00:12:34:56`, `52-54-00-12-34-56`, upper or lower case, and the colons
    /// percent-encoded as iPXE sends them in a path (`52%3A54%3A...`).
    fn from_str(s: &str) -> Result<Self, ProtoError> {
        let bad = || ProtoError::Mac(s.chars().take(64).collect());
        if s.len() > 64 {
            return Err(bad());
        }
        let decoded = s.replace("%3A", ":").replace("%3a", ":");
        let sep = if decoded.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut parts = decoded.split(sep);
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a node name: a host name label (it names DHCP host files and DNS entries).
///
/// # Errors
/// [`ProtoError::NodeName`].
pub fn check_node_name(name: &str) -> Result<(), ProtoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ProtoError::NodeName(name.chars().take(80).collect()))
    }
}

/// Checks an image name: one path component under the image root, never `..`, never hidden
/// (temporary uploads start with a dot), no separators.
///
/// # Errors
/// [`ProtoError::ImageName`].
pub fn check_image_name(name: &str) -> Result<(), ProtoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IMAGE_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(ProtoError::ImageName(name.chars().take(160).collect()))
    }
}

/// The relative path under the image root that a request names (`golden/part1.rimg`), split
/// into components; refused when any component is empty, `.`, `..` or hidden, so no request
/// can leave the root lexically (symlinks are checked where the file is opened).
///
/// # Errors
/// [`ProtoError::ImageName`] naming the path.
pub fn image_path_components(path: &str) -> Result<Vec<&str>, ProtoError> {
    let bad = || ProtoError::ImageName(path.chars().take(160).collect());
    if path.is_empty() || path.len() > 1024 || path.starts_with('/') {
        return Err(bad());
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    if parts.len() > 8 {
        return Err(bad());
    }
    for p in &parts {
        check_image_name(p).map_err(|_| bad())?;
    }
    Ok(parts)
}

/// What a node does at its next network boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Boot the local disk.
    Local,
    /// A shell in the imaging system.
    Live,
    /// Save the disk to the head node.
    Save,
    /// Restore an image from the head node.
    Restore,
}

impl Mode {
    /// The name used on command lines and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Live => "live",
            Self::Save => "save",
            Self::Restore => "restore",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The job `GET /api/v1/job` hands a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The node's name.
    pub node: String,
    /// What to do.
    pub mode: Mode,
    /// An id for this job (not the token).
    pub job: String,
    /// The image restored, or the name saved to.
    pub image: Option<String>,
    /// Where to restore from (a save-disk directory ending in `/`, or a `.rimg`).
    pub image_url: Option<String>,
    /// Where to `PUT` the disk stream of a save.
    pub upload_url: Option<String>,
    /// Restore with `--delta`.
    #[serde(default)]
    pub delta: bool,
    /// Command run in the restored root.
    pub post_restore: Option<String>,
    /// The disk to use, when the admin named one.
    pub disk: Option<String>,
    /// Reboot when done (the init's business).
    #[serde(default)]
    pub reboot: bool,
    /// A save may replace an existing image of the same name.
    #[serde(default)]
    pub overwrite: bool,
}

/// One line of a node's report (`POST /api/v1/report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ReportLine {
    /// A phase starts.
    Start(ProgressLine),
    /// Progress within a phase.
    Progress(ProgressLine),
    /// A phase ends.
    Finish(ProgressLine),
    /// A message.
    Log {
        /// The text.
        message: String,
    },
    /// The job's outcome.
    Result {
        /// Whether it succeeded.
        ok: bool,
        /// What happened (the error when it failed).
        #[serde(default)]
        message: String,
        /// How long it took.
        #[serde(default)]
        seconds: f64,
        /// Bytes moved.
        #[serde(default)]
        bytes: u64,
    },
}

/// A progress line as `rimage --progress json` prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressLine {
    /// "saving", "restoring", ...
    #[serde(default)]
    pub phase: String,
    /// Bytes done in the phase.
    #[serde(default)]
    pub done_bytes: u64,
    /// Bytes in the phase.
    #[serde(default)]
    pub total_bytes: u64,
    /// Seconds since the phase began.
    #[serde(default)]
    pub elapsed_secs: f64,
    /// Rate so far.
    #[serde(default)]
    pub bytes_per_sec: f64,
    /// Seconds left at that rate.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

/// Parses a report body: one JSON object per non-empty line.
///
/// # Errors
/// [`ProtoError::Report`] naming the first line that is too long or not a documented object.
pub fn parse_report(body: &str) -> Result<Vec<ReportLine>, ProtoError> {
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_REPORT_LINE {
            return Err(ProtoError::Report(format!(
                "line {} is longer than {MAX_REPORT_LINE} bytes",
                i + 1
            )));
        }
        let mut parsed: ReportLine = serde_json::from_str(line)
            .map_err(|e| ProtoError::Report(format!("line {}: {e}", i + 1)))?;
        // Messages are shown on the dashboard and kept in the state: bounded.
        if let ReportLine::Log { message } | ReportLine::Result { message, .. } = &mut parsed {
            truncate(message, 4096);
        }
        if let ReportLine::Start(p) | ReportLine::Progress(p) | ReportLine::Finish(p) = &mut parsed
        {
            truncate(&mut p.phase, 64);
        }
        out.push(parsed);
    }
    Ok(out)
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The token in an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let t = header.strip_prefix("Bearer ")?.trim();
    (!t.is_empty() && t.len() <= 128).then_some(t)
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// The whole file (no header, several ranges, or a form not understood).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of the file can be given (416).
    Unsatisfiable,
}

/// Parses a `Range` header (`bytes=A-B`, `bytes=A-`, `bytes=-N`) against a length.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= len {
                return RangeAsk::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            if end < start {
                RangeAsk::Whole
            } else {
                RangeAsk::Part(start, end)
            }
        }
        _ => RangeAsk::Whole,
    }
}

/// The host part of a `Host` header when it is one (name or address, optional port): what
/// boot scripts put in their URLs.
pub fn check_host(host: &str) -> Option<&str> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        use super::RangeAsk::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(check_host("10.0.2.2:8080"), Some("10.0.2.2:8080"));
        assert_eq!(check_host("evil/x"), None);
    }

    use super::*;

    #[test]
    fn macs_in_every_form_ipxe_sends() {
        let want = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        for s in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52%3A54%3A00%3A12%3A34%3A56",
            "52%3a54%3a00%3a12%3a34%3a56",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            assert_eq!(s.parse::<Mac>().unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:12:34:56");
        assert_eq!(want.hyphenated(), "52-54-00-12-34-56");
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "525400123456",
            "52:54-00:12:34:56",
            "+2:54:00:12:34:56",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_cannot_escape() {
        assert!(check_image_name("golden").is_ok());
        assert!(check_image_name("node07-2026-11-27.rimg").is_ok());
        for bad in ["", "..", ".", ".hidden", "a/b", "/abs", "a\\b", "-x", "a b"] {
            assert!(check_image_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            image_path_components("golden/part1.rimg").unwrap(),
            ["golden", "part1.rimg"]
        );
        assert_eq!(image_path_components("golden/").unwrap(), ["golden"]);
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a//b",
            "a/../b",
            "a/./b",
            "",
        ] {
            assert!(image_path_components(bad).is_err(), "{bad}");
        }
        assert!(check_node_name("node07").is_ok());
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64)] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn report_lines() {
        let body = r#"{"event":"start","phase":"saving","done_bytes":0,"total_bytes":100,"elapsed_secs":0.0,"bytes_per_sec":0.0,"eta_secs":null}

{"event":"log","message":"hello"}
{"event":"result","ok":true,"message":"done","seconds":1.5,"bytes":100}"#;
        let lines = parse_report(body).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(matches!(
            &lines[2],
            ReportLine::Result {
                ok: true,
                bytes: 100,
                ..
            }
        ));
        assert!(parse_report("{\"event\":\"nope\"}").is_err());
        assert!(parse_report("not json").is_err());
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
