//! Blocks of lines nodewright keeps inside files others write too (e.g. /etc/hosts):
//! everything outside `# BEGIN nodewright <name>` ... `# END nodewright <name>` is left
//! as it is.

fn begin(name: &str) -> String {
    format!("# BEGIN nodewright {name}")
}

fn end(name: &str) -> String {
    format!("# END nodewright {name}")
}

/// `existing` with block `name` set to `lines` (appended when absent), or removed when
/// `lines` is `None`.
pub fn replace(existing: &str, name: &str, lines: Option<&str>) -> String {
    let (begin, end) = (begin(name), end(name));
    let mut out = String::with_capacity(existing.len() + lines.map_or(0, str::len) + 64);
    let mut inside = false;
    let mut placed = false;
    let block = |out: &mut String| {
        if let Some(lines) = lines {
            out.push_str(&begin);
            out.push('\n');
            out.push_str(lines);
            if !lines.is_empty() && !lines.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&end);
            out.push('\n');
        }
    };
    for line in existing.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if !inside && bare == begin {
            inside = true;
            if !placed {
                block(&mut out);
                placed = true;
            }
            continue;
        }
        if inside {
            if bare == end {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
    }
    if !placed && lines.is_some() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        block(&mut out);
    }
    out
}

/// The digest recorded for a block's lines; the file always holds them with a final
/// newline, so that is what is hashed.
pub fn digest(lines: &str) -> String {
    if lines.is_empty() || lines.ends_with('\n') {
        crate::spec::digest(lines.as_bytes())
    } else {
        crate::spec::digest(format!("{lines}\n").as_bytes())
    }
}

/// The record key of a block: `<path>#<name>`, split back into its parts.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('#')
}

/// `existing` without block `name`: what `reset` leaves of a shared file.
pub fn remove(existing: &str, name: &str) -> String {
    replace(existing, name, None)
}

/// The block's lines in `existing`, if it has the block.
pub fn current<'a>(existing: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("{}\n", begin(name));
    let start = existing.find(&begin)? + begin.len();
    let end_marker = end(name);
    let rest = &existing[start..];
    let end = rest.find(&end_marker)?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n";

    #[test]
    fn digests_ignore_a_missing_final_newline() {
        assert_eq!(digest("a\tb"), digest("a\tb\n"));
        let text = replace(HOSTS, "api", Some("10.0.1.5\tapi.internal"));
        assert_eq!(
            digest(current(&text, "api").unwrap()),
            digest("10.0.1.5\tapi.internal")
        );
        assert_eq!(split_key("/etc/hosts#api"), Some(("/etc/hosts", "api")));
        assert_eq!(remove(&text, "api"), HOSTS);
    }

    #[test]
    fn appends_then_replaces_in_place_then_removes() {
        let added = replace(HOSTS, "api", Some("10.0.1.5\tapi.internal\n"));
        assert_eq!(
            added,
            format!(
                "{HOSTS}# BEGIN nodewright api\n10.0.1.5\tapi.internal\n# END nodewright api\n"
            )
        );
        assert_eq!(current(&added, "api"), Some("10.0.1.5\tapi.internal\n"));
        // Lines someone adds after our block stay after it.
        let edited = format!("{added}10.9.9.9\tother\n");
        let replaced = replace(&edited, "api", Some("10.0.2.5\tapi.internal\n"));
        assert_eq!(
            replaced,
            format!(
                "{HOSTS}# BEGIN nodewright api\n10.0.2.5\tapi.internal\n# END nodewright api\n10.9.9.9\tother\n"
            )
        );
        assert_eq!(
            replace(&replaced, "api", None),
            format!("{HOSTS}10.9.9.9\tother\n")
        );
        // Setting what is there changes nothing.
        assert_eq!(
            replace(&added, "api", Some("10.0.1.5\tapi.internal\n")),
            added
        );
    }

    #[test]
    fn other_blocks_and_missing_newlines() {
        let two = replace(
            &replace("127.0.0.1 localhost", "api", Some("10.0.1.5 api\n")),
            "etcd",
            Some("10.0.1.6 etcd-a\n"),
        );
        assert!(two.starts_with("127.0.0.1 localhost\n# BEGIN nodewright api\n"));
        let without_api = replace(&two, "api", None);
        assert_eq!(current(&without_api, "etcd"), Some("10.0.1.6 etcd-a\n"));
        assert_eq!(current(&without_api, "api"), None);
        assert_eq!(replace("", "x", None), "");
    }
}
