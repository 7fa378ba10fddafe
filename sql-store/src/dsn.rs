//! Connection strings: URLs, and the DSNs the Go s3-balance's GORM drivers take.
//!
//! - PostgreSQL: `postgres://user:pass@host:5432/db?sslmode=disable`, or libpq's keyword/value
//!   form, as GORM's postgres driver (pgx) reads it: `host=db user=u password=p dbname=idx
//!   port=5432 sslmode=disable TimeZone=Asia/Shanghai`. Keywords other than libpq's connection
//!   ones are sent as run-time parameters, as pgx does.
//!   <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>
//! - MySQL/MariaDB: `mysql://user:pass@host:3306/db`, or Go-MySQL-Driver's DSN:
//!   `user:pass@tcp(host:3306)/db?charset=utf8mb4&parseTime=True&loc=Local`, `unix(/path)`.
//!   <https://github.com/go-sql-driver/mysql#dsn-data-source-name>

use std::str::FromStr;

use percent_encoding::percent_decode_str;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// PostgreSQL options from a URL or a keyword/value DSN. Errors never echo the string (it
/// carries the password).
pub(crate) fn postgres(text: &str) -> Result<PgConnectOptions, String> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return PgConnectOptions::from_str(text)
            .map_err(|e| format!("the PostgreSQL URL does not parse: {}", redact(&e)));
    }
    let mut options = PgConnectOptions::new_without_pgpass();
    for (key, value) in keyword_values(text)? {
        options = match key.as_str() {
            "host" if value.starts_with('/') => options.socket(&value),
            "host" | "hostaddr" => options.host(&value),
            "port" => options.port(
                value
                    .parse()
                    .map_err(|_| format!("port {value:?} is not a port number"))?,
            ),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "dbname" => options.database(&value),
            "sslmode" => options.ssl_mode(
                PgSslMode::from_str(&value).map_err(|_| format!("sslmode {value:?} is unknown"))?,
            ),
            "sslrootcert" => options.ssl_root_cert(&value),
            "sslcert" => options.ssl_client_cert(&value),
            "sslkey" => options.ssl_client_key(&value),
            "application_name" => options.application_name(&value),
            // Connection set-up settings of libpq that have no meaning here.
            "connect_timeout"
            | "target_session_attrs"
            | "sslpassword"
            | "gssencmode"
            | "channel_binding"
            | "passfile"
            | "client_encoding" => options,
            _ => options.options([(key, value)]),
        };
    }
    Ok(options)
}

/// libpq's `key=value key='quoted \' value'` list.
fn keyword_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "the PostgreSQL DSN is neither a postgres:// URL nor key=value pairs (at {key:?})"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of {key:?} has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// MySQL options from a URL or a Go-MySQL-Driver DSN.
pub(crate) fn mysql(text: &str) -> Result<MySqlConnectOptions, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("mariadb://") {
        return mysql(&format!("mysql://{rest}"));
    }
    if text.starts_with("mysql://") {
        return MySqlConnectOptions::from_str(text)
            .map_err(|e| format!("the MySQL URL does not parse: {}", redact(&e)));
    }
    // [user[:password]@][net[(addr)]]/dbname[?param=value&...]; like the Go driver, the last
    // '/' starts the database name and the last '@' before it ends the password.
    let slash = text
        .rfind('/')
        .ok_or("the MySQL DSN is neither a mysql:// URL nor user:pass@tcp(host:port)/dbname")?;
    let (prefix, rest) = (&text[..slash], &text[slash + 1..]);
    let (dbname, params) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, net) = match prefix.rfind('@') {
        Some(at) => (Some(&prefix[..at]), &prefix[at + 1..]),
        None => (None, prefix),
    };
    // The Go driver connects without TLS unless `tls` says otherwise.
    let mut options = MySqlConnectOptions::new().ssl_mode(MySqlSslMode::Disabled);
    if let Some(userinfo) = userinfo {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        options = options.username(user);
        if !password.is_empty() {
            options = options.password(password);
        }
    }
    let (protocol, address) = match net.split_once('(') {
        Some((protocol, address)) => (
            protocol,
            address
                .strip_suffix(')')
                .ok_or("the MySQL DSN's address has no closing ')'")?,
        ),
        None => (net, ""),
    };
    options = match (protocol, address) {
        ("" | "tcp", "") => options.host("127.0.0.1").port(3306),
        ("tcp", address) => {
            let (host, port) = match address.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(':') => (
                    host,
                    port.parse()
                        .map_err(|_| format!("port {port:?} is not a port number"))?,
                ),
                _ => (address, 3306),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            options.host(host).port(port)
        }
        ("unix", "") => options.socket("/tmp/mysql.sock"),
        ("unix", path) => options.socket(path),
        (other, _) => {
            return Err(format!(
                "the MySQL DSN's protocol {other:?} is not tcp or unix"
            ))
        }
    };
    if !dbname.is_empty() {
        let dbname = percent_decode_str(dbname)
            .decode_utf8()
            .map_err(|_| "the MySQL DSN's database name is not UTF-8")?;
        options = options.database(&dbname);
    }
    for param in params.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key == "tls" {
            options = options.ssl_mode(match value.to_ascii_lowercase().as_str() {
                "true" => MySqlSslMode::VerifyIdentity,
                "skip-verify" => MySqlSslMode::Required,
                "preferred" => MySqlSslMode::Preferred,
                "false" => MySqlSslMode::Disabled,
                other => return Err(format!("tls={other}: use true, skip-verify, preferred or false (named TLS configs are Go-only)")),
            });
        }
        // charset, parseTime, loc, timeout ...: the store always talks utf8mb4 and stores
        // times as integers, so they change nothing here.
    }
    Ok(options)
}

