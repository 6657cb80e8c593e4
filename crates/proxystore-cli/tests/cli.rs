//! The `proxystore` binary against real servers: in-process ones (`proxystore_server::spawn`)
//! and `proxystore serve` as a child process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use proxystore::connector::ConnectorConfig;
use proxystore::{Key, Proxy, Reference};
use proxystore_server::{RunningServer, ServerConfig, spawn};

const BIN: &str = env!("CARGO_BIN_EXE_proxystore");
/// No command in these tests may take longer: a hang is a failure, not a stuck run.
const DEADLINE: Duration = Duration::from_secs(60);

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    took: Duration,
}

impl Run {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn line(&self) -> String {
        self.out().trim().to_owned()
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "exit code {} (wanted {code})\nstdout: {}\nstderr: {}",
            self.code,
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
            self.stderr
        );
        self
    }
}

/// Run the binary with `args`, only the given environment, and `stdin` if any.
fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<Vec<u8>>) -> Run {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start proxystore");
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            // The command may exit before reading everything (e.g. refused at once).
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("proxystore {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    }
}

/// Environment pointing the client commands at `server`.
fn env_for(server: &RunningServer) -> Vec<(&'static str, String)> {
    vec![("PROXYSTORE_URL", server.url())]
}

fn pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Deterministic bytes that do not compress or repeat (xorshift).
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn memory_server() -> RunningServer {
    spawn(ServerConfig::default()).unwrap()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn put_file_and_get_file_round_trip_a_few_mib() {
    let server = memory_server();
    let env = env_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let body = data((5 << 20) + 123, 1);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &body).unwrap();

    let put = run(&["put", input.to_str().unwrap()], &pairs(&env), None);
    put.expect_code(0);
    let key = put.line();
    assert!(!key.is_empty() && !key.contains('\n'), "{key:?}");

    let output = dir.path().join("out.bin");
    run(
        &["get", &key, "-o", output.to_str().unwrap()],
        &pairs(&env),
        None,
    )
    .expect_code(0);
    assert!(std::fs::read(&output).unwrap() == body, "bytes differ");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".proxystore-get-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The server holds exactly one object of that size.
    let stat = run(&["stat", "--json"], &pairs(&env), None);
    stat.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["object_count"], 1);
    assert_eq!(v["bytes_used"], body.len() as u64);
}

#[test]
fn put_stdin_and_get_stdout_round_trip_a_few_mib() {
    let server = memory_server();
    let env = env_for(&server);
    let body = data((3 << 20) + 7, 2);
    let put = run(&["put", "-"], &pairs(&env), Some(body.clone()));
    put.expect_code(0);
    let key = put.line();
    let get = run(&["get", &key], &pairs(&env), None);
    get.expect_code(0);
    assert_eq!(get.stdout.len(), body.len());
    assert!(get.stdout == body, "bytes differ");
    // `-o -` is standard output too; an empty input is a valid object.
    let empty = run(&["put", "-"], &pairs(&env), Some(Vec::new()));
    empty.expect_code(0);
    let got = run(&["get", &empty.line(), "-o", "-"], &pairs(&env), None);
    got.expect_code(0);
    assert!(got.stdout.is_empty());
}

#[test]
fn put_under_a_chosen_key_with_ttl() {
    let server = memory_server();
    let env = env_for(&server);
    let put = run(
        &["put", "-", "--key", "run-42/input", "--ttl", "1s"],
        &pairs(&env),
        Some(b"hello".to_vec()),
    );
    put.expect_code(0);
    assert_eq!(put.line(), "run-42/input");
    let get = run(&["get", "run-42/input"], &pairs(&env), None);
    get.expect_code(0);
    assert_eq!(get.stdout, b"hello");
    std::thread::sleep(Duration::from_millis(1500));
    run(&["exists", "run-42/input"], &pairs(&env), None).expect_code(3);
}

