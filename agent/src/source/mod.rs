//! Where the agent's inputs come from: EC2 user data, the state store, controller-shim.

pub mod pki;
pub mod shim;
pub mod store;
pub mod userdata;

pub use store::{StoreError, error_chain, fetch};
pub use userdata::{BOOT_CONFIG_CONTENT_TYPE, UserDataError, boot_config_text};
