//! Opening a `file://` source: a regular file, read no further than its size.

use std::io::{self, SeekFrom};
use std::path::Path;

use nix::fcntl::OFlag;
use tokio::io::AsyncSeekExt;

use super::{AttemptError, Body, Origin, Part, Stream};

/// opened (a device such as /dev/zero would never end; a growing file is cut there).
pub(super) async fn open(path: &Path, url: &str, part: &mut Part) -> Result<Body, AttemptError> {
    let permanent = |e: io::Error| AttemptError::Permanent(format!("{}: {e}", path.display()));
    // Non-blocking: opening a FIFO must not wait for a writer (it is refused below).
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .await
        .map_err(permanent)?;
    let meta = file.metadata().await.map_err(permanent)?;
    if !meta.is_file() {
        return Err(AttemptError::Permanent(format!(
            "{} is not a regular file ({}); only regular files are read as assets",
            path.display(),
            kind(&meta.file_type())
        )));
    }
    let total = meta.len();
    if part.len() > total {
        part.reset().await.map_err(AttemptError::Local)?;
    }
    file.seek(SeekFrom::Start(part.len()))
        .await
        .map_err(permanent)?;
    let origin = Origin {
        url: url.to_owned(),
        total: Some(total),
        ..Origin::default()
    };
    part.set_origin(origin).await.map_err(AttemptError::Local)?;
    Ok(Body {
        stream: Stream::File {
            file,
            buffer: vec![0u8; crate::assets::hash::BUFFER],
            left: total - part.len(),
        },
        total: Some(total),
    })
}

fn kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::super::Claim;
    use super::*;

    async fn claim(dir: &Path) -> Claim {
        Part::claim(dir.join("x.part"), dir.join("x.part.json"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_file_source_is_read_no_further_than_its_size_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("asset");
        std::fs::write(&source, vec![7u8; 1000]).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("claimed");
        };
        let mut body = open(&source, "file:///asset", &mut part).await.unwrap();
        // The file grows after it was opened: the growth is not read.
        let mut append = std::fs::OpenOptions::new()
            .append(true)
            .open(&source)
            .unwrap();
        std::io::Write::write_all(&mut append, &[9u8; 5000]).unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = body.next().await {
            read.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(read, vec![7u8; 1000]);
        assert_eq!(body.total, Some(1000));
    }

    #[tokio::test]
    async fn a_device_or_a_fifo_is_refused_as_a_file_source() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let Claim::Part(mut part) = claim(dir.path()).await else {
            panic!("claimed");
        };
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            match open(path, "file://x", &mut part).await {
                Err(AttemptError::Permanent(why)) => {
                    assert!(
                        why.contains("is not a regular file") && why.contains(kind),
                        "{why}"
                    )
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{} was opened", path.display()),
            }
        }
    }
}