/// sqlx's parse errors may quote the URL: keep only the first words of the message.
fn redact(e: &sqlx::Error) -> String {
    let text = e.to_string();
    if text.contains("://") || text.contains('@') {
        "check its syntax (scheme://user:password@host:port/database)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_and_go_keyword_values() {
        let o = postgres("postgres://u:p%40ss@db.example:5433/idx?sslmode=disable").unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_username(),
                o.get_database()
            ),
            ("db.example", 5433, "u", Some("idx"))
        );
        assert!(postgres("just-a-word").unwrap_err().contains("key=value"));
        let o = postgres(
            " host = db user=gorm password='a \\'b\\' c' dbname=gorm port=9920 sslmode=disable TimeZone=Asia/Shanghai ",
        )
        .unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_username(),
                o.get_database()
            ),
            ("db", 9920, "gorm", Some("gorm"))
        );
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        assert_eq!(o.get_options(), Some("-c TimeZone=Asia/Shanghai"));
        let o = postgres("host=/var/run/postgresql dbname=x").unwrap();
        assert_eq!(
            o.get_socket().map(|p| p.to_string_lossy().into_owned()),
            Some("/var/run/postgresql".to_owned())
        );
        assert!(postgres("port=abc").unwrap_err().contains("port"));
        assert!(postgres("password='open").unwrap_err().contains("quote"));
        let e = postgres("postgres://u:secret@[bad/x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn mysql_urls_and_go_dsns() {
        let o = mysql("mysql://u:p@db:3307/idx").unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_username(),
                o.get_database()
            ),
            ("db", 3307, "u", Some("idx"))
        );
        let o = mysql("mariadb://u@db/idx").unwrap();
        assert_eq!((o.get_host(), o.get_database()), ("db", Some("idx")));

        let o = mysql(
            "user:pa:ss@word@tcp(localhost:3306)/dbname?charset=utf8mb4&parseTime=True&loc=Local",
        )
        .unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_username(),
                o.get_database()
            ),
            ("localhost", 3306, "user", Some("dbname"))
        );
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        let o = mysql("root@tcp([::1]:3310)/my%2Fdb?tls=skip-verify").unwrap();
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_database()),
            ("::1", 3310, Some("my/db"))
        );
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Required));
        let o = mysql("u:p@unix(/run/mysqld/mysqld.sock)/idx").unwrap();
        assert_eq!(
            o.get_socket().map(|p| p.to_string_lossy().into_owned()),
            Some("/run/mysqld/mysqld.sock".to_owned())
        );
        let o = mysql("/idx").unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("127.0.0.1", 3306));
        assert!(mysql("u:p@tcp(db:3306)").unwrap_err().contains("dbname"));
        assert!(mysql("u:p@udp(db)/x").unwrap_err().contains("udp"));
        assert!(mysql("u@tcp(db)/x?tls=custom").unwrap_err().contains("tls"));
    }
}
