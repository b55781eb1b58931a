//! The fidelity layer: EC2 and Route53 behaviour that moto lacks, added through the
//! front's hooks and rewrites, with a little state of its own.
//!
//! EC2 (volumes):
//! - AttachVolume of a volume that is attached anywhere fails with `VolumeInUse`
//!   (moto moves the attachment). Attach requests are decided one at a time under the
//!   front's lock, so of two racing nodes exactly one wins, as with EC2.
//! - An attachment stays `attaching` for a while (moto: `attached` at once); listeners
//!   hear [`Event::Attached`] when it becomes `attached` (the harness then makes the
//!   device and its by-id link appear in the node's root, as udev would).
//! - DetachVolume, and TerminateInstances for every volume of the instance, make the
//!   device disappear ([`Event::Detached`]).
//! - DescribeVolumes honours MaxResults/NextToken when a page size is set (moto
//!   returns everything at once); EC2 may return fewer items than asked for.
//!
//! Route53 (ChangeResourceRecordSets), checked against a model of the zone:
//! - CREATE of an existing record fails (moto duplicates it);
//! - DELETE must name an existing record exactly, values and TTL included (moto deletes
//!   every record of the name);
//! - a name cannot hold a plain record and per-instance records at once.
//!   Each refused batch answers `InvalidChangeBatch`, as Route53 does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::front::{AwsFront, Canned, Seen};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Attached { instance: String, volume: String },
    Detached { instance: String, volume: String },
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Debug, Clone)]
struct Attachment {
    instance: String,
    ready_at: Instant,
}

