//! Canned ACLs: whether a bucket or an object may be read without credentials.
//!
//! The gateway keeps S3's two everyday canned ACLs, `private` and `public-read`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/acl-overview.html#canned-acl>):
//! a bucket's is kept with its record in the metadata store, an object's is carried to the
//! backend that holds it (`x-amz-acl` on the write, `?acl` to read or change it). Other canned
//! ACLs and grants to other accounts are answered `501 NotImplemented`, never silently
//! dropped, so a client never believes it granted something the gateway does not enforce.
//!
//! Grants render as AWS's `AccessControlPolicy`: the owner's `FULL_CONTROL`, plus `READ` for
//! the `AllUsers` group when public.
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketAcl.html>

use serde::{Deserialize, Serialize};

use crate::error::{S3Error, S3ErrorCode};
use crate::xml::{Element, Writer};

/// The group AWS grants to for `public-read`.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";

/// The canned ACLs the gateway enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CannedAcl {
    /// Only the owner (and credentials the config lets in).
    #[default]
    Private,
    /// Also anyone, without credentials: GET and HEAD (and, for a bucket, listing).
    PublicRead,
}

/// Canned ACLs AWS defines that the gateway does not enforce.
const NOT_ENFORCED: &[&str] = &[
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "log-delivery-write",
];

impl CannedAcl {
    pub fn as_str(self) -> &'static str {
        match self {
            CannedAcl::Private => "private",
            CannedAcl::PublicRead => "public-read",
        }
    }

    /// The value of an `x-amz-acl` header. The bucket-owner ACLs of object writes
    /// (`bucket-owner-read`, `bucket-owner-full-control`) grant nothing beyond `private` here,
    /// where writer and bucket owner are one, so they are `private`.
    pub fn from_header(value: &str) -> Result<CannedAcl, S3Error> {
        match value.trim() {
            "private" | "bucket-owner-read" | "bucket-owner-full-control" => Ok(CannedAcl::Private),
            "public-read" => Ok(CannedAcl::PublicRead),
            other if NOT_ENFORCED.contains(&other) => {
                Err(S3Error::not_implemented(&format!("The canned ACL {other}")))
            }
            _ => Err(S3Error::invalid_argument("Invalid canned ACL value.")),
        }
    }

    /// The request's `x-amz-acl`, if it has one. Grants by header (`x-amz-grant-*`) are not
    /// enforced: `501` rather than ignored.
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<CannedAcl>, S3Error> {
        if headers
            .keys()
            .any(|name| name.as_str().starts_with("x-amz-grant-"))
        {
            return Err(S3Error::not_implemented(
                "Granting by x-amz-grant-* headers",
            ));
        }
        match headers.get("x-amz-acl") {
            None => Ok(None),
            Some(v) => CannedAcl::from_header(v.to_str().unwrap_or_default()).map(Some),
        }
    }
}

/// The `AccessControlPolicy` of a bucket or object owned by `owner`.
pub fn access_control_policy(owner: &str, acl: CannedAcl) -> String {
    let mut d = Writer::new("AccessControlPolicy", true);
    d.open("Owner")
        .el("ID", owner)
        .el("DisplayName", owner)
        .close("Owner")
        .open("AccessControlList")
        .open("Grant")
        .raw(
            "<Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xsi:type=\"CanonicalUser\">",
        )
        .el("ID", owner)
        .el("DisplayName", owner)
        .close("Grantee")
        .el("Permission", "FULL_CONTROL")
        .close("Grant");
    if acl == CannedAcl::PublicRead {
        d.open("Grant")
            .raw(
                "<Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                 xsi:type=\"Group\">",
            )
            .el("URI", ALL_USERS)
            .close("Grantee")
            .el("Permission", "READ")
            .close("Grant");
    }
    d.close("AccessControlList");
    d.finish("AccessControlPolicy")
}

