//! The node side of `rimage serve` (docs/SERVICE.md): fetch the node's job, save the disk to an
//! upload or restore it from the head node, send progress as it happens and the result at the
//! end. `rimage agent` and the netboot init both run [`run_job`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::Error;
use crate::disk::{DiskSource, RestoreDiskOptions, SaveDiskOptions};
use crate::progress::{JsonLines, Progress};
use crate::restore::RestoreOptions;
use crate::serve::proto::{Job, Mode, ReportLine};
use crate::transport::http::HttpOptions;

/// Reports sent per POST at most (the rest wait for the next one).
const REPORT_BATCH: usize = 64;
/// Attempts at sending the final result.
const RESULT_ATTEMPTS: u32 = 6;

/// Where the node's job comes from and what it runs on.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Base URL of the service, e.g. `http://10.0.2.2:8080`.
    pub server: String,
    /// This node's name.
    pub node: String,
    /// The job token (`rimage.token`).
    pub token: String,
    /// The disk to save or restore; else the job's `disk`.
    pub disk: Option<PathBuf>,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
    /// Retries and timeouts for image reads.
    pub http: HttpOptions,
}

/// Why the agent could not talk to the service (a failed job is a [`JobOutcome`], not this).
#[derive(Debug, Error)]
pub enum AgentError {
    /// The request did not get an answer.
    #[error("{url}: {reason}")]
    Http {
        /// What was requested.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The service answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// What was requested.
        url: String,
        /// The status.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// The job is not one this rimage can run.
    #[error("the job from {url} cannot be run: {reason}")]
    BadJob {
        /// Where it came from.
        url: String,
        /// Why.
        reason: String,
    },
}

/// How a job ended (and what was reported).
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobOutcome {
    /// The job.
    pub job: Job,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, or the error.
    pub message: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes moved (saved and uploaded, or restored).
    pub bytes: u64,
}

fn base(server: &str) -> &str {
    server.trim_end_matches('/')
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(timeout))
        .build()
        .into()
}

fn read_body(resp: ureq::http::Response<ureq::Body>) -> String {
    let mut s = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(64 << 10)
        .read_to_string(&mut s);
    s.trim().to_string()
}

/// Fetches the node's job.
///
/// # Errors
/// [`AgentError::Status`] for a wrong or stale token (401) or no job (404);
/// [`AgentError::Http`] when the service cannot be reached; [`AgentError::BadJob`] for an
/// answer that is not a job.
pub fn fetch_job(server: &str, token: &str) -> Result<Job, AgentError> {
    let url = format!("{}/api/v1/job", base(server));
    let resp = agent(Duration::from_secs(30))
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| AgentError::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let body = read_body(resp);
    if status != 200 {
        return Err(AgentError::Status { url, status, body });
    }
    serde_json::from_str(&body).map_err(|e| AgentError::BadJob {
        url,
        reason: e.to_string(),
    })
}

/// Sends report lines (`POST /api/v1/report`).
///
/// # Errors
/// As [`fetch_job`].
pub fn send_report(server: &str, token: &str, lines: &[ReportLine]) -> Result<(), AgentError> {
    let url = format!("{}/api/v1/report", base(server));
    let mut body = String::new();
    for l in lines {
        body.push_str(&serde_json::to_string(l).expect("report lines serialize"));
        body.push('\n');
    }
    let resp = agent(Duration::from_secs(30))
        .post(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/x-ndjson")
        .send(body.as_bytes())
        .map_err(|e| AgentError::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(AgentError::Status {
            url,
            status,
            body: read_body(resp),
        });
    }
    Ok(())
}

/// Progress shown locally and sent to the service (by a thread, so that workers never wait
/// on the network; lines that cannot be sent are dropped: only the result must arrive).
struct Reporting<'a> {
    local: &'a dyn Progress,
    json: JsonLines<Box<dyn Fn(serde_json::Value) + Send + Sync>>,
    done: AtomicU64,
}

impl Progress for Reporting<'_> {
    fn start(&self, phase: &str, total: u64) {
        self.local.start(phase, total);
        self.json.start(phase, total);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.local.advance(bytes);
        self.json.advance(bytes);
    }
    fn finish(&self) {
        self.local.finish();
        self.json.finish();
    }
    fn note(&self, message: &str) {
        self.local.note(message);
        self.json.note(message);
    }
}

