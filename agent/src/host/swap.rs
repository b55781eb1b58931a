//! Swap on the running system.

use std::path::Path;

use super::tool::{self, ToolError};

/// The active swap areas, from `/proc/swaps` under the root.
pub fn active(root: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join("proc/swaps"))?;
    Ok(parse_proc_swaps(&text))
}

/// The first column of every line after the header.
pub fn parse_proc_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Turns every active swap area off.
pub async fn off() -> Result<(), ToolError> {
    tool::run("swapoff", &["-a"]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_swaps() {
        assert!(parse_proc_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n").is_empty());
        assert_eq!(
            parse_proc_swaps(
                "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n/dev/zram0 partition 4194300 0 100\n"
            ),
            ["/swapfile", "/dev/zram0"]
        );
    }
}
