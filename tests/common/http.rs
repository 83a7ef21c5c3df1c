//! A real nginx on a loopback port serving a directory, and a fault-injecting TCP proxy in
//! front of it (connections cut every few bytes, stalls, 503 answers, a hook after so many
//! bytes), counting what it forwards.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// nginx serving `root` on a loopback port; stopped on drop.
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    root: PathBuf,
    ranges: bool,
}

impl Nginx {
    /// Starts nginx on `root` (with range requests, or with `max_ranges 0`). `None`, with a
    /// note, where nginx is not installed.
    pub fn start(root: &Path, ranges: bool) -> Option<Self> {
        if !super::have("nginx") {
            eprintln!("SKIP part: nginx is not installed (apt-get install nginx)");
            return None;
        }
        let mut n = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            root: root.to_path_buf(),
            ranges,
        };
        n.spawn();
        Some(n)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let conf = d.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  default_type application/octet-stream;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n  sendfile on;\n  keepalive_requests 100000;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 location / {{ {ranges} autoindex on; }}\n  }}\n}}\n",
                d = d.display(),
                port = self.port,
                root = self.root.display(),
                ranges = if self.ranges { "" } else { "max_ranges 0;" },
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        self.child = Some(child);
        assert!(wait_for(self.port), "nginx did not start");
    }

    /// The URL of `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops nginx (connections in flight are cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the proxy does to the traffic.
#[derive(Default)]
pub struct Faults {
    /// Cut every connection after this many bytes from the server.
    pub cut_every: Option<u64>,
    /// Once, after this many bytes in total, stall a connection for the duration.
    pub stall: Option<(u64, Duration)>,
    /// Answer this many requests with `503` instead of passing them on.
    pub fail_503: u32,
    /// Run once when this many bytes in total have passed.
    pub hook: Option<(u64, Box<dyn FnOnce() + Send>)>,
}

/// A TCP proxy on a loopback port in front of `upstream`.
pub struct Proxy {
    pub port: u16,
    /// Bytes passed from the server to the client.
    pub bytes: Arc<AtomicU64>,
    pub faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, f, s) = (Arc::clone(&bytes), Arc::clone(&faults), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (b, f) = (Arc::clone(&b), Arc::clone(&f));
                std::thread::spawn(move || serve(client, upstream, &b, &f));
            }
        });
        Self {
            port,
            bytes,
            faults,
            stop,
        }
    }

    /// The URL of `name` through the proxy.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Changes the faults.
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, upstream: u16, bytes: &AtomicU64, faults: &Mutex<Faults>) {
    {
        let mut f = faults.lock().unwrap();
        if f.fail_503 > 0 {
            f.fail_503 -= 1;
            drop(f);
            let mut req = [0u8; 4096];
            let _ = client.read(&mut req);
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Client to server, as it comes.
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 16 << 10];
    let mut here = 0u64;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let total = bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        here += n as u64;
        let (cut, stall, hook) = {
            let mut f = faults.lock().unwrap();
            let cut = f.cut_every.is_some_and(|c| here >= c);
            let stall = match f.stall {
                Some((at, d)) if total >= at => {
                    f.stall = None;
                    Some(d)
                }
                _ => None,
            };
            let hook = match &f.hook {
                Some((at, _)) if total >= *at => f.hook.take().map(|(_, h)| h),
                _ => None,
            };
            (cut, stall, hook)
        };
        if let Some(h) = hook {
            h();
        }
        if let Some(d) = stall {
            std::thread::sleep(d);
        }
        if client.write_all(&buf[..n]).is_err() || cut {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
}