#[test]
fn range_get_returns_the_slice_clamped_to_the_object() {
    let server = memory_server();
    let env = env_for(&server);
    let body = data(10_000, 3);
    let key = run(&["put", "-"], &pairs(&env), Some(body.clone())).line();
    for (range, want) in [
        ("100..200", &body[100..200]),
        ("9990..", &body[9990..]),
        ("..5", &body[..5]),
        ("9000..1MiB", &body[9000..]),
        ("1KiB..2KiB", &body[1024..2048]),
    ] {
        let get = run(&["get", &key, "--range", range], &pairs(&env), None);
        get.expect_code(0);
        assert!(
            get.stdout == want,
            "range {range}: {} bytes",
            get.stdout.len()
        );
    }
    // A reversed range is a usage error, caught before any call.
    run(&["get", &key, "--range", "200..100"], &pairs(&env), None).expect_code(2);
}

#[test]
fn stat_in_text_and_json() {
    let server = spawn(ServerConfig::default().max_object_bytes(64 << 20)).unwrap();
    let env = env_for(&server);
    for i in 0..2 {
        run(&["put", "-"], &pairs(&env), Some(data(1000, i))).expect_code(0);
    }
    let text = run(&["stat"], &pairs(&env), None);
    text.expect_code(0);
    let out = text.out();
    for needle in [
        "backend             memory",
        "objects             2",
        "max object size     64.00 MiB (67108864 bytes)",
        "max total bytes     unlimited",
        "token required      no",
        &server.url(),
    ] {
        assert!(out.contains(needle), "{needle:?} not in\n{out}");
    }
    let json = run(&["stat", "--json"], &pairs(&env), None);
    json.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["object_count"], 2);
    assert_eq!(v["bytes_used"], 2000);
    assert_eq!(v["max_object_bytes"], 64 << 20);
    assert_eq!(v["max_total_bytes"], serde_json::Value::Null);
    assert_eq!(v["url"], server.url());
    assert_eq!(v["backend"], "memory");
}

#[test]
fn exists_and_evict() {
    let server = memory_server();
    let env = env_for(&server);
    let k1 = run(&["put", "-"], &pairs(&env), Some(b"one".to_vec())).line();
    let k2 = run(&["put", "-"], &pairs(&env), Some(b"two".to_vec())).line();
    let k3 = run(&["put", "-"], &pairs(&env), Some(b"three".to_vec())).line();

    let e = run(&["exists", &k1], &pairs(&env), None);
    e.expect_code(0);
    assert_eq!(e.line(), "true");
    run(&["evict", &k1], &pairs(&env), None).expect_code(0);
    let e = run(&["exists", &k1], &pairs(&env), None);
    e.expect_code(3);
    assert_eq!(e.line(), "false");
    let quiet = run(&["exists", "-q", &k1], &pairs(&env), None);
    quiet.expect_code(3);
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty());
    // Evicting what is absent is not an error; several keys at once.
    run(&["evict", &k1], &pairs(&env), None).expect_code(0);
    run(&["evict", &k2, &k3, "never-was"], &pairs(&env), None).expect_code(0);
    for k in [&k2, &k3] {
        run(&["exists", "-q", k], &pairs(&env), None).expect_code(3);
    }
    run(&["get", &k2], &pairs(&env), None).expect_code(3);
    // `evict` needs at least one key.
    run(&["evict"], &pairs(&env), None).expect_code(2);
}

