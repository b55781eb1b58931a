//! Tests of `kops::translate::kubelet`, kept beside it so the module itself stays short.

use super::fields::is_zero;

#[test]
fn zero_durations() {
    assert!(is_zero("0s"));
    assert!(is_zero("0"));
    assert!(is_zero("0m0s"));
    assert!(!is_zero("15m0s"));
    assert!(!is_zero("10s"));
}
