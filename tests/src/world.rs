//! A ready-made world for one node: the emulator behind the fault-injecting front, a
//! fake IMDS serving the node's user data, the node spec published in emulated S3, and
//! an agent with an empty root.

use crate::agent::Agent;
use crate::front::AwsFront;
use crate::imds::{FakeImds, Instance};
use crate::moto::Moto;
use crate::pki::{Publish, TestPki};

pub struct World {
    pub moto: Moto,
    pub front: AwsFront,
    pub imds: FakeImds,
    pub agent: Agent,
    /// The PKI published where a control-plane spec's `controlPlane.pki.store` says.
    pub pki: Option<TestPki>,
}

impl World {
    /// A worker booting from `examples/worker`.
    pub fn example_worker() -> Self {
        Self::from_example("worker")
    }

    /// A node booting from `examples/<name>`'s boot config and node spec.
    pub fn from_example(name: &str) -> Self {
        let boot = crate::example(&format!("{name}/bootconfig.yaml"));
        let spec = crate::example(&format!("{name}/nodespec.yaml"));
        Self::new(&boot, &spec)
    }

    /// Publishes `spec` where the boot config says and serves `user_data` from IMDS.
    pub fn new(user_data: &[u8], spec: &[u8]) -> Self {
        let moto = Moto::start();
        let front = AwsFront::start(moto.url());
        let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), user_data);
        let agent = Agent::new(&imds.url(), &front.url());
        let mut world = Self {
            moto,
            front,
            imds,
            agent,
            pki: None,
        };
        if let Some((bucket, key)) = spec_location(user_data) {
            world.moto.put_object(&bucket, &key, spec);
        }
        if let Some(store) = crate::pki::store_of(spec) {
            let pki = crate::pki::generate();
            pki.publish(&store, Some(&world.moto));
            world.pki = Some(pki);
        }
        world
    }
}

/// The `s3://bucket/key` a boot config names, if it parses.
pub fn spec_location(user_data: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(user_data);
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("url: s3://"))?
        .trim()
        .to_owned();
    let (bucket, key) = url.split_once('/')?;
    Some((bucket.to_owned(), key.to_owned()))
}