#[test]
fn unknown_key_exits_3_and_writes_no_file() {
    let server = memory_server();
    let env = env_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.bin");
    let get = run(
        &["get", "no-such-key", "-o", out.to_str().unwrap()],
        &pairs(&env),
        None,
    );
    get.expect_code(3);
    assert!(get.stderr.contains("no-such-key"), "{}", get.stderr);
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn missing_or_wrong_token_exits_4_and_the_right_one_works() {
    let server = spawn(ServerConfig::default().token("s3cret-t0ken")).unwrap();
    let url = server.url();
    let no_token = [("PROXYSTORE_URL", url.as_str())];
    for args in [
        &["put", "-"][..],
        &["get", "k"],
        &["stat"],
        &["exists", "k"],
        &["evict", "k"],
    ] {
        let r = run(args, &no_token, Some(b"x".to_vec()));
        r.expect_code(4);
        assert!(r.stderr.contains("PROXYSTORE_TOKEN"), "{}", r.stderr);
    }
    let wrong = [
        ("PROXYSTORE_URL", url.as_str()),
        ("PROXYSTORE_TOKEN", "not-it"),
    ];
    run(&["put", "-"], &wrong, Some(b"x".to_vec())).expect_code(4);
    run(&["stat"], &wrong, None).expect_code(4);
    // The flag wins over the variable.
    run(&["stat", "--token", "s3cret-t0ken"], &wrong, None).expect_code(0);

    let right = [
        ("PROXYSTORE_URL", url.as_str()),
        ("PROXYSTORE_TOKEN", "s3cret-t0ken"),
    ];
    let put = run(&["put", "-"], &right, Some(b"payload".to_vec()));
    put.expect_code(0);
    let get = run(&["get", &put.line()], &right, None);
    get.expect_code(0);
    assert_eq!(get.stdout, b"payload");
    // Nothing printed a token.
    for r in [&put, &get] {
        assert!(!r.out().contains("s3cret") && !r.stderr.contains("s3cret"));
    }
}

#[test]
fn object_over_the_server_limit_exits_6() {
    let server = spawn(ServerConfig::default().max_object_bytes(1024)).unwrap();
    let env = env_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.bin");
    std::fs::write(&input, data(4096, 4)).unwrap();
    // Known size (a file): refused up front; unknown size (stdin): refused part-way.
    let r = run(&["put", input.to_str().unwrap()], &pairs(&env), None);
    r.expect_code(6);
    assert!(r.stderr.contains("limit"), "{}", r.stderr);
    run(&["put", "-"], &pairs(&env), Some(data(4096, 4))).expect_code(6);
    let stat = run(&["stat", "--json"], &pairs(&env), None);
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["object_count"], 0, "a refused put left something behind");
}

#[test]
fn unreachable_server_exits_5_quickly() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let env = [("PROXYSTORE_URL", url.as_str())];
    for args in [
        &["put", "-"][..],
        &["get", "k"],
        &["stat"],
        &["exists", "k"],
        &["evict", "k"],
    ] {
        let r = run(args, &env, Some(b"x".to_vec()));
        r.expect_code(5);
        assert!(r.stderr.contains("proxystore serve"), "{}", r.stderr);
        assert!(
            r.took < Duration::from_secs(10),
            "{args:?} took {:?}",
            r.took
        );
    }
}

#[test]
fn a_server_that_never_answers_times_out_with_5() {
    // Connections are accepted by the kernel but nobody speaks HTTP/2 on them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let env = [
        ("PROXYSTORE_URL", url.as_str()),
        ("PROXYSTORE_TIMEOUT", "1s"),
        ("PROXYSTORE_CONNECT_TIMEOUT", "1s"),
    ];
    for args in [&["stat"][..], &["get", "k"], &["put", "-"]] {
        let r = run(args, &env, Some(b"x".to_vec()));
        r.expect_code(5);
        assert!(
            r.took < Duration::from_secs(15),
            "{args:?} took {:?}",
            r.took
        );
    }
    drop(silent);
}

