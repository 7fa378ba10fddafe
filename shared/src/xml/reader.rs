//! The one XML reader: every body the gateway reads (clients' requests, backends' answers,
//! backend listing pages, and the requests the in-memory test backend serves) is read with
//! [`parse`] into a small element tree.
//!
//! Elements are matched by local name (any namespace prefix is ignored); whitespace between
//! elements, comments, processing instructions and the declaration are skipped. Text is kept
//! untrimmed (keys may begin or end with spaces); [`Element::text_of`] trims for the fields
//! where S3 tolerates whitespace. A document type declaration is refused: nothing S3 sends or
//! accepts has one, and they only bring entity tricks.

use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Deeper than any S3 body; bounds the tree (and its recursive drop) on hostile input.
const MAX_DEPTH: usize = 32;

/// One element: local name, its elements in order, and its text (concatenated, untrimmed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child element named `name`, in document order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The exact (untrimmed) text of the first child `name`: keys and prefixes.
    pub fn raw_text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Why a document could not be read; for logs, never for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError(String);

impl ReadError {
    pub fn new(why: impl Into<String>) -> Self {
        ReadError(why.into())
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

fn element(e: &BytesStart<'_>) -> Result<Element, ReadError> {
    // Reading every attribute is what makes quick-xml check their syntax.
    for attr in e.attributes() {
        attr.map_err(|e| ReadError::new(format!("bad attribute: {e}")))?;
    }
    let name = std::str::from_utf8(e.local_name().into_inner())
        .map_err(|_| ReadError::new("element name is not UTF-8"))?;
    Ok(Element {
        name: name.to_owned(),
        ..Element::default()
    })
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), ReadError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err(ReadError::new("more than one root element")),
    }
    Ok(())
}

/// Reads a whole document into its root element; an error when it is not well-formed XML
/// (or nests deeper than any S3 body, or has a DTD).
pub fn parse(xml: &[u8]) -> Result<Element, ReadError> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ReadError::new(format!("at byte {}: {e}", reader.error_position())))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ReadError::new("nested too deep"));
                }
                if stack.is_empty() && root.is_some() {
                    return Err(ReadError::new("more than one root element"));
                }
                stack.push(element(&e)?);
            }
            Event::Empty(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(ReadError::new("nested too deep"));
                }
                let el = element(&e)?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches the open element.
                let el = stack
                    .pop()
                    .ok_or_else(|| ReadError::new("end tag without a start"))?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| ReadError::new(format!("bad text: {e}")))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(ReadError::new("text outside the root element")),
                }
            }
            Event::CData(c) => {
                let text =
                    std::str::from_utf8(&c).map_err(|_| ReadError::new("CDATA is not UTF-8"))?;
                stack
                    .last_mut()
                    .ok_or_else(|| ReadError::new("CDATA outside the root element"))?
                    .text
                    .push_str(text);
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => {
                return Err(ReadError::new("document type declarations are refused"))
            }
            Event::Eof => {
                return match (stack.is_empty(), root) {
                    (true, Some(root)) => Ok(root),
                    (true, None) => Err(ReadError::new("no root element")),
                    (false, _) => Err(ReadError::new("truncated document")),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tree_by_local_name_with_exact_text() {
        let doc = parse(
            b"<?xml version=\"1.0\"?>\n<!-- c --><s3:R xmlns:s3=\"u\"><A> k &amp; <![CDATA[<x>]]></A><B/><A>2</A></s3:R>\n",
        )
        .unwrap();
        assert_eq!(doc.name, "R");
        assert_eq!(doc.raw_text_of("A"), Some(" k & <x>"));
        assert_eq!(doc.text_of("A"), Some("k & <x>"));
        assert_eq!(doc.all("A").count(), 2);
        assert_eq!(doc.text_of("B"), Some(""));
        assert_eq!(doc.child("C"), None);
    }

    #[test]
    fn refuses_what_is_not_one_well_formed_document() {
        for bad in [
            &b""[..],
            b"   ",
            b"<a>",
            b"<a></b>",
            b"<a/><b/>",
            b"<a></a><b></b>",
            b"text<a/>",
            b"<a/>text",
            b"<![CDATA[x]]><a/>",
            b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            b"<a>&unknown;</a>",
            b"<a b=c/>",
            b"<a>\xff</a>",
            b"</a>",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().to_string(),
            "nested too deep"
        );
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }
}
