//! Finds the line of a field in a YAML document, so that checks made after parsing
//! (which see only the typed values) can still point the reader at the place.
//!
//! Paths look like `files[2].path`, `cluster.dnsIp` or `sysctls["net.ipv4.ip_forward"]`.

use saphyr_parser::{Event, Parser, Span};

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
/// An empty path gives the line of the document's first node.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let wanted = parse_path(path)?;
    // Stop at the first syntax error: the parser would keep repeating it.
    let mut events = Parser::new_from_str(text).map_while(Result::ok);
    // Skip to the document's root node.
    loop {
        match events.next()? {
            (Event::StreamStart | Event::DocumentStart(_), _) => continue,
            (event, span) => return find(&mut events, event, span, &wanted),
        }
    }
}

/// Walks the node that begins with `event`; returns the line of `wanted` inside it.
/// Always consumes the whole node so the caller's stream stays aligned.
fn find<'a>(
    events: &mut impl Iterator<Item = (Event<'a>, Span)>,
    event: Event<'a>,
    span: Span,
    wanted: &[Segment],
) -> Option<usize> {
    let here = span.start.line();
    let mut found = if wanted.is_empty() { Some(here) } else { None };
    match event {
        Event::MappingStart(..) => loop {
            let (key_event, key_span) = events.next()?;
            if matches!(key_event, Event::MappingEnd) {
                break;
            }
            let key = match &key_event {
                Event::Scalar(value, ..) => Some(value.to_string()),
                _ => None,
            };
            let key_line = key_span.start.line();
            // Consume the key node (it may be complex).
            find(events, key_event, key_span, &[]);
            let (value_event, value_span) = events.next()?;
            let hit = matches!((wanted.first(), &key), (Some(Segment::Key(w)), Some(k)) if w == k);
            if hit && found.is_none() {
                let rest = &wanted[1..];
                let inner = find(events, value_event, value_span, rest);
                // A field's own line is the line of its key.
                found = if rest.is_empty() {
                    Some(key_line)
                } else {
                    inner
                };
            } else {
                find(events, value_event, value_span, &[]);
            }
        },
        Event::SequenceStart(..) => {
            let mut index = 0;
            loop {
                let (item, item_span) = events.next()?;
                if matches!(item, Event::SequenceEnd) {
                    break;
                }
                let hit = matches!(wanted.first(), Some(Segment::Index(i)) if *i == index);
                if hit && found.is_none() {
                    found = find(events, item, item_span, &wanted[1..]);
                } else {
                    find(events, item, item_span, &[]);
                }
                index += 1;
            }
        }
        _ => {}
    }
    found
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
