//! Finds the line of a field in a YAML document, so that checks made after parsing
//! (which see only the typed values) can still point the reader at the place.
//!
//! Paths look like `files[2].path`, `cluster.dnsIp` or `sysctls["net.ipv4.ip_forward"]`.
//!
//! The document is walked with yaml_serde, the parser the spec is read with (one YAML
//! parser in the binary, not two): a seed follows the path down the mappings and
//! sequences and, at the wanted node, stops the walk with an error, to which yaml_serde
//! attaches the line of the node it was reading.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[\"") {
            let end = after.find("\"]")?;
            segments.push(Segment::Key(after[..end].to_owned()));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            segments.push(Segment::Index(after[..end].parse().ok()?));
            rest = &after[end + 1..];
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            segments.push(Segment::Key(rest_trimmed[..end].to_owned()));
            rest = &rest_trimmed[end..];
        }
    }
    Some(segments)
}

/// The 1-based line where the node at `path` starts, if the path exists.
/// An empty path gives the line of the document's first node. A field's own line is
/// the line of its key.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let wanted = parse_path(path)?;
    let found = Cell::new(false);
    let walker = Walker {
        wanted: &wanted,
        found: &found,
    };
    // The walk only ends early, with the error that carries the line; a syntax error,
    // the end of the document or a path that is not there end it without `found`.
    let error = walker
        .deserialize(yaml_serde::Deserializer::from_str(text))
        .err()?;
    if !found.get() {
        return None;
    }
    error.location().map(|location| location.line())
}

/// Walks one node: into the entry or item the next segment names, or, when no segment
/// is left, stops at this node.
#[derive(Clone, Copy)]
struct Walker<'p> {
    wanted: &'p [Segment],
    found: &'p Cell<bool>,
}

impl Walker<'_> {
    fn stop<E: de::Error>(self) -> Result<(), E> {
        self.found.set(true);
        Err(E::custom("found"))
    }
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.wanted.is_empty() {
            // Any visit ends here, marked with this node's line.
            deserializer.deserialize_any(Stop(self))
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(wanted), rest)) = self.wanted.split_first() else {
            return Err(de::Error::custom("not a sequence"));
        };
        let key_seed = Key {
            wanted,
            stop_here: rest.is_empty(),
            found: self.found,
        };
        while let Some(hit) = map.next_key_seed(key_seed)? {
            if hit {
                return map.next_value_seed(Walker {
                    wanted: rest,
                    found: self.found,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("no such key"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(wanted), rest)) = self.wanted.split_first() else {
            return Err(de::Error::custom("not a mapping"));
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("no such item"));
            }
        }
        let item = Walker {
            wanted: rest,
            found: self.found,
        };
        match seq.next_element_seed(item)? {
            Some(()) => Err(de::Error::custom("the walk went past the item")),
            None => Err(de::Error::custom("no such item")),
        }
    }
}

/// Stops at whatever node it is given.
struct Stop<'p>(Walker<'p>);

impl<'de> Visitor<'de> for Stop<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.stop()
    }
    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        self.0.stop()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.0.stop()
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.0.stop()
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.0.stop()
    }
}

/// A mapping's key: whether it is the wanted one. When the path ends at this entry,
/// the wanted key stops the walk itself (a field's line is its key's).
#[derive(Clone, Copy)]
struct Key<'p> {
    wanted: &'p str,
    stop_here: bool,
    found: &'p Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.wanted {
            Ok(false)
        } else if self.stop_here {
            self.found.set(true);
            Err(E::custom("found"))
        } else {
            Ok(true)
        }
    }
    // Keys that are not strings (numbers, booleans, null, complex keys) are never on a
    // path; they are skipped.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: v1
cluster:
  name: a
  dnsIp: 10.0.0.10
files:
  - path: /a
    content: x
  - path: b
    content: |
      multi
      line
sysctls:
  net.ipv4.ip_forward: 1
flow: {a: 1, b: [x, y]}
";

    #[test]
    fn finds_lines() {
        assert_eq!(line_of(DOC, ""), Some(1));
        assert_eq!(line_of(DOC, "apiVersion"), Some(1));
        assert_eq!(line_of(DOC, "cluster.dnsIp"), Some(4));
        assert_eq!(line_of(DOC, "files[1].path"), Some(8));
        assert_eq!(line_of(DOC, "files[1]"), Some(8));
        assert_eq!(line_of(DOC, "files[1].content"), Some(9));
        assert_eq!(line_of(DOC, "sysctls[\"net.ipv4.ip_forward\"]"), Some(13));
        assert_eq!(line_of(DOC, "flow.b[1]"), Some(14));
        assert_eq!(line_of(DOC, "files[7].path"), None);
        assert_eq!(line_of(DOC, "nothing"), None);
    }

    #[test]
    fn keys_that_are_not_strings_are_skipped() {
        assert_eq!(line_of("1: a\n? [x]\n: y\nb: c\n", "b"), Some(4));
        assert_eq!(line_of("a: &x\n  k: 1\nb: *x\n", "b"), Some(3));
    }

    #[test]
    fn malformed_documents_end_the_search() {
        assert_eq!(line_of("a: [1, 2\nb: {", "b"), None);
        assert_eq!(line_of("a: 1\n  b: 2\n c", "z"), None);
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("a.b[2][\"x.y\"].c"),
            Some(vec![
                Segment::Key("a".into()),
                Segment::Key("b".into()),
                Segment::Index(2),
                Segment::Key("x.y".into()),
                Segment::Key("c".into()),
            ])
        );
    }
}
