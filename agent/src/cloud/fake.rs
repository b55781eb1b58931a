//! In-memory EC2 and Route53, the second implementations of [`Ec2`] and [`Route53`],
//! so that the decisions built on them are tested without AWS. They behave as the real
//! services do where the control plane depends on it (which the AWS emulator does not):
//! AttachVolume of a volume in use is `VolumeInUse`, an attachment goes through
//! `attaching` before `attached`, a detach through `detaching`, a zone mismatch or an
//! unknown volume is refused with EC2's code, and filters are applied as EC2 applies
//! them (tags, tag keys, zone, ids, attachments).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::CloudError;
use super::ec2::{Attachment, Ec2, Filters, Instance, Volume};
use super::route53::{Action, Change, RecordSet, Route53, normalize_name};

#[derive(Default)]
pub struct FakeEc2 {
    world: Mutex<World>,
}

#[derive(Default)]
struct World {
    volumes: BTreeMap<String, Volume>,
    instances: BTreeMap<String, Instance>,
    /// DescribeVolumes calls an attachment stays `attaching` (per volume).
    attaching_for: BTreeMap<String, u32>,
    /// Volumes whose attachment never completes.
    stuck: Vec<String>,
    /// Other instances, each of which attaches the volume of the next AttachVolume
    /// just before it (nodes that were quicker).
    quicker: Vec<String>,
    calls: Vec<String>,
}

impl FakeEc2 {
    pub fn new() -> Self {
        Self::default()
    }

    /// An instance in `zone`, in `state` (`running`, `stopped`…).
    pub fn instance(&self, id: &str, zone: &str, state: &str) {
        self.lock().instances.insert(
            id.to_owned(),
            Instance {
                id: id.to_owned(),
                state: state.to_owned(),
                private_ip: Some(Ipv4Addr::new(10, 0, 1, 10)),
                availability_zone: zone.to_owned(),
                tags: BTreeMap::new(),
                device_names: vec!["/dev/xvda".to_owned()],
            },
        );
    }

    /// An instance gone for good: EC2 no longer lists it.
    pub fn forget_instance(&self, id: &str) {
        self.lock().instances.remove(id);
    }

    pub fn set_instance_state(&self, id: &str, state: &str) {
        if let Some(instance) = self.lock().instances.get_mut(id) {
            instance.state = state.to_owned();
        }
    }

    /// A volume with these tags, free, in `zone`.
    pub fn volume(&self, id: &str, zone: &str, tags: &[(&str, &str)]) {
        self.lock().volumes.insert(
            id.to_owned(),
            Volume {
                id: id.to_owned(),
                availability_zone: zone.to_owned(),
                size_gib: 20,
                state: "available".to_owned(),
                tags: tags
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                attachments: Vec::new(),
            },
        );
    }

    /// Attaches `volume` to `instance` at once, as an earlier boot left it.
    pub fn attached(&self, volume: &str, instance: &str) {
        let mut world = self.lock();
        if let Some(v) = world.volumes.get_mut(volume) {
            v.state = "in-use".to_owned();
            v.attachments = vec![Attachment {
                instance_id: instance.to_owned(),
                device: "/dev/xvdu".to_owned(),
                state: "attached".to_owned(),
            }];
        }
    }

    /// The next AttachVolume, of whichever volume, finds it taken by `instance`
    /// (called again, the one after that too).
    pub fn race_next(&self, instance: &str) {
        self.lock().quicker.push(instance.to_owned());
    }

    /// Attachments of `volume` stay `attaching`.
    pub fn stick(&self, volume: &str) {
        self.lock().stuck.push(volume.to_owned());
    }

