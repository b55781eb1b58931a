//! Resolves user and group names through the root's own /etc/passwd and /etc/group,
//! so a sandbox root resolves names the way the node will.

use std::path::Path;

/// Looks `name` up in a passwd- or group-format file; numeric names are ids already.
/// `root` is always 0, even in a root without an /etc/passwd.
pub fn resolve(db: &Path, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = match std::fs::read_to_string(db) {
        Ok(text) => text,
        Err(_) if name == "root" => return Ok(0),
        Err(e) => {
            return Err(format!(
                "cannot resolve {name:?}: reading {}: {e}",
                db.display()
            ));
        }
    };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1).and_then(|id| id.parse::<u32>().ok()))
                .flatten()
        })
        .or((name == "root").then_some(0))
        .ok_or_else(|| format!("{name:?} is not in {}", db.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\netcd:x:998:997::/var/lib/etcd:/usr/sbin/nologin\n",
        )
        .unwrap();
        assert_eq!(resolve(&passwd, "etcd"), Ok(998));
        assert_eq!(resolve(&passwd, "root"), Ok(0));
        assert_eq!(resolve(&passwd, "1234"), Ok(1234));
        assert!(resolve(&passwd, "nobody").unwrap_err().contains("nobody"));
        assert_eq!(resolve(&dir.path().join("missing"), "root"), Ok(0));
        assert!(resolve(&dir.path().join("missing"), "etcd").is_err());
    }
}