#[test]
fn put_reference_resolves_in_another_process_and_inspects() {
    let server = memory_server();
    let env = env_for(&server);
    let body = data(300_000, 5);
    let put = run(
        &[
            "put",
            "-",
            "--reference",
            "--store",
            "cli-test-reference",
            "--type-name",
            "alloc::vec::Vec<u8>",
        ],
        &pairs(&env),
        Some(body.clone()),
    );
    put.expect_code(0);
    let b64 = put.line();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    assert!(bytes.len() < 256, "{} bytes", bytes.len());
    let r = Reference::from_bytes(&bytes).unwrap();
    assert_eq!(r.store, "cli-test-reference");
    assert_eq!(r.connector.kind(), "grpc");
    assert_eq!(r.size, body.len() as u64);
    assert_eq!(r.codec, proxystore::Codec::Raw);
    assert!(r.digest.unwrap().matches(&body));
    // This test process plays the consumer: the proxy rebuilds the store from the reference.
    let key = r.key.clone();
    let proxy: Proxy<Vec<u8>> = Proxy::from_reference(r);
    assert!(*proxy == body, "resolved bytes differ");

    let shown = run(&["inspect", &b64], &[], None);
    shown.expect_code(0);
    let text = shown.out();
    for needle in [
        "base64 of protobuf",
        "cli-test-reference",
        "grpc",
        &server.url(),
        key.as_str(),
        "292.97 KiB (300000 bytes)",
        "xxh3:",
        "raw",
        "alloc::vec::Vec<u8>",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("evict on resolve") && l.ends_with(" no")),
        "{text}"
    );

    // Hex from a file, JSON from standard input.
    let hex = run(
        &["put", "-", "--reference=hex", "--evict-on-resolve"],
        &pairs(&env),
        Some(b"small".to_vec()),
    );
    hex.expect_code(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ref.txt");
    std::fs::write(&file, format!("{}\n", hex.line())).unwrap();
    let at = format!("@{}", file.display());
    let shown = run(&["inspect", "--json", &at], &[], None);
    shown.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["input"], "hex");
    assert_eq!(v["size"], 5);
    assert_eq!(v["evict_on_resolve"], true);
    assert_eq!(v["store"], server.url(), "default store name is the URL");
    assert_eq!(v["connector"]["options"]["address"], server.url());

    let json = run(&["put", "-", "--json"], &pairs(&env), Some(b"js".to_vec()));
    json.expect_code(0);
    let r = Reference::from_json(&json.line()).unwrap();
    let shown = run(&["inspect", "--json", "-"], &[], Some(json.stdout.clone()));
    shown.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["input"], "json");
    assert_eq!(v["key"], r.key.to_string());
    // A proxy's JSON form and the raw protobuf bytes are accepted too.
    let wrapped = format!("{{\"$proxy\": {}}}", json.line());
    let shown = run(&["inspect", "--json", &wrapped], &[], None);
    shown.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["input"], "proxy-json");
    let raw = dir.path().join("ref.bin");
    std::fs::write(&raw, r.to_bytes()).unwrap();
    let shown = run(
        &["inspect", "--json", &format!("@{}", raw.display())],
        &[],
        None,
    );
    shown.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["input"], "protobuf");

    // Inspecting fetched nothing: the evict-on-resolve object is still there.
    let key = serde_json::from_slice::<serde_json::Value>(
        &run(&["inspect", "--json", &hex.line()], &[], None).stdout,
    )
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&["exists", &key], &pairs(&env), None).expect_code(0);
}

#[test]
fn references_name_the_token_variable_never_the_token() {
    let server = spawn(ServerConfig::default().token("t0p-s3cret")).unwrap();
    let url = server.url();
    let env = [
        ("PROXYSTORE_URL", url.as_str()),
        ("PROXYSTORE_TOKEN", "t0p-s3cret"),
    ];
    for form in ["--reference", "--reference=hex", "--json"] {
        let put = run(&["put", "-", form], &env, Some(b"x".to_vec()));
        put.expect_code(0);
        let shown = run(&["inspect", &put.line()], &[], None);
        shown.expect_code(0);
        assert!(
            shown.out().contains("token_env") && shown.out().contains("PROXYSTORE_TOKEN"),
            "{}",
            shown.out()
        );
        let all = format!("{}{}", put.out(), shown.out());
        assert!(!all.contains("t0p-s3cret"), "{all}");
        let decoded = match form {
            "--json" => put.out(),
            "--reference=hex" => String::from_utf8_lossy(
                &(0..put.line().len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&put.line()[i..i + 2], 16).unwrap())
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(put.line())
                    .unwrap(),
            )
            .into_owned(),
        };
        assert!(!decoded.contains("t0p-s3cret"), "{decoded}");
    }
}

