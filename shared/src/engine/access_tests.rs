//! Bucket ownership, canned ACLs and CORS through the engine, as clients see them.

use http::{Method, StatusCode};

use super::tests::{auth_harness, content_md5, signed, signed_with, tags, Harness};
use crate::config::{CredentialConfig, Secret};

/// The auth harness (admin `gwkey`, scoped read-only `reader`) with two ordinary users.
fn users() -> Harness {
    let h = auth_harness();
    let mut config = (*h.engine.config()).clone();
    for name in ["alice", "bob"] {
        config.api.credentials.push(CredentialConfig {
            access_key: name.into(),
            secret_key: Secret::new(format!("{name}-secret")),
            buckets: None,
            read_only: false,
            admin: false,
        });
    }
    h.engine.set_config(std::sync::Arc::new(config));
    h
}

fn as_user(
    h: &Harness,
    user: &str,
    method: Method,
    target: &str,
    body: &[u8],
) -> super::tests::Answer {
    signed(h, method, target, user, &format!("{user}-secret"), body)
}

fn code(a: &super::tests::Answer) -> String {
    tags(&a.text(), "Code").join("")
}

const CORS: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example.com</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedHeader>*</AllowedHeader>\
    <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule></CORSConfiguration>";

#[test]
fn a_created_bucket_belongs_to_its_creator() {
    let h = users();
    assert_eq!(
        as_user(&h, "alice", Method::PUT, "/alices", b"").status,
        StatusCode::OK
    );
    assert_eq!(
        as_user(&h, "alice", Method::PUT, "/alices/k", b"mine").status,
        StatusCode::OK
    );
    // Bob may neither read, write, list nor delete it, nor take its name.
    for (method, target) in [
        (Method::GET, "/alices/k"),
        (Method::PUT, "/alices/k"),
        (Method::GET, "/alices"),
        (Method::DELETE, "/alices/k"),
        (Method::DELETE, "/alices"),
    ] {
        let r = as_user(&h, "bob", method.clone(), target, b"");
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::FORBIDDEN, "AccessDenied".into()),
            "{method} {target}"
        );
    }
    let taken = as_user(&h, "bob", Method::PUT, "/alices", b"");
    assert_eq!(
        (taken.status, code(&taken)),
        (StatusCode::CONFLICT, "BucketAlreadyExists".into())
    );
    assert_eq!(
        as_user(&h, "alice", Method::GET, "/alices/k", b"").text(),
        "mine",
        "unchanged"
    );
    // ListBuckets shows only the caller's own; an admin sees all.
    let names = |user: &str, secret: &str| {
        tags(
            &signed(&h, Method::GET, "/", user, secret, b"").text(),
            "Name",
        )
    };
    assert_eq!(
        names("alice", "alice-secret"),
        ["alices", "photos", "plain"]
    );
    assert_eq!(names("bob", "bob-secret"), ["photos", "plain"]);
    assert_eq!(names("gwkey", "gwsecret"), ["alices", "photos", "plain"]);
    // The admin may use it; its owner is shown in its ACL.
    assert_eq!(
        signed(&h, Method::GET, "/alices/k", "gwkey", "gwsecret", b"").text(),
        "mine"
    );
    let acl = as_user(&h, "alice", Method::GET, "/alices?acl", b"").text();
    assert_eq!(tags(&acl, "ID"), ["alice", "alice"], "{acl}");
    // Bob's own bucket is his.
    assert_eq!(
        as_user(&h, "bob", Method::PUT, "/bobs", b"").status,
        StatusCode::OK
    );
    assert_eq!(
        as_user(&h, "alice", Method::GET, "/bobs", b"").status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn public_read_lets_anyone_read_and_no_one_else_write() {
    let h = users();
    let r = signed_with(
        &h,
        Method::PUT,
        "/pics",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "public-read")],
        b"",
    );
    assert_eq!(r.status, StatusCode::OK);
    as_user(&h, "alice", Method::PUT, "/pics/cat.jpg", b"meow");
    assert_eq!(h.get("/pics/cat.jpg").text(), "meow", "anonymous read");
    assert_eq!(
        h.get("/pics?list-type=2").status,
        StatusCode::OK,
        "anonymous list"
    );
    assert_eq!(
        as_user(&h, "bob", Method::GET, "/pics/cat.jpg", b"").text(),
        "meow"
    );
    for r in [
        h.put("/pics/cat.jpg", b"evil"),
        as_user(&h, "bob", Method::PUT, "/pics/cat.jpg", b"evil"),
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // Nor may others read or change its ACL.
    assert_eq!(h.get("/pics?acl").status, StatusCode::FORBIDDEN);
    let r = signed_with(
        &h,
        Method::PUT,
        "/pics?acl",
        "bob",
        "bob-secret",
        &[("x-amz-acl", "private")],
        b"",
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let acl = as_user(&h, "alice", Method::GET, "/pics?acl", b"").text();
    assert!(
        acl.contains(
            "<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ"
        ),
        "{acl}"
    );
    // Back to private: anonymous reads stop at once on this instance.
    let r = signed_with(
        &h,
        Method::PUT,
        "/pics?acl",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "private")],
        b"",
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(h.get("/pics/cat.jpg").status, StatusCode::FORBIDDEN);
    assert_eq!(
        as_user(&h, "alice", Method::GET, "/pics/cat.jpg", b"").text(),
        "meow"
    );
    // The same by an AccessControlPolicy body, and the grants the gateway does not keep.
    let public = crate::acl::access_control_policy("alice", crate::acl::CannedAcl::PublicRead);
    assert_eq!(
        as_user(&h, "alice", Method::PUT, "/pics?acl", public.as_bytes()).status,
        StatusCode::OK
    );
    assert_eq!(h.get("/pics/cat.jpg").text(), "meow");
    let r = signed_with(
        &h,
        Method::PUT,
        "/pics?acl",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "public-read-write")],
        b"",
    );
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::NOT_IMPLEMENTED, "NotImplemented".into())
    );
    let r = signed_with(
        &h,
        Method::PUT,
        "/pics/x",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "authenticated-read")],
        b"x",
    );
    assert_eq!(
        r.status,
        StatusCode::NOT_IMPLEMENTED,
        "an object ACL the gateway cannot keep is refused"
    );
    assert!(h.holders("pics/x").is_empty(), "and nothing written");
    // A configured bucket's ACL is the config's.
    let r = signed_with(
        &h,
        Method::PUT,
        "/photos?acl",
        "gwkey",
        "gwsecret",
        &[("x-amz-acl", "public-read")],
        b"",
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[test]
fn cors_rules_answer_preflights_and_mark_answers() {
    let h = users();
    as_user(&h, "alice", Method::PUT, "/web", b"");
    as_user(&h, "alice", Method::PUT, "/web/page.txt", b"hello");
    let preflight = |origin: &str, method: &str| {
        h.send(
            Method::OPTIONS,
            "/web/page.txt",
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type"),
            ],
            b"",
        )
    };
    let r = preflight("https://app.example.com", "PUT");
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::FORBIDDEN, "AccessForbidden".into()),
        "no rules yet"
    );
    assert_eq!(
        as_user(&h, "alice", Method::GET, "/web?cors", b"").status,
        StatusCode::NOT_FOUND
    );
    // PutBucketCors needs Content-MD5, as on AWS.
    let r = as_user(&h, "alice", Method::PUT, "/web?cors", CORS.as_bytes());
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let md5 = content_md5(CORS.as_bytes());
    let r = signed_with(
        &h,
        Method::PUT,
        "/web?cors",
        "alice",
        "alice-secret",
        &[("content-md5", &md5)],
        CORS.as_bytes(),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = as_user(&h, "alice", Method::GET, "/web?cors", b"").text();
    assert_eq!(tags(&r, "AllowedMethod"), ["GET", "PUT"]);

    let r = preflight("https://app.example.com", "PUT");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        preflight("https://evil.example.com", "PUT").status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        preflight("https://app.example.com", "DELETE").status,
        StatusCode::FORBIDDEN
    );
    let r = h.send(Method::OPTIONS, "/web/page.txt", &[], b"");
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::BAD_REQUEST, "BadRequest".into())
    );
    assert_eq!(
        h.send(
            Method::OPTIONS,
            "/nothere/k",
            &[
                ("origin", "https://a"),
                ("access-control-request-method", "GET")
            ],
            b""
        )
        .status,
        StatusCode::NOT_FOUND
    );

    // The answers themselves carry the headers for an allowed origin, errors included.
    let get = signed_with(
        &h,
        Method::GET,
        "/web/page.txt",
        "alice",
        "alice-secret",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(get.text(), "hello");
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(get.header("access-control-expose-headers"), Some("ETag"));
    let denied = h.send(
        Method::GET,
        "/web/page.txt",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let forged = signed_with(
        &h,
        Method::GET,
        "/web/page.txt",
        "alice",
        "wrong-secret",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(code(&forged), "SignatureDoesNotMatch");
    assert_eq!(
        forged.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let other = signed_with(
        &h,
        Method::GET,
        "/web/page.txt",
        "alice",
        "alice-secret",
        &[("origin", "https://evil.example.com")],
        b"",
    );
    assert_eq!(other.header("access-control-allow-origin"), None);

    // Only the owner changes them; DeleteBucketCors removes them.
    assert_eq!(
        as_user(&h, "bob", Method::DELETE, "/web?cors", b"").status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        as_user(&h, "alice", Method::DELETE, "/web?cors", b"").status,
        StatusCode::NO_CONTENT
    );
    let r = as_user(&h, "alice", Method::GET, "/web?cors", b"");
    assert_eq!(code(&r), "NoSuchCORSConfiguration");
    assert_eq!(
        preflight("https://app.example.com", "PUT").status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn configured_cors_rules_apply_to_configured_buckets() {
    let h = users();
    let mut config = (*h.engine.config()).clone();
    config.virtual_buckets[0].cors = crate::cors::parse_configuration(CORS.as_bytes()).unwrap();
    h.engine.set_config(std::sync::Arc::new(config));
    let r = h.send(
        Method::OPTIONS,
        "/photos/a",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    );
    assert_eq!(r.status, StatusCode::OK);
    let r = signed(&h, Method::GET, "/photos?cors", "gwkey", "gwsecret", b"");
    assert_eq!(
        tags(&r.text(), "AllowedOrigin"),
        ["https://app.example.com"]
    );
    let md5 = content_md5(CORS.as_bytes());
    let r = signed_with(
        &h,
        Method::PUT,
        "/photos?cors",
        "gwkey",
        "gwsecret",
        &[("content-md5", &md5)],
        CORS.as_bytes(),
    );
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the config's rules change in the config"
    );
}

#[test]
fn a_malformed_content_md5_is_refused_before_anything_is_written() {
    let h = users();
    for bad in ["not-base64!", "AAAA"] {
        let r = signed_with(
            &h,
            Method::PUT,
            "/photos/md5",
            "gwkey",
            "gwsecret",
            &[("content-md5", bad)],
            b"x",
        );
        assert_eq!(
            (r.status, code(&r)),
            (StatusCode::BAD_REQUEST, "InvalidDigest".into()),
            "{bad}"
        );
    }
    assert!(h.holders("photos/md5").is_empty());
    let good = content_md5(b"x");
    let r = signed_with(
        &h,
        Method::PUT,
        "/photos/md5",
        "gwkey",
        "gwsecret",
        &[("content-md5", &good)],
        b"x",
    );
    assert_eq!(r.status, StatusCode::OK);
}

#[test]
fn put_object_acl_goes_to_the_backend_that_answers_for_it() {
    let h = users();
    as_user(&h, "alice", Method::PUT, "/objs", b"");
    as_user(&h, "alice", Method::PUT, "/objs/k", b"body");
    // The in-memory backend keeps no ACLs: its 501 reaches the client; the object is untouched.
    let r = signed_with(
        &h,
        Method::PUT,
        "/objs/k?acl",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "public-read")],
        b"",
    );
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::NOT_IMPLEMENTED, "NotImplemented".into())
    );
    assert_eq!(
        as_user(&h, "alice", Method::GET, "/objs/k", b"").text(),
        "body"
    );
    let r = signed_with(
        &h,
        Method::PUT,
        "/objs/nothing?acl",
        "alice",
        "alice-secret",
        &[("x-amz-acl", "private")],
        b"",
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = signed_with(
        &h,
        Method::PUT,
        "/objs/k?acl",
        "bob",
        "bob-secret",
        &[("x-amz-acl", "private")],
        b"",
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = as_user(&h, "alice", Method::PUT, "/objs/k?acl", b"");
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::BAD_REQUEST, "MissingSecurityHeader".into())
    );
}
