//! Cross-origin resource sharing: a bucket's CORS rules, the preflight `OPTIONS` answer and
//! the `Access-Control-*` headers of every answer to a request with an `Origin`.
//!
//! Rules come from the config (`cors:` of a virtual bucket) or from PutBucketCors (kept with
//! the bucket's record). The first rule whose origin, method and (for a preflight) every
//! requested header match decides, as AWS evaluates them:
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTOPTIONSobject.html>.

use serde::{Deserialize, Serialize};

use crate::error::{S3Error, S3ErrorCode};
use crate::xml::Writer;

/// Most rules one configuration may hold (AWS's limit).
pub const MAX_RULES: usize = 100;
/// The methods a rule may allow.
pub const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One `CORSRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins, each with at most one `*` (`https://*.example.com`, or `*` for any).
    pub allowed_origins: Vec<String>,
    /// Of [`METHODS`].
    pub allowed_methods: Vec<String>,
    /// Headers a preflight may ask for, case-insensitive, each with at most one `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser lets the page read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
}

/// `*` matches any run of characters (at most one `*`, checked when rules are accepted).
fn wildcard_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

impl CorsRule {
    fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin))
    }

    fn allows_header(&self, header: &str) -> bool {
        let header = header.to_ascii_lowercase();
        self.allowed_headers
            .iter()
            .any(|h| wildcard_match(&h.to_ascii_lowercase(), &header))
    }

    /// Whether this rule lets `origin` use `method` sending `headers`.
    pub fn allows(&self, origin: &str, method: &str, headers: &[&str]) -> bool {
        self.allows_origin(origin)
            && self.allowed_methods.iter().any(|m| m == method)
            && headers.iter().all(|h| self.allows_header(h))
    }

    /// Checks a rule as PutBucketCors (and the config loader) accept it.
    pub fn validate(&self) -> Result<(), S3Error> {
        if self.allowed_origins.is_empty() || self.allowed_methods.is_empty() {
            return Err(S3Error::new(
                S3ErrorCode::MalformedXML,
                "Each CORSRule must name at least one AllowedOrigin and one AllowedMethod.",
            ));
        }
        if let Some(m) = self
            .allowed_methods
            .iter()
            .find(|m| !METHODS.contains(&m.as_str()))
        {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                format!("Found unsupported HTTP method in CORS config. Unsupported method is {m}"),
            ));
        }
        for (what, values) in [
            ("AllowedOrigin", &self.allowed_origins),
            ("AllowedHeader", &self.allowed_headers),
        ] {
            if let Some(v) = values.iter().find(|v| v.matches('*').count() > 1) {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    format!("{what} \"{v}\" can not have more than one wildcard."),
                ));
            }
        }
        if self.id.as_ref().is_some_and(|id| id.len() > 255) {
            return Err(S3Error::invalid_argument(
                "The ID of a CORSRule is at most 255 characters.",
            ));
        }
        Ok(())
    }
}

/// The first rule that lets `origin` use `method` sending `headers`.
pub fn find_rule<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[&str],
) -> Option<&'r CorsRule> {
    rules.iter().find(|r| r.allows(origin, method, headers))
}

/// The headers of an answer to `origin` under `rule`; `requested_headers` only for a preflight.
pub fn response_headers(
    rule: &CorsRule,
    origin: &str,
    requested_headers: Option<&str>,
) -> Vec<(&'static str, String)> {
    // A rule for any origin answers `*` (and a browser then sends no credentials); else the
    // origin itself, which may then use credentials.
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![(
        "access-control-allow-origin",
        if any_origin { "*" } else { origin }.to_owned(),
    )];
    if !any_origin {
        out.push(("access-control-allow-credentials", "true".to_owned()));
    }
    out.push((
        "access-control-allow-methods",
        rule.allowed_methods.join(", "),
    ));
    if let Some(h) = requested_headers.filter(|h| !h.trim().is_empty()) {
        out.push(("access-control-allow-headers", h.trim().to_owned()));
    }
    if !rule.expose_headers.is_empty() {
        out.push((
            "access-control-expose-headers",
            rule.expose_headers.join(", "),
        ));
    }
    if let Some(age) = rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    out
}

/// What a preflight `OPTIONS` asks: its origin, method and headers.
pub struct Preflight<'a> {
    pub origin: &'a str,
    pub method: &'a str,
    pub headers: Vec<&'a str>,
    /// `Access-Control-Request-Headers` as sent, echoed when allowed.
    pub headers_raw: Option<&'a str>,
}