#[test]
fn inspect_redacts_secrets_of_any_connector() {
    let mut r = Reference::new(
        "secret-store",
        ConnectorConfig::new(
            "redis",
            serde_json::json!({
                "url": "redis://admin:hunter2@127.0.0.1:6379/0",
                "password": "hunter2",
                "token_env": "REDIS_TOKEN",
            }),
        ),
        Key::from("k-1"),
    );
    r.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    let b64 = base64::engine::general_purpose::STANDARD.encode(r.to_bytes());
    for args in [&["inspect", &b64][..], &["inspect", "--json", &b64]] {
        let shown = run(args, &[], None);
        shown.expect_code(0);
        let out = shown.out();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
        assert!(out.contains("REDIS_TOKEN"), "{out}");
        assert!(
            out.contains("redis://admin:<redacted>@127.0.0.1:6379/0"),
            "{out}"
        );
        assert!(out.contains("0af7651916cd43dd8448eb211c80319c"), "{out}");
    }
}

/// Terminal controls an untrusted reference may carry: a window title (OSC), a colour (CSI),
/// new lines, a carriage return, a C1 next-line and a right-to-left override.
const HOSTILE: &str = "\x1b]0;title\x07\x1b[31mred\nforged: line\rover\u{85}nel\u{202e}desrever";

/// Whether `text` holds any raw character that could steer a terminal.
fn has_terminal_controls(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

#[test]
fn inspect_escapes_terminal_controls_of_a_hostile_reference() {
    let mut r = Reference::new(
        format!("store{HOSTILE}"),
        ConnectorConfig::new(
            "file",
            serde_json::json!({ format!("dir{HOSTILE}"): format!("/tmp/{HOSTILE}") }),
        ),
        Key::from(format!("key{HOSTILE}").as_str()),
    );
    r.type_name = format!("type{HOSTILE}");
    r.tracestate = format!("vendor={HOSTILE}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(r.to_bytes());

    let shown = run(&["inspect", &b64], &[], None);
    shown.expect_code(0);
    let text = shown.out();
    assert!(!has_terminal_controls(&text), "{text:?}");
    // One line per field: the 13 rows of a reference with one connector option.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13, "{text}");
    let escaped = r"\u{1b}]0;title\u{7}\u{1b}[31mred\nforged: line\rover\u{85}nel\u{202e}desrever";
    for (field, value) in [
        ("store ", format!("store{escaped}")),
        ("key ", format!("key{escaped}")),
        ("type name ", format!("type{escaped}")),
        ("tracestate ", format!("vendor={escaped}")),
        (&format!("  dir{escaped} "), format!("/tmp/{escaped}")),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(field) && l.ends_with(&format!("  {value}"))),
            "no line {field:?} ... {value:?} in\n{text}"
        );
    }

    // JSON carries the exact values.
    let shown = run(&["inspect", "--json", &b64], &[], None);
    shown.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["store"], r.store);
    assert_eq!(v["key"], r.key.as_str());
    assert_eq!(v["type_name"], r.type_name);
    assert_eq!(v["tracestate"], r.tracestate);
    assert_eq!(
        v["connector"]["options"][format!("dir{HOSTILE}")],
        format!("/tmp/{HOSTILE}")
    );
}