/// Fetches the job, runs it, and reports progress and the result to the service.
///
/// A job that fails (a disk that cannot be read, an upload the service refuses, an image that
/// fails its checks) is reported and returned as a [`JobOutcome`] with `ok: false`; `Err` means
/// the service could not be asked or told.
///
/// # Errors
/// [`AgentError`] when the job cannot be fetched, or the result cannot be delivered.
pub fn run_job(opts: &AgentOptions, local: &dyn Progress) -> Result<JobOutcome, AgentError> {
    let job = fetch_job(&opts.server, &opts.token)?;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let sender = {
        let (server, token) = (opts.server.clone(), opts.token.clone());
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(REPORT_BATCH));
                let lines: Vec<ReportLine> = batch
                    .into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect();
                let _ = send_report(&server, &token, &lines);
            }
        })
    };
    let tx = std::sync::Mutex::new(tx);
    let progress = Reporting {
        local,
        json: JsonLines::new(Box::new(move |v| {
            let _ = tx.lock().expect("report channel").send(v);
        })),
        done: AtomicU64::new(0),
    };
    let result = run(&job, opts, &progress);
    // What was uploaded or written; else what the progress counted (a whole-disk restore).
    let bytes = match &result {
        Ok(n) if *n > 0 => *n,
        _ => progress.done.load(Ordering::Relaxed),
    };
    // Progress lines go first; the result is the last thing the service hears.
    drop(progress);
    let _ = sender.join();
    let (ok, message) = match &result {
        Ok(_) => (true, format!("{} done", job.mode)),
        Err(e) => (false, e.full_message()),
    };
    let seconds = started.elapsed().as_secs_f64();
    let line = ReportLine::Result {
        ok,
        message: message.clone(),
        seconds,
        bytes,
    };
    let mut last = None;
    for attempt in 0..RESULT_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
        match send_report(&opts.server, &opts.token, std::slice::from_ref(&line)) {
            Ok(()) => {
                last = None;
                break;
            }
            // A refusal will not change by asking again.
            Err(e @ AgentError::Status { .. }) => {
                last = Some(e);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    Ok(JobOutcome {
        job,
        ok,
        message,
        seconds,
        bytes,
    })
}

/// Runs the job; returns the bytes moved.
fn run(job: &Job, opts: &AgentOptions, progress: &dyn Progress) -> Result<u64, Error> {
    let disk = || -> Result<PathBuf, Error> {
        opts.disk
            .clone()
            .or_else(|| job.disk.as_deref().map(PathBuf::from))
            .ok_or_else(|| Error::Usage("the job names no disk: pass --disk (rimage.disk=)".into()))
    };
    match job.mode {
        Mode::Local => Ok(0),
        Mode::Live => {
            progress.note("live mode: nothing to run");
            Ok(0)
        }
        Mode::Save => {
            let url = job
                .upload_url
                .as_deref()
                .ok_or_else(|| Error::Usage("a save job without an upload_url".into()))?;
            save_upload(
                &disk()?,
                url,
                &opts.token,
                job.overwrite,
                opts.threads,
                progress,
            )
        }
        Mode::Restore => {
            let url = job
                .image_url
                .as_deref()
                .ok_or_else(|| Error::Usage("a restore job without an image_url".into()))?;
            let restore = RestoreOptions {
                threads: opts.threads,
                delta: job.delta,
                ..RestoreOptions::default()
            };
            let disk = disk()?;
            let before = Instant::now();
            if url.ends_with('/') {
                let ropts = RestoreDiskOptions {
                    restore,
                    post_restore: job.post_restore.clone(),
                    ..RestoreDiskOptions::default()
                };
                let src = DiskSource::Url {
                    base: url.to_string(),
                    opts: opts.http,
                };
                let r = crate::disk::restore_disk(&src, &disk, &ropts, progress)?;
                progress.note(&format!(
                    "restored {} partitions onto {} in {:.1} s",
                    r.partitions.len(),
                    disk.display(),
                    before.elapsed().as_secs_f64()
                ));
                Ok(0)
            } else {
                let src = crate::ImageSource::Url {
                    url: url.to_string(),
                    opts: opts.http,
                };
                let r = crate::restore(&src, &disk, &restore, progress)?;
                Ok(r.bytes_written)
            }
        }
    }
}

/// Saves `disk` as a disk stream into a chunked `PUT` to `url`; returns the bytes sent.
fn save_upload(
    disk: &Path,
    url: &str,
    token: &str,
    overwrite: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    let name = PathBuf::from(url);
    // A refusal that comes before the body is read can be lost to the broken connection: ask
    // first whether the name is taken.
    let probe = format!(
        "{}/{}",
        url.trim_end_matches('/'),
        crate::disk::manifest::MANIFEST
    );
    if let Ok(r) = agent(Duration::from_secs(30)).head(&probe).call()
        && r.status().as_u16() == 200
        && !overwrite
    {
        return Err(Error::refused(
            &name,
            "409: a saved disk of this name exists on the service; set the job with --overwrite to replace it",
        ));
    }
    let io_err = |op, e| Error::Io(crate::error::IoError::new(&name, op, None, e));
    let (reader, writer) = std::io::pipe().map_err(|e| io_err("create a pipe for", e))?;
    let opts = SaveDiskOptions {
        save: crate::SaveOptions {
            threads,
            ..crate::SaveOptions::default()
        },
        ..SaveDiskOptions::default()
    };
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let saver = s.spawn(|| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, writer);
            let r = crate::disk::save_disk_to(disk, &mut w, &name, &opts, progress);
            let flushed = w.flush();
            // Dropping the writer ends the body: the service sees the end and checks it.
            drop(w);
            r.and_then(|rep| flushed.map(|()| rep).map_err(|e| io_err("write", e)))
        });
        let mut counting = Counting {
            r: reader,
            n: &sent,
        };
        // The service checks the whole stream before it answers: no response timeout.
        let resp = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .build()
            .new_agent()
            .put(url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut counting));
        // Whatever the upload did, the saver must not block on a full pipe.
        drop(counting);
        let saved = saver.join().expect("save thread");
        let resp = resp.map_err(|e| Error::Fetch {
            url: name.clone(),
            offset: sent.load(Ordering::Relaxed),
            chunk: None,
            reason: format!("upload: {e}"),
        });
        // The save's own error says more than the upload's broken pipe.
        saved?;
        let resp = resp?;
        let status = resp.status().as_u16();
        if status != 201 && status != 200 {
            return Err(Error::failed(
                &name,
                format!(
                    "the service refused the upload: HTTP {status}: {}",
                    read_body(resp)
                ),
            ));
        }
        Ok(sent.load(Ordering::Relaxed))
    })
}

struct Counting<'a> {
    r: std::io::PipeReader,
    n: &'a AtomicU64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