    /// `AttachVolume vol-1 i-1`, `DetachVolume vol-1 i-2 force`… in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter(|c| !c.starts_with("Describe"))
            .cloned()
            .collect()
    }

    pub fn volume_state(&self, id: &str) -> Option<Volume> {
        self.lock().volumes.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl World {
    /// Time passes between two calls: attachments and detachments move on.
    fn tick(&mut self) {
        for volume in self.volumes.values_mut() {
            let stuck = self.stuck.contains(&volume.id);
            let left = self.attaching_for.entry(volume.id.clone()).or_insert(0);
            for attachment in &mut volume.attachments {
                if attachment.state == "attaching" && !stuck {
                    if *left == 0 {
                        attachment.state = "attached".to_owned();
                    } else {
                        *left -= 1;
                    }
                }
            }
            if volume.attachments.iter().any(|a| a.state == "detaching") {
                volume.attachments.retain(|a| a.state != "detaching");
                if volume.attachments.is_empty() {
                    volume.state = "available".to_owned();
                }
            }
        }
    }
}

fn service(operation: &'static str, code: &str, message: String) -> CloudError {
    CloudError::Service {
        operation,
        code: code.to_owned(),
        message,
        status: Some(400),
    }
}

/// Whether `volume` passes every filter, as DescribeVolumes applies them.
fn volume_matches(volume: &Volume, filters: &Filters) -> bool {
    filters.iter().all(|(name, values)| {
        let any = |value: &str| values.iter().any(|v| v == value);
        match name.as_str() {
            "volume-id" => any(&volume.id),
            "availability-zone" => any(&volume.availability_zone),
            "tag-key" => volume.tags.keys().any(|k| any(k)),
            "attachment.instance-id" => volume.attachments.iter().any(|a| any(&a.instance_id)),
            tag => match tag.strip_prefix("tag:") {
                Some(key) => volume.tags.get(key).is_some_and(|v| any(v)),
                None => false,
            },
        }
    })
}

impl Ec2 for FakeEc2 {
    async fn describe_volumes(&self, filters: &Filters) -> Result<Vec<Volume>, CloudError> {
        let mut world = self.lock();
        world.calls.push("DescribeVolumes".to_owned());
        world.tick();
        Ok(world
            .volumes
            .values()
            .filter(|v| volume_matches(v, filters))
            .cloned()
            .collect())
    }

    async fn describe_instances(&self, filters: &Filters) -> Result<Vec<Instance>, CloudError> {
        let mut world = self.lock();
        world.calls.push("DescribeInstances".to_owned());
        Ok(world
            .instances
            .values()
            .filter(|i| {
                filters.iter().all(|(name, values)| match name.as_str() {
                    "instance-id" => values.contains(&i.id),
                    _ => false,
                })
            })
            .cloned()
            .collect())
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<(), CloudError> {
        const OP: &str = "AttachVolume";
        let mut world = self.lock();
        world.calls.push(format!("{OP} {volume_id} {instance_id}"));
        if !world.quicker.is_empty() {
            let quicker = world.quicker.remove(0);
            drop(world);
            self.attached(volume_id, &quicker);
            world = self.lock();
        }
        let zone = world
            .instances
            .get(instance_id)
            .map(|i| i.availability_zone.clone())
            .ok_or_else(|| {
                service(
                    OP,
                    "InvalidInstanceID.NotFound",
                    format!("The instance ID '{instance_id}' does not exist"),
                )
            })?;
        let Some(volume) = world.volumes.get_mut(volume_id) else {
            return Err(service(
                OP,
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            ));
        };
        if volume.availability_zone != zone {
            return Err(service(
                OP,
                "InvalidVolume.ZoneMismatch",
                format!(
                    "The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'"
                ),
            ));
        }
        if let Some(holder) = volume.attachments.first() {
            return Err(service(
                OP,
                "VolumeInUse",
                format!(
                    "{volume_id} is already attached to an instance ({})",
                    holder.instance_id
                ),
            ));
        }
        volume.state = "in-use".to_owned();
        volume.attachments.push(Attachment {
            instance_id: instance_id.to_owned(),
            device: device.to_owned(),
            state: "attaching".to_owned(),
        });
        world.attaching_for.insert(volume_id.to_owned(), 1);
        Ok(())
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> Result<(), CloudError> {
        const OP: &str = "DetachVolume";
        let mut world = self.lock();
        world.calls.push(format!(
            "{OP} {volume_id} {instance_id}{}",
            if force { " force" } else { "" }
        ));
        let attachment = world.volumes.get_mut(volume_id).and_then(|v| {
            v.attachments
                .iter_mut()
                .find(|a| a.instance_id == instance_id)
        });
        match attachment {
            Some(a) => {
                a.state = "detaching".to_owned();
                Ok(())
            }
            None => Err(service(
                OP,
                "IncorrectState",
                format!("Volume '{volume_id}' is in the 'available' state."),
            )),
        }
    }
}

/// Route53 with one batch at a time, all or nothing, as the real one: a DELETE must
/// match the record exactly.
#[derive(Default)]
pub struct FakeRoute53 {
    zones: Mutex<BTreeMap<String, Vec<RecordSet>>>,
    batches: Mutex<Vec<Vec<Change>>>,
}

impl FakeRoute53 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn records(&self, zone: &str) -> Vec<RecordSet> {
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(zone)
            .cloned()
            .unwrap_or_default()
    }

    pub fn put(&self, zone: &str, record: RecordSet) {
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(zone.to_owned())
            .or_default()
            .push(record);
    }

    /// Every batch applied, in order.
    pub fn batches(&self) -> Vec<Vec<Change>> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Route53 for FakeRoute53 {
    async fn records_named(&self, zone: &str, name: &str) -> Result<Vec<RecordSet>, CloudError> {
        let wanted = normalize_name(name);
        Ok(self
            .records(zone)
            .into_iter()
            .filter(|r| r.name == wanted)
            .collect())
    }

    async fn change(&self, zone: &str, changes: &[Change]) -> Result<(), CloudError> {
        let mut zones = self.zones.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = zones.get(zone).cloned().unwrap_or_default();
        let key = |r: &RecordSet| (r.name.clone(), r.kind.clone(), r.set_identifier.clone());
        for change in changes {
            let at = records.iter().position(|r| key(r) == key(&change.record));
            match (change.action, at) {
                (Action::Delete, Some(i)) if records[i] == change.record => {
                    records.remove(i);
                }
                (Action::Delete, _) => {
                    return Err(service(
                        "ChangeResourceRecordSets",
                        "InvalidChangeBatch",
                        format!(
                            "Tried to delete resource record set {} but it was not found",
                            change.record.name
                        ),
                    ));
                }
                (Action::Upsert, Some(i)) => records[i] = change.record.clone(),
                (Action::Upsert, None) => records.push(change.record.clone()),
            }
        }
        zones.insert(zone.to_owned(), records);
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(changes.to_vec());
        Ok(())
    }
}