#[test]
fn errors_escape_terminal_controls_of_keys() {
    let server = memory_server();
    let env = env_for(&server);
    let key = format!("key{HOSTILE}");
    for args in [
        &["get", key.as_str()][..],
        &["exists", key.as_str()],
        &["evict", key.as_str()],
        &["get", key.as_str(), "--url", "http://127.0.0.1:1"],
        &["inspect", &format!("@/no/such/{HOSTILE}")],
    ] {
        let r = run(args, &pairs(&env), None);
        assert!(
            !has_terminal_controls(&r.stderr),
            "{args:?}: {:?}",
            r.stderr
        );
        assert!(!has_terminal_controls(&r.out()), "{args:?}: {:?}", r.out());
        // One line per message: nothing in the key starts a line of its own.
        assert!(
            r.stderr
                .lines()
                .all(|l| l.starts_with("error: ") || l.starts_with("hint: ")),
            "{args:?}: {}",
            r.stderr
        );
        if args[0] != "evict" {
            assert_ne!(r.code, 0, "{args:?}");
        }
    }
}

#[test]
fn inspect_rejects_garbage_with_exit_7() {
    let r = Reference::new(
        "s",
        ConnectorConfig::new("file", serde_json::json!({"directory": "/tmp/x"})),
        Key::from("3f1c2a9e-8d7b-4c6a-9e5f-0a1b2c3d4e5f"),
    );
    let bytes = r.to_bytes();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let truncated = b64(&bytes[..bytes.len() / 2]);
    let cut_short = b64(&bytes[..bytes.len() - 3]);
    let json = r.to_json();
    let json_truncated = &json[..json.len() - 10];
    for input in [
        "hello, world",
        "",
        "   ",
        truncated.as_str(),
        cut_short.as_str(),
        "deadbeef",
        json_truncated,
        "{\"version\": 1, \"store\": \"s\"}",
        "{\"version\": 99, \"store\": \"s\", \"connector\": {\"kind\": \"file\"}, \"key\": \"k\"}",
    ] {
        let shown = run(&["inspect", input], &[], None);
        shown.expect_code(7);
        assert!(shown.stdout.is_empty());
        assert!(
            shown.stderr.starts_with("error: ") && shown.stderr.len() > 20,
            "{input:?}: {}",
            shown.stderr
        );
    }
    // Binary garbage from a file, and on standard input.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, data(100, 9)).unwrap();
    run(&["inspect", &format!("@{}", junk.display())], &[], None).expect_code(7);
    run(&["inspect", "-"], &[], Some(data(100, 10))).expect_code(7);
    // A file that is not there is an ordinary failure.
    let missing = run(&["inspect", "@/definitely/not/here"], &[], None);
    missing.expect_code(1);
    assert!(missing.stderr.contains("cannot open"), "{}", missing.stderr);
}

/// `proxystore serve` in a child process; killed when dropped.
struct ServeChild {
    child: Child,
    url: String,
}

impl ServeChild {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start proxystore serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("proxystore serve printed no URL; stderr:\n{err}");
            }
        };
        let url = line
            .strip_prefix("proxystore listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        ServeChild { child, url }
    }

    /// Send SIGTERM and wait for the exit code.
    fn terminate(mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_runs_the_store_and_stops_on_sigterm() {
    let server = ServeChild::start(&["--port", "0"], &[]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let url = server.url.clone();
    let env = [("PROXYSTORE_URL", url.as_str())];
    let body = data(2 << 20, 11);
    let key = run(&["put", "-"], &env, Some(body.clone())).line();
    let get = run(&["get", &key], &env, None);
    get.expect_code(0);
    assert!(get.stdout == body);
    assert_eq!(server.terminate(), 0);
    // Gone: clients now get the unreachable code.
    run(&["stat"], &env, None).expect_code(5);
}

#[test]
fn serve_file_backend_with_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let server = ServeChild::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "file",
            "--directory",
            objects.to_str().unwrap(),
        ],
        &[("PROXYSTORE_TOKEN", "serve-t0ken")],
    );
    let url = server.url.clone();
    let env = [
        ("PROXYSTORE_URL", url.as_str()),
        ("PROXYSTORE_TOKEN", "serve-t0ken"),
    ];
    let input = dir.path().join("in.bin");
    let body = data(1 << 20, 12);
    std::fs::write(&input, &body).unwrap();
    let key = run(&["put", input.to_str().unwrap()], &env, None).line();
    let stat = run(&["stat", "--json"], &env, None);
    stat.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(v["backend"], "file");
    assert_eq!(v["auth_required"], true);
    assert!(run(&["get", &key], &env, None).stdout == body);
    run(&["stat"], &[("PROXYSTORE_URL", url.as_str())], None).expect_code(4);
    assert_eq!(server.terminate(), 0);
}

