//! Where a document lives: `s3://bucket/key` or `file:///path`.

use std::fmt;

use super::types::InvalidValue;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecLocation {
    S3 { bucket: String, key: String },
    File { path: String },
}

impl SpecLocation {
    pub fn parse(url: &str) -> Result<Self, InvalidValue> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').ok_or_else(|| {
                InvalidValue(format!("{url:?} has no object key after the bucket"))
            })?;
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !bucket_ok {
                return Err(InvalidValue(format!(
                    "{url:?}: {bucket:?} is not a valid S3 bucket name"
                )));
            }
            if key.is_empty() {
                return Err(InvalidValue(format!("{url:?} has an empty object key")));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(InvalidValue(format!(
                    "{url:?} must name an absolute path (file:///path/to/spec.yaml)"
                )));
            }
            return Ok(Self::File {
                path: path.to_owned(),
            });
        }
        Err(InvalidValue(format!(
            "{url:?} is not a supported location (use s3://bucket/key or file:///path)"
        )))
    }
}

impl fmt::Display for SpecLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::File { path } => write!(f, "file://{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            SpecLocation::parse("s3://my-state/prod/spec.yaml").unwrap(),
            SpecLocation::S3 {
                bucket: "my-state".into(),
                key: "prod/spec.yaml".into()
            }
        );
        assert_eq!(
            SpecLocation::parse("file:///etc/nodewright/spec.yaml").unwrap(),
            SpecLocation::File {
                path: "/etc/nodewright/spec.yaml".into()
            }
        );
        for bad in [
            "s3://bucket",
            "s3://B/k",
            "s3://bucket/",
            "file://rel/x",
            "http://x/y",
            "",
        ] {
            assert!(SpecLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