impl<'a> Preflight<'a> {
    /// Reads a preflight's headers: `400` without `Origin` or a valid
    /// `Access-Control-Request-Method`, as AWS answers.
    pub fn from_headers(headers: &'a http::HeaderMap) -> Result<Preflight<'a>, S3Error> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = get("origin").filter(|o| !o.is_empty()).ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::BadRequest,
                "Insufficient information. Origin request header needed.",
            )
        })?;
        let method = get("access-control-request-method").unwrap_or_default();
        if !METHODS.contains(&method) {
            return Err(S3Error::new(
                S3ErrorCode::BadRequest,
                format!(
                    "Invalid Access-Control-Request-Method: {}",
                    if method.is_empty() { "null" } else { method }
                ),
            ));
        }
        let headers_raw = get("access-control-request-headers");
        let headers = headers_raw
            .map(|h| {
                h.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Preflight {
            origin,
            method,
            headers,
            headers_raw,
        })
    }

    /// The answer's CORS headers, or AWS's `403` when no rule allows the request.
    pub fn answer(&self, rules: &[CorsRule]) -> Result<Vec<(&'static str, String)>, S3Error> {
        if rules.is_empty() {
            return Err(S3Error::new(
                S3ErrorCode::AccessForbidden,
                "CORSResponse: CORS is not enabled for this bucket.",
            ));
        }
        let rule = find_rule(rules, self.origin, self.method, &self.headers).ok_or_else(|| {
            S3Error::new(
                S3ErrorCode::AccessForbidden,
                "CORSResponse: This CORS request is not allowed. This is usually because the \
                 evalution of Origin, request method / Access-Control-Request-Method or \
                 Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            )
        })?;
        Ok(response_headers(rule, self.origin, self.headers_raw))
    }
}

/// The `Vary` every answer of a bucket with CORS rules carries, so that caches keep answers to
/// different origins apart.
pub const VARY: &str = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method";

/// Reads a PutBucketCors body (`CORSConfiguration`), every rule checked.
pub fn parse_configuration(xml: &[u8]) -> Result<Vec<CorsRule>, S3Error> {
    let malformed = || {
        S3Error::new(
            S3ErrorCode::MalformedXML,
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    };
    let root = crate::xml::parse(xml)
        .ok()
        .filter(|el| el.name == "CORSConfiguration")
        .ok_or_else(malformed)?;
    let texts = |rule: &crate::xml::Element, name: &str| -> Vec<String> {
        rule.all(name).map(|e| e.text.trim().to_owned()).collect()
    };
    let mut rules = Vec::new();
    for r in root.all("CORSRule") {
        let max_age_seconds = match r.text_of("MaxAgeSeconds") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| malformed())?),
        };
        let rule = CorsRule {
            id: r.text_of("ID").map(str::to_owned),
            allowed_origins: texts(r, "AllowedOrigin"),
            allowed_methods: texts(r, "AllowedMethod"),
            allowed_headers: texts(r, "AllowedHeader"),
            expose_headers: texts(r, "ExposeHeader"),
            max_age_seconds,
        };
        rule.validate()?;
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err(malformed());
    }
    if rules.len() > MAX_RULES {
        return Err(S3Error::invalid_argument(format!(
            "A CORS configuration holds at most {MAX_RULES} rules."
        )));
    }
    Ok(rules)
}

