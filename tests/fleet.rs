//! Fleet re-imaging by multicast: a head and four nodes in network namespaces on one bridge.
//! The head multicasts one saved disk with `rimage send | udp-sender`; each node runs
//! `udp-receiver | rimage restore-disk - DISK` onto its own pattern-filled loop disk. One
//! receiver is killed half-way: the others must finish and match the golden disk (table,
//! identities, fsck, every file), and the killed node must not be reported as restored.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::disk::*;
use common::netns::Fleet;
use common::{LoopDev, have};

const NODES: usize = 4;
/// The node whose receiver is killed.
const VICTIM: usize = 3;
const RDV: &str = "239.1.1.1";
const PORTBASE: &str = "9320";

fn missing() -> Option<String> {
    if let Some(why) = tools_missing() {
        return Some(why);
    }
    if let Some(why) = common::netns::unavailable() {
        return Some(why);
    }
    ["udp-sender", "udp-receiver", "tc"]
        .into_iter()
        .find(|t| !have(t))
        .map(|t| format!("missing {t} (apt-get install udpcast iproute2)"))
}

/// Bytes written so far by a process (its `wchar`).
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar: ").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn output_of(mut child: Child) -> (Option<i32>, String) {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    (child.wait().unwrap().code(), text)
}

#[test]
fn one_multicast_stream_reimages_every_node_and_a_dead_receiver_fails_alone() {
    if let Some(why) = missing() {
        eprintln!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = env!("CARGO_BIN_EXE_rimage");
    let (_img, golden) = make_source_disk(d, "gpt", false);
    let saved = d.join("golden");
    let out = Command::new(bin)
        .args(["save-disk", "-q", "--reformat", "4"])
        .arg(&golden.dev)
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stream_len = {
        let out = Command::new(bin).arg("send").arg(&saved).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout.len() as u64
    };

    let disks: Vec<LoopDev> = (0..NODES)
        .map(|i| {
            let f = d.join(format!("node{i}.img"));
            common::pattern_file(&f, 300 << 20);
            LoopDev::new(&f).unwrap()
        })
        .collect();
    let fleet = Fleet::new(&format!("{}", std::process::id() % 1000), NODES).unwrap();

    // Receivers first (they wait for the sender's rendezvous), each piped into restore-disk.
    let mut receivers = Vec::new();
    let mut restores = Vec::new();
    for (i, ns) in fleet.nodes.iter().enumerate() {
        let mut recv = ns
            .cmd("udp-receiver")
            .args(["--interface", "eth0", "--mcast-rdv-address", RDV])
            .args(["--portbase", PORTBASE, "--nokbd", "--start-timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let restore = Command::new(bin)
            .args(["restore-disk", "-"])
            .arg(&disks[i].dev)
            .stdin(recv.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        receivers.push(recv);
        restores.push(restore);
    }
    let t0 = Instant::now();
    let head_tx0 = fleet.head.tx_bytes();
    let mut send = Command::new(bin)
        .arg("send")
        .arg(&saved)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Slow enough that the victim is killed while the stream is flowing.
    let sender = fleet
        .head
        .cmd("udp-sender")
        .args(["--interface", "eth0", "--mcast-rdv-address", RDV])
        .args(["--portbase", PORTBASE, "--nokbd"])
        .args(["--min-receivers", &NODES.to_string(), "--max-wait", "60"])
        .args(["--max-bitrate", "60m", "--retries-until-drop", "30"])
        .stdin(send.stdout.take().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Kill the victim's receiver once a third of the stream has reached its restore.
    let victim = receivers[VICTIM].id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while written(victim) < stream_len / 3 {
        assert!(
            Instant::now() < deadline,
            "the stream did not start flowing to node {VICTIM} ({} bytes)",
            written(victim)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    receivers[VICTIM].kill().unwrap();
    let killed_at = written(victim);

    let (sent, sender_log) = output_of(sender);
    assert!(send.wait().unwrap().success());
    let elapsed = t0.elapsed();
    let head_sent = fleet.head.tx_bytes() - head_tx0;
    assert_eq!(sent, Some(0), "udp-sender: {sender_log}");
    for r in &mut receivers {
        let _ = r.wait();
    }
    let results: Vec<(Option<i32>, String)> = restores.into_iter().map(output_of).collect();
    eprintln!(
        "multicast of a {stream_len}-byte disk stream to {NODES} nodes: {:.1} s, head sent {:.2}× the stream; node {VICTIM}'s receiver killed after {killed_at} bytes",
        elapsed.as_secs_f64(),
        head_sent as f64 / stream_len as f64
    );

    for (i, (code, text)) in results.iter().enumerate() {
        if i == VICTIM {
            assert_ne!(*code, Some(0), "the killed node reported success: {text}");
            assert!(
                text.contains("stopped at partition") && text.contains("not restored"),
                "node {i}: {text}"
            );
        } else {
            assert_eq!(*code, Some(0), "node {i}: {text}");
            assert_same_disk(&golden, &disks[i], &format!("node {i}"));
        }
    }
    // Multicast: each byte leaves the head about once, not once per node.
    assert!(
        head_sent < stream_len * 3 / 2,
        "the head sent {head_sent} bytes for a {stream_len}-byte stream"
    );
}
