//! `rimage serve` on loopback with a temporary root and state, driven the way the head node and
//! its nodes drive it: `rimage node` changes nodes (as processes, concurrently), nodes fetch
//! boot scripts and jobs, and simulated nodes run `rimage agent` against loop disks: one saves
//! its disk, two restore the saved image, each reporting. Uploads that are truncated, corrupt,
//! too large, badly authorised or named outside the root are refused and leave nothing; the
//! dashboard is loaded in headless Chromium while nodes report; dnsmasq checks the DHCP files.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{LoopDev, have, rimage, run};

/// A running `rimage serve`, stopped on drop.
struct Server {
    child: Child,
    addr: String,
    state: PathBuf,
    root: PathBuf,
}

impl Server {
    fn start(root: &Path, state: &Path, extra: &[&str]) -> Self {
        let mut child = rimage()
            .arg("serve")
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self {
            child,
            addr,
            state: state.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn token(&self, node: &str) -> String {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state.join("state.json")).unwrap()).unwrap();
        st["nodes"][node]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn admin(&self) -> String {
        std::fs::read_to_string(self.state.join("admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn node(&self, args: &[&str]) -> String {
        let out = rimage()
            .arg("node")
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rimage node {args:?}: {text}");
        text
    }

    fn nodes(&self) -> serde_json::Value {
        let out = rimage()
            .args(["node", "list", "--json", "--state"])
            .arg(&self.state)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn mode(&self, node: &str) -> String {
        self.nodes()
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .map(|n| n["mode"].as_str().unwrap().to_string())
            .unwrap()
    }

    fn last(&self, node: &str) -> serde_json::Value {
        self.nodes()
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .map(|n| n["last"].clone())
            .unwrap()
    }

    /// No temporary upload is left in the root.
    fn assert_no_partial(&self) {
        let left: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "left behind in the root: {left:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.call().unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().read_to_string().unwrap_or_default(),
    )
}

/// (status, body); status 0 when the service closed the connection before answering (it may,
/// refusing a large body before reading it).
fn put(url: &str, token: &str, body: &[u8]) -> (u16, String) {
    let resp = match agent()
        .put(url)
        .header("Authorization", format!("Bearer {token}"))
        .send(body)
    {
        Ok(r) => r,
        Err(e) => return (0, e.to_string()),
    };
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().read_to_string().unwrap_or_default(),
    )
}

fn post(url: &str, token: &str, body: &str) -> u16 {
    agent()
        .post(url)
        .header("Authorization", format!("Bearer {token}"))
        .send(body.as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

/// A request sent byte for byte (no client normalises the path): the status.
fn raw_status(addr: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A small ext4 filesystem image file with files, and its rimage image (no root needed).
fn small_image(dir: &Path) -> (PathBuf, PathBuf) {
    let tree = dir.join("tree");
    common::tree::populate(&tree, 7);
    let fs = dir.join("fs.img");
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&fs));
    let img = dir.join("small.rimg");
    run(rimage().args(["save", "-q"]).arg(&fs).arg(&img));
    (fs, img)
}

#[test]
fn boot_scripts_nodes_and_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    let (root, state, hosts, tftp) = (
        dir.path().join("root"),
        dir.path().join("state"),
        dir.path().join("hosts"),
        dir.path().join("tftp"),
    );
    std::fs::create_dir_all(&root).unwrap();
    let srv = Server::start(&root, &state, &[]);
    // Concurrent admins: eight `rimage node add` processes at once, none lost.
    let children: Vec<Child> = (0..8)
        .map(|i| {
            rimage()
                .arg("node")
                .arg("--state")
                .arg(&state)
                .arg("--dhcp-hostsdir")
                .arg(&hosts)
                .arg("--tftp-dir")
                .arg(&tftp)
                .args(["--public-url", "http://10.0.2.2:8080"])
                .args(["add", &format!("node{i:02}")])
                .args(["--mac", &format!("52:54:00:00:00:{i:02x}")])
                .args(["--ip", &format!("10.0.2.{}", 20 + i)])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("wrote") && text.contains("hosts/node"),
            "{text}"
        );
    }
    assert_eq!(srv.nodes().as_array().unwrap().len(), 8);
    assert_eq!(
        std::fs::read_to_string(hosts.join("node03")).unwrap(),
        "52:54:00:00:00:03,10.0.2.23,node03\n"
    );
    assert!(
        std::fs::read_to_string(tftp.join("pxelinux.cfg/01-52-54-00-00-00-03"))
            .unwrap()
            .contains("LOCALBOOT 0")
    );
    // A name or MAC twice, a bad MAC, a restore without an image: refused.
    for bad in [
        &["add", "node03", "--mac", "52:54:00:00:01:03"][..],
        &["add", "other", "--mac", "52:54:00:00:00:03"],
        &["add", "other", "--mac", "52:54:00:00:00"],
        &["add", "bad_name", "--mac", "52:54:00:00:09:03"],
        &["set", "node03", "restore"],
        &["set", "nosuch", "local"],
    ] {
        let out = rimage()
            .arg("node")
            .arg("--state")
            .arg(&state)
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?} was accepted");
    }

    // Local and unknown MACs boot the disk.
    let exit = "#!ipxe\nexit\n";
    assert_eq!(get(&srv.url("/boot/52:54:00:00:00:03"), &[]).1, exit);
    assert_eq!(get(&srv.url("/boot/02:00:00:00:00:99"), &[]).1, exit);
    assert_eq!(get(&srv.url("/boot/nonsense"), &[]).0, 400);
    let set = srv.node(&["set", "node03", "save", "--image", "n3"]);
    assert!(set.contains("pxelinux.cfg/01-52-54-00-00-00-03"), "{set}");
    let token = srv.token("node03");
    assert_eq!(token.len(), 32);
    // The three forms iPXE may send, and the URLs from the Host header the node used.
    for form in [
        "52:54:00:00:00:03",
        "52-54-00-00-00-03",
        "52%3A54%3A00%3A00%3A00%3A03",
        "52%3a54%3a00%3a00%3a00%3a03",
    ] {
        let (code, script) = get(
            &srv.url(&format!("/boot/{form}")),
            &[("Host", "10.9.8.7:8080")],
        );
        assert_eq!(code, 200);
        assert_eq!(
            script,
            format!(
                "#!ipxe\nkernel http://10.9.8.7:8080/netboot/vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 rimage.mode=save rimage.server=http://10.9.8.7:8080 rimage.node=node03 rimage.token={token} rimage.mac=${{mac}} rimage.ip=${{ip}} rimage.netmask=${{netmask}} rimage.gateway=${{gateway}} rimage.dns=${{dns}}\ninitrd http://10.9.8.7:8080/netboot/initrd.img\nboot\n"
            ),
            "{form}"
        );
    }
    let pxe = std::fs::read_to_string(tftp.join("pxelinux.cfg/01-52-54-00-00-00-03")).unwrap();
    assert!(
        pxe.contains(&format!(
            "rimage.server=http://10.0.2.2:8080 rimage.node=node03 rimage.token={token}"
        )),
        "{pxe}"
    );
    // The job, for the right token only; tokens never in the lists.
    let (code, job) = get(
        &srv.url("/api/v1/job"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(code, 200, "{job}");
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["mode"], "save");
    assert_eq!(job["upload_url"], srv.url("/images/n3"));
    assert_eq!(job["image_url"], serde_json::Value::Null);
    assert_eq!(
        get(&srv.url("/api/v1/job"), &[("Authorization", "Bearer 0123")]).0,
        401
    );
    assert_eq!(get(&srv.url("/api/v1/job"), &[]).0, 401);
    let (_, list) = get(&srv.url("/api/v1/nodes"), &[]);
    assert!(!list.contains(&token) && list.contains("node03"));
    // A new `node set` makes the old token stale.
    srv.node(&["set", "node03", "live"]);
    assert_eq!(
        get(
            &srv.url("/api/v1/job"),
            &[("Authorization", &format!("Bearer {token}"))]
        )
        .0,
        401
    );
    // Report bodies that are not report lines are refused with a reason.
    let t2 = srv.token("node03");
    assert_eq!(
        post(&srv.url("/api/v1/report"), &t2, "{\"event\":\"nope\"}"),
        400
    );
    assert_eq!(
        post(&srv.url("/api/v1/report"), &t2, "\u{0}\u{1}garbage"),
        400
    );
    assert_eq!(
        post(
            &srv.url("/api/v1/report"),
            &t2,
            "{\"event\":\"log\",\"message\":\"hi\"}\n"
        ),
        204
    );
    // State survives a restart of the service.
    drop(srv);
    let srv = Server::start(&root, &state, &["--public-url", "http://head:8080/"]);
    assert_eq!(srv.mode("node03"), "live");
    let (_, script) = get(&srv.url("/boot/52-54-00-00-00-03"), &[]);
    assert!(
        script.contains("kernel http://head:8080/netboot/vmlinuz"),
        "{script}"
    );
    // rm removes its files.
    let rm = srv.node(&["rm", "node07"]);
    assert!(rm.contains("hosts/node07"), "{rm}");
    assert!(!hosts.join("node07").exists());
    assert!(!tftp.join("pxelinux.cfg/01-52-54-00-00-00-07").exists());

    // dnsmasq reads the generated host files.
    let dnsmasq = ["dnsmasq", "/usr/sbin/dnsmasq"]
        .into_iter()
        .find(|d| Path::new(d).is_absolute() && Path::new(d).exists() || have(d));
    match dnsmasq {
        Some(d) => {
            let out = Command::new(if Path::new("/usr/sbin/dnsmasq").exists() {
                "/usr/sbin/dnsmasq"
            } else {
                d
            })
            .arg("--test")
            .arg("--conf-file=/dev/null")
            .arg(format!("--dhcp-hostsdir={}", hosts.display()))
            .arg("--dhcp-range=10.0.2.100,10.0.2.200")
            .output()
            .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dnsmasq --test: {text}");
            assert!(text.contains("syntax check OK"), "{text}");
        }
        None => {
            eprintln!("SKIP (part): dnsmasq is not installed; the DHCP files are not checked by it")
        }
    }
}

#[test]
fn images_are_served_and_uploads_are_checked() {
    if !have("mke2fs") {
        eprintln!("SKIP: needs mke2fs (e2fsprogs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    std::fs::create_dir_all(&root).unwrap();
    let (fs, img) = small_image(dir.path());
    let bytes = std::fs::read(&img).unwrap();
    let max = bytes.len() * 3 / 2;
    let srv = Server::start(&root, &state, &["--max-upload", &max.to_string()]);
    srv.node(&["add", "n1", "--mac", "02:00:00:00:00:01"]);
    srv.node(&["set", "n1", "save", "--image", "one.rimg"]);
    let token = srv.token("n1");
    let admin = srv.admin();
    let up = srv.url("/images/one.rimg");
    // Wrong tokens, and a token whose job saves to another name: refused before the body is
    // read (a client still sending a large body may see the connection closed instead).
    assert_eq!(put(&up, "0000", b"x").0, 401);
    assert_eq!(put(&up, "", b"x").0, 401);
    assert_eq!(put(&srv.url("/images/other.rimg"), &token, b"x").0, 403);
    for code in [
        put(&up, "0000", &bytes).0,
        put(&srv.url("/images/other.rimg"), &token, &bytes).0,
    ] {
        assert!(code == 401 || code == 403 || code == 0, "{code}");
    }
    srv.assert_no_partial();
    // Truncated, corrupt: refused, nothing under the name, nothing left behind.
    for (what, body) in [
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec()),
        ("corrupt", {
            let mut b = bytes.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            b
        }),
        ("followed by garbage", {
            let mut b = bytes.clone();
            b.extend_from_slice(b"trailing");
            b
        }),
        ("not an image", b"hello, world".to_vec()),
        ("empty", Vec::new()),
    ] {
        let (code, msg) = put(&up, &token, &body);
        assert_eq!(code, 400, "{what}: {msg}");
        assert!(msg.contains("error"), "{what}: {msg}");
        assert!(!root.join("one.rimg").exists(), "{what}");
        srv.assert_no_partial();
    }
    // Too large: 413, whether announced or only found while reading (chunked).
    let big = vec![0u8; max + (1 << 20)];
    let (code, msg) = put(&up, &token, &big);
    assert!(code == 413 || code == 0, "{code} {msg}");
    let chunked = agent()
        .put(&up)
        .header("Authorization", format!("Bearer {token}"))
        .send(ureq::SendBody::from_owned_reader(std::io::Cursor::new(big)));
    match chunked {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        // The service may close the connection while the body is still being sent.
        Err(e) => eprintln!("note: chunked oversized upload cut off: {e}"),
    }
    srv.assert_no_partial();
    // The good one, then the same name again: not replaced.
    let (code, msg) = put(&up, &token, &bytes);
    assert_eq!(code, 201, "{msg}");
    assert_eq!(std::fs::read(root.join("one.rimg")).unwrap(), bytes);
    assert_eq!(put(&up, &admin, b"x").0, 409);
    let (code, _) = put(&srv.url("/images/one.rimg?overwrite=true"), &admin, &bytes);
    assert_eq!(code, 201);
    srv.assert_no_partial();

    // Read back: ranges, validators, and `rimage restore URL` / `verify URL`.
    let (code, _) = get(&srv.url("/images/one.rimg"), &[]);
    assert_eq!(code, 200);
    let resp = agent()
        .get(&srv.url("/images/one.rimg"))
        .header("Range", "bytes=10-19")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(resp.headers().contains_key("last-modified"));
    assert_eq!(
        resp.into_body().read_to_vec().unwrap(),
        bytes[10..20].to_vec()
    );
    let stale = agent()
        .get(&srv.url("/images/one.rimg"))
        .header("Range", "bytes=10-19")
        .header("If-Range", "\"another\"")
        .call()
        .unwrap();
    assert_eq!(
        stale.status().as_u16(),
        200,
        "a stale If-Range gets the whole file"
    );
    let fresh = agent()
        .get(&srv.url("/images/one.rimg"))
        .header("Range", "bytes=10-19")
        .header("If-Range", &etag)
        .call()
        .unwrap();
    assert_eq!(fresh.status().as_u16(), 206);
    let target = dir.path().join("restored.img");
    let out = rimage()
        .args(["restore", "-q"])
        .arg(srv.url("/images/one.rimg"))
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_fsck_clean(&target);
    let (_, a) = common::tree::snapshot(&fs).unwrap();
    let (_, b) = common::tree::snapshot(&target).unwrap();
    assert!(a == b, "the restored files differ");
    let (_, list) = get(&srv.url("/api/v1/images"), &[]);
    assert!(
        list.contains("\"one.rimg\"") && list.contains("ext4"),
        "{list}"
    );

    // Nothing outside the root, however asked.
    std::fs::write(dir.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    for path in [
        "/images/../state/state.json",
        "/images/%2e%2e/secret",
        "/images/..%2fsecret",
        "/images//etc/passwd",
        "/images/link",
        "/images/etc/passwd",
        "/images/.hidden",
        "/images/",
    ] {
        let code = raw_status(&srv.addr, path);
        assert!(code == 404 || code == 400, "{path}: {code}");
    }
    for name in ["..", ".x", "a%2fb", "%2e%2e"] {
        let code = put(&srv.url(&format!("/images/{name}")), &admin, b"x").0;
        assert!(
            code == 400 || code == 404 || code == 405,
            "PUT {name}: {code}"
        );
    }
    assert!(!dir.path().join("x").exists());
}

fn tools_missing() -> Option<String> {
    let missing: Vec<&str> = ["losetup", "partx", "sfdisk", "mke2fs", "e2fsck", "blkid"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        return Some(format!("missing {missing:?}"));
    }
    if !rustix::process::geteuid().is_root() {
        return Some("not root (loop devices)".into());
    }
    None
}

/// A 96 MiB GPT disk: an ext4 root with files (free space dirtied first) and an ext2 data
/// partition.
fn source_disk(dir: &Path) -> (PathBuf, LoopDev) {
    let img = dir.join("source-disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\n,64M,L\n,,L\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let lo = LoopDev::with_partitions(&img).expect("loop device");
    let tree = dir.join("root-tree");
    common::tree::populate(&tree, 21);
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/fstab"), "LABEL=root / ext4 defaults 0 1\n").unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-d"])
        .arg(&tree)
        .arg(lo.part(1)));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-L", "data"])
        .arg(lo.part(2)));
    (img, lo)
}

fn spawn_agent(srv: &Server, node: &str, disk: &Path) -> Child {
    rimage()
        .args(["agent", "--server", &srv.url("")])
        .args(["--node", node, "--token", &srv.token(node)])
        .arg("--disk")
        .arg(disk)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (Option<i32>, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| have(b))
}

fn dump_dom(url: &str, screenshot: Option<&Path>) -> String {
    let browser = chromium().unwrap();
    let profile = tempfile::tempdir().unwrap();
    // No --virtual-time-budget: the page's open event stream would hold virtual time still.
    // The rows come from the page's script (the table body is empty in the HTML), so a DOM
    // with rows shows the script ran.
    let mut cmd = Command::new("timeout");
    cmd.args([
        "60",
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    if let Some(s) = screenshot {
        cmd.arg(format!("--screenshot={}", s.display()))
            .arg("--window-size=1400,700");
    } else {
        cmd.arg("--dump-dom");
    }
    let out = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_nodes_save_restore_report_and_dashboard() {
    if let Some(why) = tools_missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    std::fs::create_dir_all(&root).unwrap();
    let (_a_img, a) = source_disk(dir.path());
    let targets: Vec<(PathBuf, LoopDev)> = (0..2)
        .map(|i| {
            let f = dir.path().join(format!("target{i}.img"));
            common::pattern_file(&f, 96 << 20);
            let lo = LoopDev::new(&f).expect("loop device");
            (f, lo)
        })
        .collect();
    let srv = Server::start(&root, &state, &[]);
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        srv.node(&["add", n, "--mac", &format!("02:00:00:00:00:0{i}")]);
    }

    // n1 saves its disk.
    srv.node(&["set", "n1", "save", "--image", "golden"]);
    let (code, t) = finish(spawn_agent(&srv, "n1", &a.dev));
    assert_eq!(code, Some(0), "{t}");
    assert!(root.join("golden/manifest.toml").is_file(), "{t}");
    assert_eq!(srv.mode("n1"), "local", "a successful save is one-shot");
    assert_eq!(srv.last("n1")["ok"], true);
    srv.assert_no_partial();
    // The stored disk checks as a whole.
    run(rimage().args(["verify", "-q"]).arg(root.join("golden")));

    // A stored disk sent as a stream (`rimage send`) is an upload too (admin token); cut
    // short, it is refused and leaves nothing.
    let sent = rimage()
        .arg("send")
        .arg(root.join("golden"))
        .output()
        .unwrap();
    assert!(sent.status.success());
    let stream = sent.stdout;
    let (code, msg) = put(
        &srv.url("/images/copy"),
        &srv.admin(),
        &stream[..stream.len() - 100],
    );
    assert_eq!(code, 400, "{msg}");
    assert!(!root.join("copy").exists());
    srv.assert_no_partial();
    let (code, msg) = put(&srv.url("/images/copy"), &srv.admin(), &stream);
    assert_eq!(code, 201, "{msg}");
    run(rimage().args(["verify", "-q"]).arg(root.join("copy")));

    // n2 and n3 restore it at once.
    srv.node(&["set", "n2", "restore", "--image", "golden"]);
    srv.node(&[
        "set",
        "n3",
        "restore",
        "--image",
        "golden",
        "--post-restore",
        "touch \"$RIMAGE_ROOT/restored-by-n3\"",
    ]);
    let (_, job) = get(
        &srv.url("/api/v1/job"),
        &[("Authorization", &format!("Bearer {}", srv.token("n2")))],
    );
    assert!(
        job.contains(&format!("\"image_url\":\"{}\"", srv.url("/images/golden/"))),
        "{job}"
    );
    let c2 = spawn_agent(&srv, "n2", &targets[0].1.dev);
    let c3 = spawn_agent(&srv, "n3", &targets[1].1.dev);
    let (code2, t2) = finish(c2);
    let (code3, t3) = finish(c3);
    assert_eq!(code2, Some(0), "{t2}");
    assert_eq!(code3, Some(0), "{t3}");
    for n in ["n2", "n3"] {
        assert_eq!(srv.mode(n), "local", "{n}");
        assert_eq!(srv.last(n)["ok"], true, "{n}");
    }
    let (_, want) = common::tree::snapshot(&a.part(1)).unwrap();
    for (i, (_, lo)) in targets.iter().enumerate() {
        run(Command::new("partx").arg("-u").arg(&lo.dev));
        let _ = Command::new("partx").arg("-a").arg(&lo.dev).output();
        common::assert_fsck_clean(&lo.part(1));
        let (_, mut got) = common::tree::snapshot(&lo.part(1)).unwrap();
        if i == 1 {
            assert!(
                got.remove("/restored-by-n3").is_some(),
                "post-restore did not run"
            );
        }
        assert!(got == want, "target {i}: the root's files differ");
    }

    // A failure is reported and the mode stays, so the admin sees it.
    srv.node(&["set", "n3", "restore", "--image", "missing"]);
    let (code, t) = finish(spawn_agent(&srv, "n3", &targets[1].1.dev));
    assert_eq!(code, Some(1), "{t}");
    assert_eq!(srv.mode("n3"), "restore");
    let last = srv.last("n3");
    assert_eq!(last["ok"], false);
    assert!(last["message"].as_str().unwrap().contains("404"), "{last}");
    // A second save to the same name is refused (no --overwrite) and reported.
    srv.node(&["set", "n1", "save", "--image", "golden"]);
    let (code, t) = finish(spawn_agent(&srv, "n1", &a.dev));
    assert_eq!(code, Some(1), "{t}");
    assert!(
        srv.last("n1")["message"].as_str().unwrap().contains("409"),
        "{t}"
    );
    assert_eq!(srv.mode("n1"), "save");
    srv.assert_no_partial();

    // The dashboard while a node reports progress.
    srv.node(&["set", "n2", "restore", "--image", "golden"]);
    let tok = srv.token("n2");
    assert_eq!(
        post(
            &srv.url("/api/v1/report"),
            &tok,
            "{\"event\":\"start\",\"phase\":\"restoring\",\"done_bytes\":0,\"total_bytes\":1000,\"elapsed_secs\":0,\"bytes_per_sec\":0,\"eta_secs\":null}\n{\"event\":\"progress\",\"phase\":\"restoring\",\"done_bytes\":500,\"total_bytes\":1000,\"elapsed_secs\":1,\"bytes_per_sec\":500,\"eta_secs\":1}\n"
        ),
        204
    );
    if chromium().is_none() {
        eprintln!(
            "SKIP (part): chromium is not installed; the dashboard is not loaded in a browser"
        );
        let (_, page) = get(&srv.url("/"), &[]);
        assert!(page.contains("\"n2\""));
        return;
    }
    let dom = dump_dom(&srv.url("/"), None);
    for n in ["n1", "n2", "n3"] {
        assert!(
            dom.contains(&format!("id=\"node-{n}\"")),
            "no row for {n}: {dom}"
        );
    }
    assert!(dom.contains("data-mode=\"restore\""), "{dom}");
    assert!(
        dom.contains("data-percent=\"50.0\""),
        "n2's progress: {dom}"
    );
    assert!(dom.contains("ETA 1s"), "{dom}");
    assert!(dom.contains("class=\"failed\""), "n3's failure: {dom}");
    assert!(dom.contains("fetched its restore job"), "events: {dom}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-dashboard.png");
    let _ = dump_dom(&srv.url("/"), Some(&shot));
    assert!(shot.is_file(), "no screenshot");
    eprintln!("dashboard screenshot: {}", shot.display());
}
