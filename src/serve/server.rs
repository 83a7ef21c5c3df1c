//! The HTTP service (axum on tokio): routes of docs/SERVICE.md. The blocking work (state
//! file under its lock, image checks of an upload) runs on tokio's blocking threads.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast;

use super::nodes::{self, NodeView};
use super::proto::{self, Mode, RangeAsk, ReportLine};
use super::state::{StateDir, now, random_hex, same};
use crate::Error;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The image root.
    pub root: PathBuf,
    /// The state directory (shared with `rimage node`).
    pub state: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The URL nodes reach the service by (else each request's `Host`).
    pub public_url: Option<String>,
    /// The netboot kernel and initrd (`vmlinuz`, `initrd.img`).
    pub netboot: Option<PathBuf>,
    /// Largest upload in bytes.
    pub max_upload: u64,
    /// Threads checking an upload.
    pub threads: usize,
}

/// Events kept for the dashboard.
const MAX_EVENTS: usize = 200;
/// Largest report body.
const MAX_REPORT_BODY: usize = 4 << 20;

/// A node's progress as last reported.
#[derive(Clone, Debug, Serialize)]
struct LiveProgress {
    phase: String,
    done_bytes: u64,
    total_bytes: u64,
    bytes_per_sec: f64,
    eta_secs: Option<f64>,
    at: String,
}

/// One line of the event log.
#[derive(Clone, Debug, Serialize)]
struct EventView {
    at: String,
    node: String,
    kind: &'static str,
    message: String,
}

#[derive(Default)]
struct Live {
    progress: HashMap<String, LiveProgress>,
    events: VecDeque<EventView>,
}

struct App {
    opts: ServeOptions,
    sd: StateDir,
    admin: String,
    live: Mutex<Live>,
    tx: broadcast::Sender<String>,
}

type Shared = Arc<App>;

/// An answer other than success: a status and a JSON `{"error": ...}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 }).to_string();
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn lib_error(e: &Error) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.full_message())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(|e| lib_error(&e))
}

impl App {
    fn event(&self, node: &str, kind: &'static str, message: String) {
        let ev = EventView {
            at: now(),
            node: node.to_string(),
            kind,
            message,
        };
        let line = serde_json::json!({"type": "event", "event": &ev}).to_string();
        {
            let mut live = self.live.lock().expect("live lock");
            if live.events.len() >= MAX_EVENTS {
                live.events.pop_front();
            }
            live.events.push_back(ev);
        }
        let _ = self.tx.send(line);
    }

    /// The base URL for a request: `--public-url`, else `http://` + its `Host`.
    fn base(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        if let Some(u) = &self.opts.public_url {
            return Ok(u.trim_end_matches('/').to_string());
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(proto::check_host)
            .map(|h| format!("http://{h}"))
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "no usable Host header (and no --public-url)".into(),
                )
            })
    }
}

/// Runs the service until SIGINT or SIGTERM; `ready` is told the address it listens on.
///
/// # Errors
/// A root that is not a directory, a state directory that cannot be opened, an address that
/// cannot be bound.
pub fn serve(opts: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), Error> {
    if !opts.root.is_dir() {
        return Err(Error::Usage(format!(
            "{}: the image root is not a directory",
            opts.root.display()
        )));
    }
    let sd = StateDir::open(&opts.state)?;
    let admin = sd.admin_token()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let (tx, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        opts: opts.clone(),
        sd,
        admin,
        live: Mutex::new(Live::default()),
        tx,
    });
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| {
                Error::Io(crate::error::IoError::new(
                    Path::new(&opts.listen.to_string()),
                    "listen on",
                    None,
                    e,
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        ready(addr);
        let router = router(app);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Internal(e.to_string()))?;
        // Open event streams would hold a graceful shutdown forever: the service just stops
        // (every change it makes is already on disk).
        tokio::select! {
            r = axum::serve(listener, router) => r.map_err(|e| Error::Internal(format!("the service stopped: {e}"))),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/boot/{mac}", get(boot))
        .route("/api/v1/job", get(job))
        .route(
            "/api/v1/report",
            post(report).layer(DefaultBodyLimit::max(MAX_REPORT_BODY)),
        )
        .route("/api/v1/nodes", get(nodes_json))
        .route("/api/v1/images", get(images_json))
        .route("/api/v1/events", get(events))
        .route("/netboot/{file}", get(netboot))
        .route(
            "/images/{*path}",
            get(image_file)
                .put(upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(app)
}

async fn boot(
    State(app): State<Shared>,
    UrlPath(mac): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mac: proto::Mac = mac
        .parse()
        .map_err(|e: proto::ProtoError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let base = app.base(&headers)?;
    let sd = app.sd.clone();
    let st = blocking(move || sd.read()).await?;
    let script = nodes::boot_script(&st, mac, &base);
    if let Some(n) = st.by_mac(mac) {
        app.event(
            &n.name,
            "boot",
            format!("asked for its boot script ({})", n.mode),
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], script).into_response())
}

fn token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(proto::bearer)
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "an Authorization: Bearer TOKEN header is needed".into(),
            )
        })
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "the token is not the current job's (the job ended, or was set again)".into(),
    )
}