#[test]
fn serve_usage_errors_exit_2() {
    // The file backend needs a directory.
    let r = run(&["serve", "--port", "0", "--backend", "file"], &[], None);
    r.expect_code(2);
    assert!(r.stderr.contains("--directory"), "{}", r.stderr);
}

#[test]
fn help_explains_commands_environment_and_exit_codes() {
    let top = run(&["--help"], &[], None);
    top.expect_code(0);
    let text = top.out();
    for needle in [
        "serve",
        "put",
        "get",
        "stat",
        "exists",
        "evict",
        "inspect",
        "demo",
        "PROXYSTORE_URL",
        "PROXYSTORE_TOKEN",
        "Exit codes:",
        "3  not found",
        "4  unauthorized",
        "5  unreachable",
        "7  invalid data",
        "Examples:",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in top-level help:\n{text}"
        );
    }
    for (cmd, needles) in [
        (
            "put",
            &[
                "FILE|-",
                "--reference",
                "--json",
                "--store",
                "PROXYSTORE_URL",
                "PROXYSTORE_TOKEN",
                "Examples:",
            ][..],
        ),
        (
            "get",
            &["--range", "--output", "PROXYSTORE_TIMEOUT", "Examples:"],
        ),
        (
            "serve",
            &[
                "--listen",
                "--port",
                "--backend",
                "--max-object-bytes",
                "PROXYSTORE_TOKEN",
                "SIGTERM",
                "Examples:",
            ],
        ),
        (
            "inspect",
            &["@FILE", "base64", "hex", "JSON", "<redacted>", "Examples:"],
        ),
        ("stat", &["--json", "Examples:"]),
        ("exists", &["--quiet", "Examples:"]),
        ("evict", &["KEY", "Examples:"]),
    ] {
        let help = run(&[cmd, "--help"], &[], None);
        help.expect_code(0);
        for needle in needles {
            assert!(
                help.out().contains(needle),
                "{needle:?} not in `{cmd} --help`:\n{}",
                help.out()
            );
        }
    }
    // Usage errors are clap's code 2.
    run(&["get"], &[], None).expect_code(2);
    run(&["frobnicate"], &[], None).expect_code(2);
    run(&["put", "-", "--store", "x"], &[], None).expect_code(2);
    run(&["put", "-", "--timeout", "soon"], &[], None).expect_code(2);
}

#[test]
fn local_input_problems_are_clear() {
    let server = memory_server();
    let env = env_for(&server);
    let dir = tempfile::tempdir().unwrap();
    let r = run(&["put", dir.path().to_str().unwrap()], &pairs(&env), None);
    r.expect_code(2);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    let missing = dir.path().join("missing.bin");
    let r = run(&["put", missing.to_str().unwrap()], &pairs(&env), None);
    r.expect_code(1);
    assert!(r.stderr.contains("cannot open"), "{}", r.stderr);
    // A bad URL is a usage error.
    run(&["stat", "--url", "http://[::1"], &[], None).expect_code(2);
}

