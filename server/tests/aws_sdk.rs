//! The AWS SDK for Rust (`aws-sdk-s3`) as a client of `s3-balance dev`: the binary runs as a
//! real process with its three disk backends, and the SDK drives it over 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

/// The gateway process; killed (by PID) when dropped, even when a test fails.
struct Gateway {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_dev() -> Gateway {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_s3-balance"))
        .args(["dev", "--port", &port.to_string(), "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3-balance dev");
    // Ready once it has printed its endpoint line.
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = loop {
        assert!(Instant::now() < deadline, "dev mode did not start in time");
        match lines.next() {
            Some(Ok(line)) if line.trim_start().starts_with("endpoint:") => {
                break line.split_whitespace().last().unwrap().to_owned();
            }
            Some(_) => continue,
            None => panic!("dev mode exited early"),
        }
    };
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Gateway {
        child,
        endpoint,
        _data: data,
    }
}

fn client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "devkey",
            "devsecret",
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn aws_sdk_for_rust_against_dev_mode() {
    let gateway = start_dev_or_env();
    let endpoint = match &gateway {
        Some(g) => g.endpoint.clone(),
        None => std::env::var("S3_BALANCE_TEST_ENDPOINT").unwrap(),
    };
    let s3 = client(&endpoint);

    // Put, get, head, with metadata and a key that needs encoding.
    let key = "dir/é & +%/ünïcode.txt";
    s3.put_object()
        .bucket("dev")
        .key(key)
        .content_type("text/plain")
        .metadata("colour", "blue")
        .body(ByteStream::from_static(b"hello from the Rust SDK"))
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket("dev")
        .key(key)
        .send()
        .await
        .expect("get");
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(
        got.metadata().unwrap().get("colour").map(String::as_str),
        Some("blue")
    );
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"hello from the Rust SDK"
    );
    let ranged = s3
        .get_object()
        .bucket("dev")
        .key(key)
        .range("bytes=6-9")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &ranged.body.collect().await.unwrap().into_bytes()[..],
        b"from"
    );
    let head = s3
        .head_object()
        .bucket("dev")
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(23));

    // A missing key is NoSuchKey.
    let err = s3
        .get_object()
        .bucket("dev")
        .key("missing")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_no_such_key());

    // Listing with a delimiter across the three backends.
    for i in 0..12 {
        s3.put_object()
            .bucket("dev")
            .key(format!("list/{i:02}"))
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket("dev")
        .prefix("list/")
        .max_keys(5)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        keys.extend(
            page.unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    assert_eq!(
        keys,
        (0..12).map(|i| format!("list/{i:02}")).collect::<Vec<_>>()
    );
    let top = s3
        .list_objects_v2()
        .bucket("dev")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = top
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert!(
        prefixes.contains(&"dir/") && prefixes.contains(&"list/"),
        "{prefixes:?}"
    );

    // Multipart: three parts of 5 MiB, 5 MiB, 1 byte.
    let upload = s3
        .create_multipart_upload()
        .bucket("dev")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    let parts_data = [vec![1u8; 5 << 20], vec![2u8; 5 << 20], vec![3u8; 1]];
    let mut completed = Vec::new();
    for (i, data) in parts_data.iter().enumerate() {
        let n = i as i32 + 1;
        let part = s3
            .upload_part()
            .bucket("dev")
            .key("big.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(part.e_tag().unwrap())
                .build(),
        );
    }
    let listed = s3
        .list_parts()
        .bucket("dev")
        .key("big.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), 3);
    s3.complete_multipart_upload()
        .bucket("dev")
        .key("big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let big = s3
        .get_object()
        .bucket("dev")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    let bytes = big.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.len(), (10 << 20) + 1);
    assert_eq!(bytes[0], 1);
    assert_eq!(bytes[5 << 20], 2);
    assert_eq!(bytes[10 << 20], 3);

    // Copy, then delete a batch spread over every backend.
    s3.copy_object()
        .bucket("dev")
        .key("copy.txt")
        .copy_source(format!("dev/{}", urlencode(key)))
        .send()
        .await
        .unwrap();
    let copy = s3
        .get_object()
        .bucket("dev")
        .key("copy.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &copy.body.collect().await.unwrap().into_bytes()[..],
        b"hello from the Rust SDK"
    );
    let objects: Vec<_> = (0..12)
        .map(|i| {
            ObjectIdentifier::builder()
                .key(format!("list/{i:02}"))
                .build()
                .unwrap()
        })
        .collect();
    let deleted = s3
        .delete_objects()
        .bucket("dev")
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), 12);
    assert!(deleted.errors().is_empty());
    let left = s3
        .list_objects_v2()
        .bucket("dev")
        .prefix("list/")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `S3_BALANCE_TEST_ENDPOINT` points the test at a gateway already running (debugging).
fn start_dev_or_env() -> Option<Gateway> {
    match std::env::var("S3_BALANCE_TEST_ENDPOINT") {
        Ok(_) => None,
        Err(_) => Some(start_dev()),
    }
}