async fn job(State(app): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = token(&headers)?;
    let base = app.base(&headers)?;
    let sd = app.sd.clone();
    let st = blocking(move || sd.read()).await?;
    let node = st.by_token(&token).ok_or_else(unauthorized)?;
    if node.mode == Mode::Local {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the node has no job".into(),
        ));
    }
    let disk_image = node
        .image
        .as_deref()
        .is_some_and(|i| app.opts.root.join(i).is_dir());
    let job = nodes::job(node, &base, disk_image);
    app.event(&node.name, "job", format!("fetched its {} job", node.mode));
    Ok(axum::Json(job).into_response())
}

async fn report(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let token = token(&headers)?;
    let lines =
        proto::parse_report(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sd = app.sd.clone();
    let st = blocking(move || sd.read()).await?;
    let name = st.by_token(&token).ok_or_else(unauthorized)?.name.clone();
    for line in lines {
        match line {
            ReportLine::Start(p) | ReportLine::Progress(p) | ReportLine::Finish(p) => {
                let lp = LiveProgress {
                    phase: p.phase,
                    done_bytes: p.done_bytes,
                    total_bytes: p.total_bytes,
                    bytes_per_sec: p.bytes_per_sec,
                    eta_secs: p.eta_secs,
                    at: now(),
                };
                let msg = serde_json::json!({"type": "progress", "node": &name, "progress": &lp});
                app.live
                    .lock()
                    .expect("live lock")
                    .progress
                    .insert(name.clone(), lp);
                let _ = app.tx.send(msg.to_string());
            }
            ReportLine::Log { message } => app.event(&name, "log", message),
            ReportLine::Result {
                ok,
                message,
                seconds,
                bytes,
            } => {
                let (sd, t, m) = (app.sd.clone(), token.clone(), message.clone());
                let rec =
                    blocking(move || nodes::record_result(&sd, &t, ok, &m, seconds, bytes)).await?;
                let Some((node, _)) = rec else {
                    return Err(unauthorized());
                };
                app.live.lock().expect("live lock").progress.remove(&name);
                app.event(
                    &name,
                    if ok { "ok" } else { "failed" },
                    format!(
                        "{}; next boot: {}",
                        if message.is_empty() { "done" } else { &message },
                        node.mode
                    ),
                );
                let _ = app
                    .tx
                    .send(serde_json::json!({"type": "node", "node": node}).to_string());
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A node on the dashboard: what is kept, and what it is doing now.
#[derive(Serialize)]
struct NodeRow {
    #[serde(flatten)]
    node: NodeView,
    progress: Option<LiveProgress>,
}

fn rows(app: &App, nodes: Vec<NodeView>) -> Vec<NodeRow> {
    let live = app.live.lock().expect("live lock");
    nodes
        .into_iter()
        .map(|node| NodeRow {
            progress: live.progress.get(&node.name).cloned(),
            node,
        })
        .collect()
}

/// Every node with its live job, and the recent events: what the list and the dashboard show.
async fn snapshot(app: &Shared) -> Result<(Vec<NodeRow>, Vec<EventView>), ApiError> {
    let sd = app.sd.clone();
    let nodes = blocking(move || nodes::list(&sd)).await?;
    let rows = rows(app, nodes);
    let events = app
        .live
        .lock()
        .expect("live lock")
        .events
        .iter()
        .cloned()
        .collect();
    Ok((rows, events))
}

async fn nodes_json(State(app): State<Shared>) -> Result<Response, ApiError> {
    let (rows, events) = snapshot(&app).await?;
    Ok(axum::Json(serde_json::json!({"nodes": rows, "events": events})).into_response())
}

async fn images_json(State(app): State<Shared>) -> Result<Response, ApiError> {
    let root = app.opts.root.clone();
    let list = blocking(move || list_images(&root)).await?;
    Ok(axum::Json(list).into_response())
}

/// Every image and saved disk under the root, with what its header or manifest says.
fn list_images(root: &Path) -> Result<Vec<serde_json::Value>, Error> {
    let mut out = Vec::new();
    let rd =
        std::fs::read_dir(root).map_err(|e| crate::error::IoError::new(root, "list", None, e))?;
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| proto::check_image_name(n).is_ok())
        .collect();
    names.sort();
    for name in names {
        let path = root.join(&name);
        if crate::disk::is_disk_dir(&path) {
            match crate::disk::inspect_dir(&path) {
                Ok(info) => out.push(serde_json::json!({
                    "name": name, "kind": "disk", "created": info.manifest.created,
                    "source": info.manifest.source, "disk_bytes": info.manifest.disk_bytes,
                    "partitions": info.partitions.iter().map(|p| serde_json::json!({
                        "number": p.plan.number, "action": p.plan.action,
                        "filesystem": p.plan.filesystem.kind.name(),
                        "image_bytes": p.image.as_ref().map(|i| i.image_bytes),
                    })).collect::<Vec<_>>(),
                    "problems": info.problems,
                })),
                Err(e) => out.push(serde_json::json!({"name": name, "kind": "disk", "problems": [e.full_message()]})),
            }
        } else if path.is_file() && name.ends_with(".rimg") {
            match crate::inspect_image(&crate::ImageSource::File(path.clone())) {
                Ok(info) => out.push(serde_json::json!({
                    "name": name, "kind": "image", "image_bytes": info.image_bytes,
                    "filesystem": info.header.source_type.name(),
                    "source_bytes": info.header.source_size,
                })),
                Err(e) => out.push(serde_json::json!({"name": name, "kind": "image", "problems": [e.full_message()]})),
            }
        }
    }
    Ok(out)
}

async fn events(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = app.tx.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(s) => return Some((Ok(Event::default().data(s)), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such file".into())
}

/// The file under `root` that `rel` names, refusing any that leaves it (`..`, absolute,
/// hidden names, symlinks pointing out).
fn resolve(root: &Path, rel: &str) -> Result<PathBuf, ApiError> {
    let parts = proto::image_path_components(rel).map_err(|_| not_found())?;
    let mut p = root.to_path_buf();
    p.extend(parts);
    let real = p.canonicalize().map_err(|_| not_found())?;
    let real_root = root.canonicalize().map_err(internal)?;
    if !real.starts_with(&real_root) {
        return Err(not_found());
    }
    Ok(real)
}

async fn image_file(
    State(app): State<Shared>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = resolve(&app.opts.root, &path)?;
    serve_file(&file, &headers).await
}

async fn netboot(
    State(app): State<Shared>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = app.opts.netboot.as_ref().ok_or_else(not_found)?;
    if file != "vmlinuz" && file != "initrd.img" {
        return Err(not_found());
    }
    serve_file(&dir.join(file), &headers).await
}

/// A file with `Range`, `If-Range`, `ETag` and `Last-Modified`.
async fn serve_file(path: &Path, headers: &HeaderMap) -> Result<Response, ApiError> {
    use std::os::unix::fs::MetadataExt;
    let mut f = tokio::fs::File::open(path).await.map_err(|_| not_found())?;
    let meta = f.metadata().await.map_err(internal)?;
    if !meta.is_file() {
        return Err(not_found());
    }
    let len = meta.len();
    let mtime = meta.modified().map_err(internal)?;
    let etag = format!(
        "\"{:x}-{:x}-{:x}.{:x}\"",
        meta.ino(),
        len,
        meta.mtime(),
        meta.mtime_nsec()
    );
    let last_modified = httpdate::fmt_http_date(mtime);
    let hval = |n: &header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    // A range applies only to the version the client names in If-Range.
    let fresh = hval(&header::IF_RANGE).is_none_or(|v| v == etag || v == last_modified);
    let ask = if fresh {
        proto::parse_range(hval(&header::RANGE), len)
    } else {
        RangeAsk::Whole
    };
    let mut b = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CONTENT_TYPE, content_type(path));
    let (status, start, n) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(s, e) => {
            b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}"));
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        RangeAsk::Unsatisfiable => {
            return b
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .map_err(internal);
        }
    };
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        f.take(n),
        256 << 10,
    ));
    b.status(status)
        .header(header::CONTENT_LENGTH, n)
        .body(body)
        .map_err(internal)
}

fn content_type(path: &Path) -> HeaderValue {
    HeaderValue::from_static(match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    })
}

#[derive(Deserialize)]
struct UploadQuery {
    overwrite: Option<bool>,
}

/// A body's bytes as a blocking reader (the image checks are synchronous).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

async fn upload(
    State(app): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    proto::check_image_name(&name).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let token = token(&headers)?;
    let sd = app.sd.clone();
    let st = blocking(move || sd.read()).await?;
    let (overwrite, who) = if same(&token, &app.admin) {
        (q.overwrite.unwrap_or(false), "admin".to_string())
    } else {
        let node = st.by_token(&token).ok_or_else(unauthorized)?;
        if node.mode != Mode::Save || node.image.as_deref() != Some(name.as_str()) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "node {}'s job does not save to {name} (it is {}{})",
                    node.name,
                    node.mode,
                    node.image
                        .as_deref()
                        .map(|i| format!(" of {i}"))
                        .unwrap_or_default()
                ),
            ));
        }
        (node.overwrite, node.name.clone())
    };
    let max = app.opts.max_upload;
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than the service takes (--max-upload {max} bytes)"),
        )
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max)
    {
        return Err(too_large());
    }
    let root = app.opts.root.clone();
    let stem = name.strip_suffix(".rimg").unwrap_or(&name).to_string();
    let (final_dir, final_file) = (root.join(&stem), root.join(format!("{stem}.rimg")));
    if !overwrite && (final_dir.exists() || final_file.exists()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("an image named {stem} exists; the job was not set with --overwrite"),
        ));
    }
    let tmp = root.join(format!(
        ".{stem}.{}{}",
        &random_hex().map_err(|e| lib_error(&e))?[..12],
        crate::atomic::PARTIAL_SUFFIX
    ));
    std::fs::create_dir(&tmp).map_err(internal)?;
    app.event(&who, "upload", format!("uploading {stem}"));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let threads = app.opts.threads;
    let tmp2 = tmp.clone();
    let (fd, ff) = (final_dir.clone(), final_file.clone());
    // The worker checks, renames into place and cleans up by itself: if the request is dropped
    // (the client went away), the channel closes, the checks fail on the short stream, and
    // nothing is left behind.
    let worker = tokio::task::spawn_blocking(move || {
        let r = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        let out = crate::disk::receive::receive(r, &tmp2, threads, &crate::NoProgress)
            .map(|kind| commit_upload(&tmp2, &kind, &fd, &ff, overwrite).map(|p| (kind, p)));
        let _ = std::fs::remove_dir_all(&tmp2);
        out
    });
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut over = false;
    let mut checks_ended = false;
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(b) => {
                total += b.len() as u64;
                if total > max {
                    over = true;
                    let _ = tx
                        .send(Err(std::io::Error::other(
                            "the upload exceeds --max-upload",
                        )))
                        .await;
                    break;
                }
                // After the checks failed, the rest is read and dropped, so that the sender
                // gets the answer saying why instead of a closed connection.
                if !checks_ended && tx.send(Ok(b)).await.is_err() {
                    checks_ended = true;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "the upload broke off: {e}"
                    ))))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    let received = worker.await.map_err(internal)?;
    let outcome = match (over, received) {
        (true, _) => Err(too_large()),
        (false, Err(e)) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "the upload of {stem} fails its checks: {}",
                e.full_message()
            ),
        )),
        (false, Ok(Err(e))) => Err(ApiError(
            if final_dir.exists() || final_file.exists() {
                StatusCode::CONFLICT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            format!(
                "the upload of {stem} was checked but cannot be stored: {}",
                e.full_message()
            ),
        )),
        (false, Ok(Ok(done))) => Ok(done),
    };
    match outcome {
        Ok((kind, path)) => {
            app.event(
                &who,
                "upload",
                format!("{stem} stored ({}, checked)", crate::human_bytes(total)),
            );
            let body = serde_json::json!({
                "name": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "received": kind, "bytes": total,
            });
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        Err(e) => {
            app.event(&who, "failed", e.1.clone());
            Err(e)
        }
    }
}

