//! The AWS emulator: `moto_server` on a free loopback port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

use crate::runtime::block_on;
use crate::tools;

pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    /// Starts a fresh emulator and waits until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("moto-{port}.log"));
        let mut command = Command::new(tools::venv_bin("moto_server"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        crate::tools::die_with_parent(&mut command);
        let child = command
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("moto_server starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = crate::runtime::control_client();
        loop {
            if block_on(async { client.get(format!("{url}/moto-api/")).send().await }).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start (see {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Clears all emulated state.
    pub fn reset(&self) {
        let client = crate::runtime::control_client();
        block_on(async {
            client
                .post(format!("{}/moto-api/reset", self.url))
                .send()
                .await
        })
        .expect("moto resets");
    }

    /// SDK configuration for the test's own calls (not the agent's).
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.url)
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.sdk_config())
    }

    /// Creates a bucket (if needed) and puts an object in it.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        put_object(&self.s3(), bucket, key, body);
    }
}

/// Creates a bucket (if needed) and puts an object in it, with `s3`.
pub fn put_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    block_on(async {
        let _ = s3.create_bucket().bucket(bucket).send().await;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("putting s3://{bucket}/{key}: {e:?}"));
    });
}

impl Drop for Moto {
    fn drop(&mut self) {
        crate::tools::kill_group(&mut self.child);
    }
}

pub fn sdk_config_for(url: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "AKIAHARNESS",
                "harness-secret",
                None,
                None,
                "harness",
            )),
        )
        .build()
}

pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// `n` distinct free ports: every listener is held until all are picked, so the kernel
/// cannot hand one port out twice (a cluster whose client and peer ports collided
/// answered etcd's client API from a peer listener: 404).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