#[test]
fn a_reader_that_stops_early_ends_get_quietly() {
    let server = memory_server();
    let body = data(8 << 20, 13);
    let key = run(&["put", "-"], &pairs(&env_for(&server)), Some(body.clone())).line();
    // `proxystore get KEY | head -c 10`: the reader takes 10 bytes and closes the pipe.
    let mut child = Command::new(BIN)
        .args(["get", &key])
        .env_clear()
        .env("PROXYSTORE_URL", server.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(first, body[..10]);
    drop(stdout);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < DEADLINE, "get did not stop");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[cfg(feature = "tls")]
#[test]
fn serve_and_clients_over_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = ServeChild::start(
        &[
            "--port",
            "0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let env = [
        ("PROXYSTORE_URL", server.url.as_str()),
        ("PROXYSTORE_CA_FILE", cert.to_str().unwrap()),
        ("PROXYSTORE_TLS_DOMAIN", "localhost"),
    ];
    let body = data(3 << 20, 14);
    let put = run(&["put", "-", "--reference"], &env, Some(body.clone()));
    put.expect_code(0);
    let shown = run(&["inspect", "--json", &put.line()], &[], None);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["connector"]["options"]["tls_domain"], "localhost");
    let get = run(&["get", v["key"].as_str().unwrap()], &env, None);
    get.expect_code(0);
    assert!(get.stdout == body);
    // Without the CA the certificate is not trusted: a failure, not a hang.
    let untrusted = run(
        &["stat", "--retries", "0"],
        &[("PROXYSTORE_URL", server.url.as_str())],
        None,
    );
    assert_ne!(untrusted.code, 0, "{}", untrusted.stderr);
    drop(server);
}

/// Run `proxystore put` with `args`, feeding its standard input from `feed` (which writes and
/// pauses as it likes, then drops the pipe).
fn put_fed(
    args: &[&str],
    env: &[(&str, &str)],
    feed: impl FnOnce(&mut std::process::ChildStdin) + Send + 'static,
) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start proxystore");
    let mut pipe = child.stdin.take().unwrap();
    std::thread::spawn(move || feed(&mut pipe));
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The issue's reproduction: a producer that pauses longer than `--timeout` makes the put fail
/// (exit 5) with a message about the input, not the server, and nothing is stored, on the
/// memory and file backends; a producer that only trickles keeps the upload alive.
#[test]
fn a_put_whose_input_stalls_stores_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    for server in [
        memory_server(),
        spawn(ServerConfig::default().file(dir.path())).unwrap(),
    ] {
        let env = env_for(&server);
        let put = put_fed(
            &["put", "--timeout", "1s", "--key", "partial", "-"],
            &pairs(&env),
            |pipe| {
                let _ = pipe.write_all(&data(3_000_000, 1));
                std::thread::sleep(Duration::from_secs(4));
                let _ = pipe.write_all(&data(1_000_000, 2));
            },
        );
        put.expect_code(5);
        assert!(
            put.stderr.contains("standard input sent nothing"),
            "{}",
            put.stderr
        );
        assert!(
            !put.stderr.contains("is a server running"),
            "{}",
            put.stderr
        );
        // The server notices the cancelled call on its own time.
        let start = Instant::now();
        loop {
            let exists = run_exists(&env, "partial");
            let stat = run(&["stat", "--json"], &pairs(&env), None);
            let v: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
            if v["bytes_in_flight"] == 0 {
                assert_eq!(exists, 3, "a cut-off put was stored (exit 3: not found)");
                assert_eq!(v["object_count"], 0);
                break;
            }
            assert!(start.elapsed() < DEADLINE, "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }

        // 64 KiB every 300 ms for about 3 s, with a 1 s timeout: slow, never silent.
        let put = put_fed(
            &["put", "--timeout", "1s", "--key", "trickle", "-"],
            &pairs(&env),
            |pipe| {
                for i in 0..10 {
                    let _ = pipe.write_all(&data(64 << 10, i));
                    std::thread::sleep(Duration::from_millis(300));
                }
            },
        );
        put.expect_code(0);
        let got = run(&["get", "trickle"], &pairs(&env), None);
        got.expect_code(0);
        let expected: Vec<u8> = (0..10).flat_map(|i| data(64 << 10, i)).collect();
        assert!(got.stdout == expected, "the trickled object differs");
    }
}

fn run_exists(env: &[(&'static str, String)], key: &str) -> i32 {
    run(&["exists", "--quiet", key], &pairs(env), None).code
}