/// Renames a checked upload into place (atomically; replacing only with `overwrite`).
fn commit_upload(
    tmp: &Path,
    kind: &crate::disk::receive::Received,
    final_dir: &Path,
    final_file: &Path,
    overwrite: bool,
) -> Result<PathBuf, Error> {
    use crate::disk::receive::{IMAGE_FILE, Received};
    let (from, to) = match kind {
        Received::Disk { .. } => (tmp.to_path_buf(), final_dir.to_path_buf()),
        Received::Image => (tmp.join(IMAGE_FILE), final_file.to_path_buf()),
    };
    let io = |p: &Path, op| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::Io(crate::error::IoError::new(&p, op, None, e))
    };
    let mut old = None;
    if overwrite && to.exists() {
        let parked = tmp.with_extension("old");
        std::fs::rename(&to, &parked).map_err(io(&to, "move aside"))?;
        old = Some(parked);
    }
    // NOREPLACE: an image that appeared meanwhile is never replaced.
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &from,
        rustix::fs::CWD,
        &to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(|e| io(&to, "rename the checked upload to")(e.into()))?;
    if let Some(old) = old {
        let _ = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
    }
    if let Some(dir) = to.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(to)
}

async fn dashboard(State(app): State<Shared>) -> Result<Response, ApiError> {
    let (rows, events) = snapshot(&app).await?;
    Ok(Html(super::dashboard::page(
        &rows_json(&rows),
        &events_json(&events),
    ))
    .into_response())
}

fn rows_json(rows: &[NodeRow]) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
}

fn events_json(events: &[EventView]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}