/// GetBucketCors's answer.
pub fn configuration_xml(rules: &[CorsRule]) -> String {
    let mut d = Writer::new("CORSConfiguration", true);
    for r in rules {
        d.open("CORSRule");
        if let Some(id) = &r.id {
            d.el("ID", id);
        }
        for (name, values) in [
            ("AllowedHeader", &r.allowed_headers),
            ("AllowedMethod", &r.allowed_methods),
            ("AllowedOrigin", &r.allowed_origins),
            ("ExposeHeader", &r.expose_headers),
        ] {
            for v in values {
                d.el(name, v);
            }
        }
        if let Some(age) = r.max_age_seconds {
            d.el("MaxAgeSeconds", &age.to_string());
        }
        d.close("CORSRule");
    }
    d.finish("CORSConfiguration")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        CorsRule {
            allowed_origins: v(origins),
            allowed_methods: v(methods),
            allowed_headers: v(headers),
            ..Default::default()
        }
    }

    #[test]
    fn origins_methods_and_headers_match_as_aws_evaluates_them() {
        let rules = [
            rule(&["https://app.example.com"], &["GET", "PUT"], &["*"]),
            rule(
                &["https://*.example.org"],
                &["GET"],
                &["x-amz-*", "content-type"],
            ),
            rule(&["*"], &["HEAD"], &[]),
        ];
        let r = |o, m, h: &[&str]| find_rule(&rules, o, m, h).map(|r| r.allowed_origins[0].clone());
        assert_eq!(
            r(
                "https://app.example.com",
                "PUT",
                &["Content-Type", "x-amz-date"]
            )
            .as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            r("https://app.example.com", "DELETE", &[]),
            None,
            "method not allowed"
        );
        assert_eq!(
            r("http://app.example.com", "GET", &[]),
            None,
            "scheme is part of the origin"
        );
        assert_eq!(
            r("https://a.b.example.org", "GET", &["X-Amz-Date"]).as_deref(),
            Some("https://*.example.org")
        );
        assert_eq!(
            r("https://a.example.org", "GET", &["authorization"]),
            None,
            "header not allowed"
        );
        assert_eq!(
            r("https://example.org", "GET", &[]),
            None,
            "the wildcard needs its dot"
        );
        assert_eq!(r("https://anything", "HEAD", &[]).as_deref(), Some("*"));
    }

    #[test]
    fn answer_headers() {
        let mut specific = rule(&["https://app.example.com"], &["GET", "PUT"], &["*"]);
        specific.expose_headers = vec!["ETag".into()];
        specific.max_age_seconds = Some(600);
        assert_eq!(
            response_headers(&specific, "https://app.example.com", Some("content-type")),
            vec![
                (
                    "access-control-allow-origin",
                    "https://app.example.com".to_owned()
                ),
                ("access-control-allow-credentials", "true".to_owned()),
                ("access-control-allow-methods", "GET, PUT".to_owned()),
                ("access-control-allow-headers", "content-type".to_owned()),
                ("access-control-expose-headers", "ETag".to_owned()),
                ("access-control-max-age", "600".to_owned()),
            ]
        );
        let any = rule(&["*"], &["GET"], &[]);
        assert_eq!(
            response_headers(&any, "https://x", None),
            vec![
                ("access-control-allow-origin", "*".to_owned()),
                ("access-control-allow-methods", "GET".to_owned()),
            ]
        );
    }

    #[test]
    fn preflight_errors_are_aws_answers() {
        let mut h = http::HeaderMap::new();
        let e = Preflight::from_headers(&h).err().unwrap();
        assert_eq!((e.code, e.status()), (S3ErrorCode::BadRequest, 400));
        h.insert("origin", "https://app.example.com".parse().unwrap());
        let e = Preflight::from_headers(&h).err().unwrap();
        assert_eq!(e.message, "Invalid Access-Control-Request-Method: null");
        h.insert("access-control-request-method", "PUT".parse().unwrap());
        h.insert(
            "access-control-request-headers",
            "content-type, x-amz-date".parse().unwrap(),
        );
        let p = Preflight::from_headers(&h).unwrap();
        assert_eq!(p.headers, vec!["content-type", "x-amz-date"]);
        let e = p.answer(&[]).unwrap_err();
        assert_eq!((e.code, e.status()), (S3ErrorCode::AccessForbidden, 403));
        assert!(e.message.contains("not enabled"));
        let e = p.answer(&[rule(&["*"], &["GET"], &[])]).unwrap_err();
        assert!(e.message.contains("not allowed"));
        assert!(p.answer(&[rule(&["*"], &["PUT"], &["*"])]).is_ok());
    }

    #[test]
    fn configuration_round_trips_and_is_checked() {
        let xml = "<CORSConfiguration><CORSRule><ID>web</ID><AllowedOrigin>https://app.example.com</AllowedOrigin>\
                   <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedHeader>*</AllowedHeader>\
                   <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>";
        let rules = parse_configuration(xml.as_bytes()).unwrap();
        assert_eq!(rules[0].id.as_deref(), Some("web"));
        assert_eq!(rules[0].max_age_seconds, Some(3000));
        assert_eq!(
            parse_configuration(configuration_xml(&rules).as_bytes()).unwrap(),
            rules
        );

        let bad = |xml: &str| parse_configuration(xml.as_bytes()).unwrap_err();
        assert_eq!(bad("<CORSConfiguration/>").code, S3ErrorCode::MalformedXML);
        assert_eq!(bad("<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>").code, S3ErrorCode::MalformedXML);
        let e = bad("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>");
        assert_eq!(
            e.message,
            "Found unsupported HTTP method in CORS config. Unsupported method is PATCH"
        );
        let e = bad("<CORSConfiguration><CORSRule><AllowedOrigin>*.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>");
        assert_eq!(e.code, S3ErrorCode::InvalidRequest);
        assert_eq!(bad("<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>x</MaxAgeSeconds></CORSRule></CORSConfiguration>").code, S3ErrorCode::MalformedXML);
    }
}
