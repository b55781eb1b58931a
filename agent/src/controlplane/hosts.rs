//! The fenced block of /etc/hosts that carries the control plane's names in `hosts`
//! and `none` modes. Pure: rendering the block and splicing it into the file's text;
//! everything outside the fence is kept byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const BEGIN: &str =
    "# BEGIN nodewright control-plane names (managed by nodewright; do not edit)";
pub const END: &str = "# END nodewright control-plane names";

/// Name to addresses, rendered one `address<TAB>name` line each, sorted.
pub fn render_block(entries: &BTreeMap<String, BTreeSet<IpAddr>>) -> String {
    let mut out = format!("{BEGIN}\n");
    for (name, addresses) in entries {
        for address in addresses {
            out.push_str(&format!("{address}\t{name}\n"));
        }
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `existing` with its block replaced by `block` (or `block` appended).
pub(in crate::controlplane) fn splice(existing: &str, block: &str) -> Result<String, String> {
    let begin = existing.find(BEGIN);
    let end = existing.find(END);
    match (begin, end) {
        (None, None) => {
            let mut out = existing.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(block);
            Ok(out)
        }
        (Some(b), Some(e)) if b < e => {
            let after_end = e + END.len();
            let rest = existing[after_end..]
                .strip_prefix('\n')
                .unwrap_or(&existing[after_end..]);
            if rest.contains(BEGIN) || rest.contains(END) {
                return Err("it holds more than one nodewright block; fix it by hand".to_owned());
            }
            Ok(format!("{}{block}{rest}", &existing[..b]))
        }
        _ => Err(format!(
            "its nodewright block is damaged (the lines {BEGIN:?} and {END:?} must appear once each, in that order); fix it by hand"
        )),
    }
}

/// The block's current entries, for reports: `name -> addresses`.
pub fn current_block(existing: &str) -> Option<&str> {
    let b = existing.find(BEGIN)?;
    let e = existing.find(END)?;
    (b < e).then(|| &existing[b..e + END.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> BTreeMap<String, BTreeSet<IpAddr>> {
        let mut e = BTreeMap::new();
        e.insert(
            "api.internal.prod".to_owned(),
            ["10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()].into(),
        );
        e.insert(
            "etcd-a.internal.prod".to_owned(),
            ["10.0.0.1".parse().unwrap()].into(),
        );
        e
    }

    #[test]
    fn appends_then_replaces_keeping_everything_else() {
        let original = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n";
        let block = render_block(&entries());
        assert!(block.contains("10.0.0.1\tapi.internal.prod\n10.0.0.2\tapi.internal.prod\n"));
        let first = splice(original, &block).unwrap();
        assert!(first.starts_with(original));
        assert!(first.ends_with(&block));
        let mut fewer = entries();
        fewer.remove("etcd-a.internal.prod");
        let second = splice(&first, &render_block(&fewer)).unwrap();
        assert!(second.starts_with(original));
        assert!(!second.contains("etcd-a"));
        assert_eq!(splice(&second, &render_block(&fewer)).unwrap(), second);
        // Lines after the block survive too.
        let with_tail = format!("{first}10.9.9.9 other\n");
        let replaced = splice(&with_tail, &render_block(&fewer)).unwrap();
        assert!(replaced.ends_with("10.9.9.9 other\n"), "{replaced}");
    }

    #[test]
    fn a_damaged_block_is_refused() {
        let damaged = format!("127.0.0.1 localhost\n{BEGIN}\n10.0.0.1 x\n");
        assert!(splice(&damaged, &render_block(&entries())).is_err());
        let twice = format!("{}{}", render_block(&entries()), render_block(&entries()));
        assert!(splice(&twice, &render_block(&entries())).is_err());
    }
}
