//! The one XML writer: every body the gateway produces (answers, error bodies, requests to
//! backends, and the in-memory test backend's answers) is written with [`Writer`].

/// The S3 namespace AWS puts on response roots.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Owner ID and display name the gateway answers for everything it owns.
pub const OWNER_ID: &str = "s3-balance";

pub(crate) const PROLOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// A body under construction: prolog, root, then elements written in order. Element names
/// are the caller's constants; only text is escaped.
pub struct Writer(String);

impl Writer {
    /// Starts a body with `root` open; `ns` adds the S3 namespace.
    pub fn new(root: &str, ns: bool) -> Writer {
        let mut s = String::with_capacity(256);
        s.push_str(PROLOG);
        s.push('<');
        s.push_str(root);
        if ns {
            s.push_str(" xmlns=\"");
            s.push_str(S3_NS);
            s.push('"');
        }
        s.push('>');
        Writer(s)
    }

    /// A whole body that is one empty root element (`<root xmlns="..."/>` with `ns`).
    pub fn empty(root: &str, ns: bool) -> String {
        let mut w = Writer::new(root, ns);
        w.0.pop();
        w.0.push_str("/>");
        w.0
    }

    pub fn open(&mut self, name: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>text</name>`, text escaped.
    pub fn el(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        escape_into(&mut self.0, text);
        self.close(name)
    }

    /// Markup written as it is: for the rare element with attributes (a constant).
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// The gateway as owner: `<element><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></element>`.
    pub fn owner(&mut self, element: &str) -> &mut Self {
        self.open(element)
            .el("ID", OWNER_ID)
            .el("DisplayName", OWNER_ID)
            .close(element)
    }

    /// Closes `root` and returns the body.
    pub fn finish(mut self, root: &str) -> String {
        self.close(root);
        self.0
    }
}

/// Escapes text for an XML element (or a double- or single-quoted attribute): `& < > " '`,
/// and `\r`, which a parser would otherwise turn into `\n`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_elements_in_order() {
        let mut w = Writer::new("R", true);
        w.open("A").el("B", "x<y").close("A").owner("O");
        assert_eq!(
            w.finish("R"),
            format!("{PROLOG}<R xmlns=\"{S3_NS}\"><A><B>x&lt;y</B></A><O><ID>s3-balance</ID><DisplayName>s3-balance</DisplayName></O></R>")
        );
        assert_eq!(Writer::empty("E", false), format!("{PROLOG}<E/>"));
        assert_eq!(
            Writer::empty("E", true),
            format!("{PROLOG}<E xmlns=\"{S3_NS}\"/>")
        );
    }
}