fn malformed_acl() -> S3Error {
    S3Error::new(
        S3ErrorCode::MalformedACLError,
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

/// A PutBucketAcl / PutObjectAcl body, as one of the canned ACLs: the grants must be the
/// owner's `FULL_CONTROL` (any canonical user ID: the gateway has no account IDs to check it
/// against) and, optionally, `READ` for `AllUsers`. Anything else is `501`.
pub fn parse_access_control_policy(xml: &[u8]) -> Result<CannedAcl, S3Error> {
    let root = crate::xml::parse(xml)
        .ok()
        .filter(|el| el.name == "AccessControlPolicy")
        .ok_or_else(malformed_acl)?;
    let list = root.child("AccessControlList").ok_or_else(malformed_acl)?;
    let mut public = false;
    for grant in list.all("Grant") {
        let grantee: &Element = grant.child("Grantee").ok_or_else(malformed_acl)?;
        let permission = grant.text_of("Permission").ok_or_else(malformed_acl)?;
        let to_group = grantee.text_of("URI");
        match (to_group, grantee.text_of("ID"), permission) {
            (None, Some(_), "FULL_CONTROL") => {}
            (Some(ALL_USERS), None, "READ") => public = true,
            _ => {
                return Err(S3Error::not_implemented(
                    "Grants other than the owner's FULL_CONTROL and READ for AllUsers",
                ))
            }
        }
    }
    Ok(if public {
        CannedAcl::PublicRead
    } else {
        CannedAcl::Private
    })
}

/// Whether an `AccessControlPolicy` a backend answered grants `READ` (or `FULL_CONTROL`) to
/// `AllUsers`: an object's ACL as the backend keeps it.
pub fn grants_public_read(xml: &[u8]) -> bool {
    let Ok(root) = crate::xml::parse(xml) else {
        return false;
    };
    root.child("AccessControlList").is_some_and(|list| {
        list.all("Grant").any(|g| {
            g.child("Grantee")
                .and_then(|e| e.text_of("URI"))
                .is_some_and(|uri| uri == ALL_USERS)
                && matches!(g.text_of("Permission"), Some("READ" | "FULL_CONTROL"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_acl_headers() {
        assert_eq!(CannedAcl::from_header("private"), Ok(CannedAcl::Private));
        assert_eq!(
            CannedAcl::from_header("public-read"),
            Ok(CannedAcl::PublicRead)
        );
        assert_eq!(
            CannedAcl::from_header("bucket-owner-full-control"),
            Ok(CannedAcl::Private)
        );
        let e = CannedAcl::from_header("public-read-write").unwrap_err();
        assert_eq!((e.code, e.status()), (S3ErrorCode::NotImplemented, 501));
        let e = CannedAcl::from_header("everyone").unwrap_err();
        assert_eq!(e.code, S3ErrorCode::InvalidArgument);
        let mut h = http::HeaderMap::new();
        assert_eq!(CannedAcl::from_headers(&h), Ok(None));
        h.insert("x-amz-grant-read", "uri=x".parse().unwrap());
        assert_eq!(
            CannedAcl::from_headers(&h).unwrap_err().code,
            S3ErrorCode::NotImplemented
        );
    }

    #[test]
    fn policy_round_trips_through_its_parser() {
        for acl in [CannedAcl::Private, CannedAcl::PublicRead] {
            let xml = access_control_policy("AKIAOWNER", acl);
            assert_eq!(parse_access_control_policy(xml.as_bytes()), Ok(acl));
            assert_eq!(
                grants_public_read(xml.as_bytes()),
                acl == CannedAcl::PublicRead
            );
        }
    }

    #[test]
    fn public_policy_renders_as_aws_does() {
        assert_eq!(
            access_control_policy("k", CannedAcl::PublicRead),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AccessControlPolicy xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Owner><ID>k</ID><DisplayName>k</DisplayName></Owner><AccessControlList>\
             <Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">\
             <ID>k</ID><DisplayName>k</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>\
             <Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"Group\">\
             <URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>\
             </AccessControlList></AccessControlPolicy>"
        );
    }

    #[test]
    fn other_grants_are_not_implemented_and_bad_bodies_malformed() {
        let write = access_control_policy("k", CannedAcl::PublicRead).replace(">READ<", ">WRITE<");
        assert_eq!(
            parse_access_control_policy(write.as_bytes())
                .unwrap_err()
                .code,
            S3ErrorCode::NotImplemented
        );
        for bad in [
            "",
            "<AccessControlPolicy/>",
            "<Other/>",
            "<AccessControlPolicy",
        ] {
            assert_eq!(
                parse_access_control_policy(bad.as_bytes())
                    .unwrap_err()
                    .code,
                S3ErrorCode::MalformedACLError,
                "{bad}"
            );
        }
    }
}