/// (zone, name, type, set identifier)
type RecordKey = (String, String, String, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordValue {
    ttl: Option<String>,
    values: Vec<String>,
}

struct State {
    attached: BTreeMap<String, Attachment>,
    attach_delay: (Duration, Duration),
    page_size: Option<usize>,
    paged_calls: u32,
    refused_attaches: u32,
    refused_batches: u32,
    listeners: Vec<Listener>,
    records: BTreeMap<RecordKey, RecordValue>,
}

#[derive(Clone)]
pub struct Fidelity {
    state: Arc<Mutex<State>>,
}

impl Fidelity {
    /// Adds the fidelity layer to `front`.
    pub fn install(front: &AwsFront) -> Self {
        let fidelity = Self {
            state: Arc::new(Mutex::new(State {
                attached: BTreeMap::new(),
                attach_delay: (Duration::from_millis(300), Duration::from_millis(900)),
                page_size: None,
                paged_calls: 0,
                refused_attaches: 0,
                refused_batches: 0,
                listeners: Vec::new(),
                records: BTreeMap::new(),
            })),
        };
        let hook = fidelity.clone();
        front.hook(move |seen| hook.on_request(seen));
        let rewrite = fidelity.clone();
        front.rewrite(move |seen, status, body| rewrite.on_response(seen, status, body));
        fidelity
    }

    /// How long an attachment stays `attaching` (a random time in the range).
    pub fn set_attach_delay(&self, min: Duration, max: Duration) {
        self.lock().attach_delay = (min, max.max(min));
    }

    /// DescribeVolumes pages hold at most this many volumes.
    pub fn set_page_size(&self, size: usize) {
        self.lock().page_size = Some(size.max(1));
    }

    /// How many DescribeVolumes answers were cut into pages.
    pub fn paged_calls(&self) -> u32 {
        self.lock().paged_calls
    }

    /// How many AttachVolume calls were refused with VolumeInUse.
    pub fn refused_attaches(&self) -> u32 {
        self.lock().refused_attaches
    }

    /// How many Route53 batches were refused.
    pub fn refused_batches(&self) -> u32 {
        self.lock().refused_batches
    }

    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.lock().listeners.push(Arc::new(listener));
    }

    /// Which instance a volume is attached to, as far as the layer knows.
    pub fn attached_to(&self, volume: &str) -> Option<String> {
        self.lock().attached.get(volume).map(|a| a.instance.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fidelity lock")
    }

    fn emit(&self, event: Event, after: Duration) {
        let listeners = self.lock().listeners.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            for listener in listeners {
                listener(&event);
            }
        });
    }

    fn on_request(&self, seen: &Seen) -> Option<Canned> {
        if is_route53_change(seen) {
            return self.route53_change(seen);
        }
        match seen.action().as_deref() {
            Some("AttachVolume") => self.attach(seen),
            Some("DetachVolume") => {
                let volume = seen.param("VolumeId")?;
                let removed = self.lock().attached.remove(&volume);
                if let Some(a) = removed {
                    self.emit(
                        Event::Detached {
                            instance: a.instance,
                            volume,
                        },
                        Duration::ZERO,
                    );
                }
                None
            }
            Some("TerminateInstances") => {
                let instances: Vec<String> = (1..100)
                    .map_while(|i| seen.param(&format!("InstanceId.{i}")))
                    .collect();
                let detached: Vec<(String, String)> = {
                    let mut state = self.lock();
                    let volumes: Vec<String> = state
                        .attached
                        .iter()
                        .filter(|(_, a)| instances.contains(&a.instance))
                        .map(|(v, _)| v.clone())
                        .collect();
                    volumes
                        .into_iter()
                        .filter_map(|v| state.attached.remove(&v).map(|a| (a.instance, v)))
                        .collect()
                };
                for (instance, volume) in detached {
                    self.emit(Event::Detached { instance, volume }, Duration::ZERO);
                }
                None
            }
            _ => None,
        }
    }

    fn attach(&self, seen: &Seen) -> Option<Canned> {
        let volume = seen.param("VolumeId")?;
        let instance = seen.param("InstanceId")?;
        let delay = {
            let mut state = self.lock();
            if let Some(holder) = state.attached.get(&volume).map(|a| a.instance.clone()) {
                state.refused_attaches += 1;
                let message = format!("{volume} is already attached to an instance ({holder})");
                return Some(Canned::ec2_error(400, "VolumeInUse", &message));
            }
            let (min, max) = state.attach_delay;
            let spread = (max - min).as_millis() as u64;
            let delay = min + Duration::from_millis(fastrand::u64(0..=spread));
            state.attached.insert(
                volume.clone(),
                Attachment {
                    instance: instance.clone(),
                    ready_at: Instant::now() + delay,
                },
            );
            delay
        };
        self.emit(Event::Attached { instance, volume }, delay);
        None
    }

    fn on_response(&self, seen: &Seen, status: u16, body: &str) -> Option<String> {
        if status != 200 || seen.action().as_deref() != Some("DescribeVolumes") {
            return None;
        }
        let doc = roxmltree::Document::parse(body).ok()?;
        let set = doc.descendants().find(|n| n.has_tag_name("volumeSet"))?;
        let items: Vec<roxmltree::Node> =
            set.children().filter(|n| n.has_tag_name("item")).collect();
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        let now = Instant::now();
        {
            let mut state = self.lock();
            for item in &items {
                let Some(volume) = child_text(*item, "volumeId") else {
                    continue;
                };
                let attachments = item
                    .children()
                    .find(|n| n.has_tag_name("attachmentSet"))
                    .into_iter()
                    .flat_map(|set| set.children().filter(|n| n.has_tag_name("item")));
                for attachment in attachments {
                    let instance = child_text(attachment, "instanceId").unwrap_or_default();
                    let Some(status_node) =
                        attachment.children().find(|n| n.has_tag_name("status"))
                    else {
                        continue;
                    };
                    let known = state.attached.get(&volume).cloned();
                    match known {
                        // Attached before the layer saw it (root volumes, test set-up).
                        None => {
                            state.attached.insert(
                                volume.clone(),
                                Attachment {
                                    instance: instance.clone(),
                                    ready_at: now,
                                },
                            );
                        }
                        Some(a) if a.instance == instance && a.ready_at > now => {
                            if let Some(text) = status_node.first_child() {
                                edits.push((text.range(), "attaching".to_owned()));
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        let page_size = self.lock().page_size;
        if let (Some(page), Some(_)) = (page_size, seen.param("MaxResults")) {
            let asked: usize = seen
                .param("MaxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(page);
            let size = page.min(asked).max(1);
            let offset: usize = seen
                .param("NextToken")
                .and_then(|t| t.strip_prefix("harness-page-").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            for (i, item) in items.iter().enumerate() {
                if i < offset || i >= offset + size {
                    edits.retain(|(r, _)| {
                        !(r.start >= item.range().start && r.end <= item.range().end)
                    });
                    edits.push((item.range(), String::new()));
                }
            }
            if offset + size < items.len() {
                let end = set.range().end;
                edits.push((
                    end..end,
                    format!("<nextToken>harness-page-{}</nextToken>", offset + size),
                ));
            }
            self.lock().paged_calls += 1;
        }
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        let mut out = body.to_owned();
        for (range, replacement) in edits {
            out.replace_range(range, &replacement);
        }
        Some(out)
    }

    fn route53_change(&self, seen: &Seen) -> Option<Canned> {
        let zone = seen
            .path
            .split('/')
            .skip_while(|p| *p != "hostedzone")
            .nth(1)?
            .to_owned();
        let text = String::from_utf8_lossy(&seen.body).into_owned();
        let doc = roxmltree::Document::parse(&text).ok()?;
        let mut state = self.lock();
        let mut records = state.records.clone();
        for change in doc.descendants().filter(|n| n.has_tag_name("Change")) {
            let action = child_text(change, "Action").unwrap_or_default();
            let Some(set) = change
                .children()
                .find(|n| n.has_tag_name("ResourceRecordSet"))
            else {
                continue;
            };
            let name = child_text(set, "Name")
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let kind = child_text(set, "Type").unwrap_or_default();
            let id = child_text(set, "SetIdentifier");
            let value = RecordValue {
                ttl: child_text(set, "TTL"),
                values: set
                    .descendants()
                    .filter(|n| n.has_tag_name("Value"))
                    .filter_map(|n| n.text().map(str::to_owned))
                    .collect(),
            };
            let key = (zone.clone(), name.clone(), kind.clone(), id.clone());
            let describe = format!(
                "[name='{name}.', type='{kind}'{}]",
                id.as_ref()
                    .map(|i| format!(", set-identifier='{i}'"))
                    .unwrap_or_default()
            );
            let refuse = |state: &mut State, message: String| {
                state.refused_batches += 1;
                Some(Canned::route53_error(400, "InvalidChangeBatch", &message))
            };
            match action.as_str() {
                "CREATE" if records.contains_key(&key) => {
                    return refuse(
                        &mut state,
                        format!(
                            "Tried to create resource record set {describe} but it already exists"
                        ),
                    );
                }
                "DELETE" => match records.get(&key) {
                    None => {
                        return refuse(
                            &mut state,
                            format!(
                                "Tried to delete resource record set {describe} but it was not found"
                            ),
                        );
                    }
                    Some(existing) if *existing != value => {
                        return refuse(
                            &mut state,
                            format!(
                                "Tried to delete resource record set {describe} but the values provided do not match the current values"
                            ),
                        );
                    }
                    Some(_) => {
                        records.remove(&key);
                    }
                },
                "CREATE" | "UPSERT" => {
                    records.insert(key, value);
                }
                _ => {}
            }
        }
        // A name holds either one plain record set or routing-policy ones, never both.
        let mut kinds: BTreeMap<(String, String, String), (bool, bool)> = BTreeMap::new();
        for (zone, name, kind, id) in records.keys() {
            let entry = kinds
                .entry((zone.clone(), name.clone(), kind.clone()))
                .or_default();
            if id.is_some() {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
        if let Some(((_, name, kind), _)) =
            kinds.iter().find(|(_, (plain, multi))| *plain && *multi)
        {
            state.refused_batches += 1;
            return Some(Canned::route53_error(
                400,
                "InvalidChangeBatch",
                &format!(
                    "RRSet with DNS name {name}. and type {kind} cannot be created: plain and multivalue records cannot share a name and type"
                ),
            ));
        }
        state.records = records;
        None
    }
}

fn is_route53_change(seen: &Seen) -> bool {
    seen.method == axum::http::Method::POST
        && seen.path.contains("/hostedzone/")
        && seen.path.trim_end_matches('/').ends_with("/rrset")
}

fn child_text(node: roxmltree::Node, name: &str) -> Option<String> {
    node.children()
        .find(|n| n.has_tag_name(name))
        .and_then(|n| n.text())
        .map(str::to_owned)
}
