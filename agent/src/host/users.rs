//! Resolves user and group names through the root's own /etc/passwd and /etc/group,
//! so a sandbox root resolves names the way the node will.

use std::path::{Path, PathBuf};

/// A user or group name the root's database does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum UnknownPrincipal {
    #[error("cannot resolve {name:?}: reading {}: {source}", db.display())]
    Unreadable {
        name: String,
        db: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name:?} is not in {}", db.display())]
    Missing { name: String, db: PathBuf },
}

/// Looks `name` up in a passwd- or group-format file; numeric names are ids already.
/// `root` is always 0, even in a root without an /etc/passwd.
pub fn resolve(db: &Path, name: &str) -> Result<u32, UnknownPrincipal> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = match std::fs::read_to_string(db) {
        Ok(text) => text,
        Err(_) if name == "root" => return Ok(0),
        Err(source) => {
            return Err(UnknownPrincipal::Unreadable {
                name: name.to_owned(),
                db: db.to_owned(),
                source,
            });
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
        .ok_or_else(|| UnknownPrincipal::Missing {
            name: name.to_owned(),
            db: db.to_owned(),
        })
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
        assert_eq!(resolve(&passwd, "etcd").unwrap(), 998);
        assert_eq!(resolve(&passwd, "root").unwrap(), 0);
        assert_eq!(resolve(&passwd, "1234").unwrap(), 1234);
        let nobody = resolve(&passwd, "nobody").unwrap_err();
        assert!(
            matches!(nobody, UnknownPrincipal::Missing { .. }),
            "{nobody}"
        );
        assert!(
            nobody.to_string().contains("\"nobody\" is not in"),
            "{nobody}"
        );
        assert_eq!(resolve(&dir.path().join("missing"), "root").unwrap(), 0);
        let unreadable = resolve(&dir.path().join("missing"), "etcd").unwrap_err();
        assert!(matches!(unreadable, UnknownPrincipal::Unreadable { .. }));
    }
}
